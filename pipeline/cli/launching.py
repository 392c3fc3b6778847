"""``submit`` (a grid as job arrays, or on this machine) and ``smoke`` (the cluster-smoke grid and its
verdict): plan, check, record and launch, under the folder's submission guard."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from pipeline.cli.common import check_workers, curve_lines, follow, grid_of, refuse_unknown, requested_sinks
from pipeline.experiments import Trial
from pipeline.folder import ResultsFolder
from pipeline.launch import checks
from pipeline.launch.backends import backend_of
from pipeline.launch.grid import Grid, load_grid
from pipeline.launch.layout import Plan
from pipeline.launch.profiles import Profile, load_profile
from pipeline.launch.stop_signals import raising_stop_signals
from pipeline.launch.submission import (
    LaunchOptions,
    describe_plan,
    manifest_restored_on_failure,
    plan_submission,
    submit,
)
from pipeline.leases.ownership import guard_folder
from pipeline.settings import ConfigError, parse_assignments, quoted
from pipeline.trialfile.manifest import merge, read_manifest, trials_of_manifest, write_manifest


def launch(out: Path, indices: list[int], args: argparse.Namespace, profile: Profile,
           options: LaunchOptions) -> tuple[bool, str]:
    """Plan, check and submit ``indices`` with ``options`` (``LaunchOptions``; the caller holds the folder
    guard); returns whether to wait, and the launch's lines. The caller prints them, with what it has to
    say, once the launch is recorded and the folder's guard released: a reader that goes away (``| head``)
    then stops nothing half-way. The checks before the queue (``pipeline.launch.checks``: storage, hours on
    this machine) refuse it in one line before anything is launched."""
    plan = plan_submission(out, indices, profile, options.trials_per_task, options.workers, options.pack_seeds)
    trials = trials_of_manifest(read_manifest(out))
    hours = checks.check_local_hours(plan, getattr(args, "allow_long_local", False))
    said = ([hours] if hours else []) + [checks.storage_check(out, [trials[i] for i in indices])]
    for warning in plan.warnings:
        print(warning, file=sys.stderr)
    submit(out, plan, log=said.append, options=options)
    said += curve_lines(out, options.sinks)
    return (args.wait if args.wait is not None else backend_of(profile).waits), "\n".join(said)


def _task_shape(args: argparse.Namespace, launch_hints: dict) -> tuple[int | None, bool]:
    """Trials per task (None: by cost) and seed packing, from the command line, else the grid's [launch]."""
    per_task = args.trials_per_task or launch_hints.get("trials_per_task")
    pack_seeds = args.pack_seeds if args.pack_seeds is not None else bool(launch_hints.get("pack_seeds", False))
    return (int(per_task) if per_task is not None else None), pack_seeds


def _submit_options(args: argparse.Namespace, grid: Grid) -> LaunchOptions:
    per_task, pack_seeds = _task_shape(args, grid.launch)
    return LaunchOptions(requested_sinks(args), per_task, pack_seeds, args.workers,
                         tuple(sorted(grid.overrides.items())))


def submit_command(args: argparse.Namespace) -> int:
    from pipeline.launch.monitor import gather  # deferred: h5py (status reads the trial files)

    check_workers(args)
    grid = load_grid(args.exp, parse_assignments(args.set))
    profile = load_profile(args.cluster)
    options = _submit_options(args, grid)
    checks.check_devices(grid.trials(), profile)  # before anything is written: a refusal leaves the folder as it was
    if args.dry_run:
        return _dry_run(args, grid, profile, options)
    out = args.out
    created = not Path(out).exists()
    with raising_stop_signals():  # a polite kill ends the command with the guard released, as Ctrl-C does
        lease = guard_folder(out)
        try:
            with manifest_restored_on_failure(out):
                trials = write_manifest(out, grid, grid.trials())
                mine = {t.index for t in trials}
                states = gather(out)
                refuse_unknown([s for s in states if s.index in mine], args.force)
                todo = [s.index for s in states
                        if s.index in mine and s.state not in ("complete", "running", "queued")]
                said = []
                if len(todo) < len(mine):
                    said.append(f"{len(mine) - len(todo)} trials already complete, running or queued are not "
                                "submitted again")
                if not todo:
                    print("\n".join(said + ["nothing to submit"]))
                    return 0
                wait, launched = launch(out, todo, args, profile, options)
        finally:
            lease.release()
            if created:  # a refused first submission leaves no empty folder behind
                with contextlib.suppress(OSError):
                    Path(out).rmdir()
    print("\n".join(said + [launched]), flush=True)
    return follow(out, wait)


def checks_rehearsed(out: Path, trials: list[Trial], plan: Plan, allow_long_local: bool) -> list[str]:
    """What the checks before the queue (``pipeline.launch.checks``) say in a dry run: their lines, or that
    the submission would be refused and why."""
    lines = []
    for check in (lambda: checks.check_local_hours(plan, allow_long_local), lambda: checks.storage_check(out, trials)):
        try:
            line = check()
        except ConfigError as refused:
            line = f"a submission would be refused: {refused}"
        if line:
            lines.append(line)
    return lines


def _dry_run(args: argparse.Namespace, grid: Grid, profile: Profile, options: LaunchOptions) -> int:
    trials = grid.trials()
    growing = ""
    if ResultsFolder(args.out).manifest.exists():
        manifest = read_manifest(args.out)
        trials, added = merge(trials_of_manifest(manifest), trials)
        if added:
            growing = f"adds {len(added)} trial(s) to {grid_of(manifest)} in {quoted(args.out)}"
    plan = plan_submission(args.out, [t.index for t in trials], profile, options.trials_per_task, options.workers,
                           options.pack_seeds, trials=trials, name=grid.name)
    lines = describe_plan(args.out, plan, trials).split("\n")
    lines[1:1] = checks_rehearsed(args.out, trials, plan, args.allow_long_local)
    print("\n".join(([growing] if growing else []) + lines))
    return 0


def smoke_command(args: argparse.Namespace) -> int:
    """``make smoke``: the cluster-smoke grid on the profile's nodes, waited for, then its verdict on one screen
    (``pipeline.launch.cluster_check``). A folder whose trials are complete gets the verdict of that run again."""
    from pipeline.launch.cluster_check import GRID, verdict  # deferred: numpy and h5py (it reads the trial files)

    profile = load_profile(args.cluster)
    args.exp, args.wait, args.dry_run = GRID, True, False
    for name in ("workers", "trials_per_task", "pack_seeds"):
        setattr(args, name, None)
    args.tensorboard = args.wandb = args.force = args.allow_long_local = False
    code = submit_command(args)
    found = verdict(args.out, profile)
    print("\n" + "\n".join(found.lines), flush=True)
    return 0 if found.ok and code == 0 else 1
