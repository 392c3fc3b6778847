"""``plan`` (a grid's trials, estimates and job arrays), ``status``, ``logs``, ``cancel`` and ``aggregate``: the
commands that look at a grid, or stop it, rather than launch it."""

from __future__ import annotations

import argparse
import sys

from pipeline.launch.grid import load_grid
from pipeline.launch.plan import describe
from pipeline.launch.profiles import load_profile
from pipeline.settings import ConfigError, parse_assignments


def plan_command(args: argparse.Namespace) -> int:
    grid = load_grid(args.exp, parse_assignments(args.set))
    print(describe(grid, load_profile(args.cluster), list_trials=args.trials))
    return 0


def status_command(args: argparse.Namespace) -> int:
    # deferred: h5py (status reads the trial files), kept out of the command line's start
    from pipeline.launch.monitor import format_status, gather
    from pipeline.launch.watch import watch  # deferred: h5py, as above

    if args.watch is not None:
        if args.watch <= 0:
            raise ConfigError(f"--watch takes a number of seconds > 0, got {args.watch:g}")
        try:
            watch(args.out, args.watch, only_unfinished=args.brief)
        except KeyboardInterrupt:
            print("stopped watching; the grid goes on", file=sys.stderr)
        return 0
    print(format_status(gather(args.out), only_unfinished=args.brief))
    return 0


def logs_command(args: argparse.Namespace) -> int:
    from pipeline.launch.watch import show_log  # deferred: h5py (it reads the trial's file)

    try:
        return show_log(args.out, args.trial_id, follow=args.follow)
    except KeyboardInterrupt:
        return 0


def cancel_command(args: argparse.Namespace) -> int:
    from pipeline.launch.monitor import cancel  # deferred: h5py (it reads the trial files)

    cancel(args.out)
    return 0


def aggregate_command(args: argparse.Namespace) -> int:
    import analysis  # deferred: pandas and matplotlib (the analysis)

    result = analysis.aggregate(args.out)
    print("\n".join(result.verdict_lines))
    print(f"report: {result.report}")
    return 0
