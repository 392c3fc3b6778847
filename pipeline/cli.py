"""Command line: ``python -m pipeline COMMAND ...`` (also installed as ``pipeline``)."""

from __future__ import annotations

import argparse
import sys

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, DataUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
