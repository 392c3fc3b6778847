"""Command line: ``python -m pipeline COMMAND ...`` (also installed as ``pipeline``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, make_trial, parse_assignments
from .data import DataUnavailable


def _train(args) -> int:
    from .runner import ConsoleSink, run_trial

    values = parse_assignments(args.set)
    named = {"group": args.group, "mode": args.mode, "config": args.config, "seed": args.seed,
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
    from .grid import load_grid
    from .trial import execute, select, write_manifest

    grid = load_grid(args.exp, parse_assignments(args.set))
    trials = grid.trials()
    index, trial = select(trials, args.index, args.trial)
    write_manifest(args.out, grid, trials)
    execute(args.out, index, trial, force=args.force, checkpoint_every_s=args.checkpoint_every)
    return 0


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
    train.add_argument("--config", help="cross, skew or nonunitary (cnn)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, DataUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
