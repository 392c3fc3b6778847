"""Command line: ``python -m pipeline COMMAND ...`` (also installed as ``pipeline``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .settings import ConfigError, parse_assignments


def _train(args) -> int:
    from .experiments import make_trial
    from .runner import ConsoleSink, run_trial

    values = parse_assignments(args.set)
    named = {"group": args.group, "mode": args.mode, "variant": args.variant, "seed": args.seed,
             "epochs": args.epochs, "n_samples": args.n_samples, "channels": args.channels, "lr": args.lr,
             "augment": args.augment, "dtype": args.dtype, "device": args.device}
    for key, value in named.items():
        if value is not None:
            values[key] = str(value)
    trial = make_trial(args.experiment, values)
    run_trial(trial, ConsoleSink(log=lambda line: print(line, flush=True)))
    return 0


def _plan(args) -> int:
    from .grid import load_grid
    from .plan import describe

    print(describe(load_grid(args.exp, parse_assignments(args.set))))
    return 0


def _run_trial(args) -> int:
    from .execute import execute
    from .grid import load_grid
    from .manifest import select, write_manifest

    grid = load_grid(args.exp, parse_assignments(args.set))
    trials = grid.trials()
    wanted = select(trials, args.index, args.trial)
    trial = select(write_manifest(args.out, grid, trials), wanted.index)
    execute(args.out, [trial], force=args.force, checkpoint_every_s=args.checkpoint_every)
    return 0


def _submit_and_report(out: Path, indices: list[int], args, trials_per_task: int) -> int:
    from .launch.monitor import format_status, gather, wait_for
    from .launch.profiles import load_profile
    from .launch.submission import submit
    from .manifest import read_manifest

    profile = load_profile(args.cluster)
    pack_seeds = args.pack_seeds if args.pack_seeds is not None else bool(
        read_manifest(out).get("launch", {}).get("pack_seeds", False))
    submit(out, indices, profile, trials_per_task=trials_per_task, workers=args.workers, pack_seeds=pack_seeds)
    wait = args.wait if args.wait is not None else profile.executor == "local"
    if not wait:
        print(f"follow it with: python -m pipeline status --out {out}")
        return 0
    wait_for(out)
    states = gather(out)
    print(format_status(states, only_unfinished=True))
    return 1 if any(s.state != "complete" for s in states) else 0


def _submit(args) -> int:
    from .grid import load_grid
    from .launch.monitor import gather
    from .manifest import write_manifest

    grid = load_grid(args.exp, parse_assignments(args.set))
    write_manifest(args.out, grid, grid.trials())
    states = gather(args.out)
    todo = [s.index for s in states if s.state != "complete" and not s.in_queue]
    if len(todo) < len(states):
        print(f"{len(states) - len(todo)} trials already complete or queued are not submitted again")
    if not todo:
        print("nothing to submit")
        return 0
    per_task = args.trials_per_task or int(grid.launch.get("trials_per_task", 1))
    return _submit_and_report(args.out, todo, args, per_task)


def _status(args) -> int:
    from .launch.monitor import format_status, gather

    print(format_status(gather(args.out), only_unfinished=args.brief))
    return 0


def _resubmit(args) -> int:
    from .launch.monitor import gather, needing_resubmission
    from .manifest import read_manifest

    again = needing_resubmission(gather(args.out))
    if not again:
        print("nothing to resubmit: every trial is complete, running or queued")
        return 0
    for s in again:
        print(f"resubmitting {s.trial_id} ({s.state}: {s.detail})")
    per_task = args.trials_per_task or int(read_manifest(args.out).get("launch", {}).get("trials_per_task", 1))
    return _submit_and_report(args.out, [s.index for s in again], args, per_task)


def _cancel(args) -> int:
    from .launch.monitor import cancel

    cancel(args.out)
    return 0


def _aggregate(args) -> int:
    from analysis import aggregate

    result = aggregate(args.out)
    print("\n".join(result.verdict_lines))
    print(f"report: {result.report}")
    return 0


def _add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    parser.add_argument("--cluster", default="local", help="cluster profile in slurm/profiles or a .toml file")
    parser.add_argument("--workers", type=int, help="local executor: trials at a time (default from the core count)")
    parser.add_argument("--trials-per-task", type=int, help="trials run by one array task (default: the grid's [launch])")
    parser.add_argument("--pack-seeds", action=argparse.BooleanOptionalAction, default=None,
                        help="train a task's CNN seeds together (default: the grid's [launch] pack_seeds)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="block until the grid has finished (default: yes locally, no on SLURM)")


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exp", required=True, metavar="NAME_OR_PATH", help="a grid preset in jobs/ or a .toml file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a grid value (repeatable; lists comma-separated)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one network in this process, one line per epoch")
    train.add_argument("--experiment", default="groups", help="groups or cnn")
    train.add_argument("--group", help="rot, trans, trans1d or rototrans (groups)")
    train.add_argument("--mode", help="equi, aug or nom (groups)")
    train.add_argument("--variant", help="cross, skew or nonunitary (cnn)")
    train.add_argument("--seed", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--n-samples", type=int)
    train.add_argument("--channels", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--augment", help="orbit or sampled:P")
    train.add_argument("--dtype", help="float32 or float64")
    train.add_argument("--device", help="auto, cpu, cuda")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="any trial setting (repeatable)")
    train.set_defaults(handler=_train)

    plan = commands.add_parser("plan", help="trials, ids, weight storage and compute of a grid")
    _add_grid_arguments(plan)
    plan.set_defaults(handler=_plan)

    run = commands.add_parser("run-trial", help="run one trial of a grid (what one array task executes)")
    _add_grid_arguments(run)
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="position in the expanded grid")
    which.add_argument("--trial", metavar="ID", help="trial id, e.g. rot-aug-s007")
    run.add_argument("--out", required=True, type=Path, help="results folder")
    run.add_argument("--force", action="store_true", help="rerun a complete trial")
    run.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                     help="write the resume checkpoint at most this often (0: every epoch)")
    run.set_defaults(handler=_run_trial)

    submit = commands.add_parser("submit", help="submit a grid as a job array (SLURM) or run it locally")
    _add_grid_arguments(submit)
    _add_launch_arguments(submit)
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="state of every trial of a results folder")
    status.add_argument("--out", required=True, type=Path)
    status.add_argument("--brief", action="store_true", help="list only trials that are not complete")
    status.set_defaults(handler=_status)

    resubmit = commands.add_parser("resubmit", help="resubmit missing, failed or stopped trials")
    _add_launch_arguments(resubmit)
    resubmit.set_defaults(handler=_resubmit)

    cancel = commands.add_parser("cancel", help="cancel the grid's queued and running tasks")
    cancel.add_argument("--out", required=True, type=Path)
    cancel.set_defaults(handler=_cancel)

    aggregate = commands.add_parser("aggregate", help="tables, figures and the reproduction report of a results folder")
    aggregate.add_argument("--out", required=True, type=Path)
    aggregate.set_defaults(handler=_aggregate)
    return parser


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, ConfigError):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
