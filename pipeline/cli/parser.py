"""The command line's parser: every command, its options and their help (``python -m pipeline --help``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline import experiments
from pipeline.cli.following import aggregate_command, cancel_command, logs_command, plan_command, status_command
from pipeline.cli.launching import smoke_command, submit_command
from pipeline.cli.resubmitting import RESUBMITTABLE, resubmit_command
from pipeline.cli.training import run_trial_command, train_command, train_flags
from pipeline.launch.checks import LOCAL_HOURS_LIMIT
from pipeline.settings import CHECKPOINT_EVERY_S, DTYPES, MODES, field_types

Handler = Callable[[argparse.Namespace], int]

TENSORBOARD_HELP = ("also write each trial's curves (loss, accuracy, dist_E, distance travelled and step_perp "
                    "per layer) as "
                    "TensorBoard events in OUT/tensorboard/<trial>/: tensorboard --logdir OUT/tensorboard")


# What an interrupted command says (Ctrl-C, or a polite kill where the command turns it into an interrupt).
TRAINING_INTERRUPTED = "interrupted; a trial that was training saved its last epoch and resumes when run again"


LAUNCH_INTERRUPTED = ("interrupted; whatever it launched is recorded in the folder's submissions.jsonl and runs on: "
                      "see `python -m pipeline status --out {out}`")


WANDB_HELP = ("also log each trial's curves (the same as --tensorboard) to Weights & Biases: a run per trial, "
              "grouped by cell, its settings as config, offline in OUT/wandb/ unless WANDB_MODE=online")


DESCRIPTION = """Run the experiments of 'Optimization Dynamics of Equivariant and Augmented Neural Networks'
(TMLR 2025) as grids of trials, on this machine or a SLURM cluster, and aggregate them into tables,
figures and a report. Start with: make demo. Science: docs/science.md."""


def _add_launch_arguments(parser: argparse.ArgumentParser, cluster_default: str | None) -> None:
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    where = ("default: the profile of the grid's last submission" if cluster_default is None
             else f"default: {cluster_default}")
    parser.add_argument("--cluster", default=cluster_default,
                        help=f"cluster profile in slurm/profiles or a .toml file ({where})")
    parser.add_argument("--workers", type=int,
                        help="local executor: trials at a time (default: the core count, at most 8)")
    parser.add_argument("--trials-per-task", type=int,
                        help="trials run one after the other by one array task (default: the grid's [launch], "
                             "else by cost: cheap trials packed into tasks of about the profile's min_task_min)")
    parser.add_argument("--pack-seeds", action=argparse.BooleanOptionalAction, default=None,
                        help="train a task's trials that differ only in their seed together "
                             "(default: the grid's [launch] pack_seeds)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=None,
                        help="block until the grid has finished (default: yes locally, no on SLURM)")
    parser.add_argument("--force", action="store_true",
                        help="submit even if the queue cannot be read (and resubmit diverged trials)")
    parser.add_argument("--allow-long-local", action="store_true",
                        help="run on this machine a grid estimated at more than "
                             f"{LOCAL_HOURS_LIMIT:g} CPU-hours (without it: refused, naming --cluster)")
    if cluster_default is None:  # resubmit: as the trial's submission recorded, unless told
        parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                            help=f"{TENSORBOARD_HELP} (default: as the trial's submission did)")
        parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=None,
                            help=f"{WANDB_HELP} (default: as the trial's submission did)")
    else:
        parser.add_argument("--tensorboard", action="store_true", help=TENSORBOARD_HELP)
        parser.add_argument("--wandb", action="store_true", help=WANDB_HELP)


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exp", required=True, metavar="NAME_OR_PATH",
                        help="a grid preset in jobs/ (e.g. demo, paper-groups) or a .toml file")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="override a grid value; a,b,c makes an axis (repeatable)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends an option's real default to its help: never "(default: None)" for an option whose default
    comes from elsewhere (the help says where), nor for flags and empty lists."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: {default})"


def _setting_help(experiment: str, name: str, words: str, choices: Iterable[object] | None = None) -> str:
    """Help for an option that sets a trial setting: its choices and the settings' own default."""
    settings = experiments.get(experiment).settings_type()
    accepted = f"{', '.join(map(str, choices))}; " if choices else ""
    return f"{words}: {accepted}default {getattr(settings, name)} ({experiment})"


def _choices(experiment: str, setting: str) -> tuple | None:
    """What an option of ``train`` accepts, where the settings name it: the experiment's cells, the modes, the
    floating point types."""
    declared = experiments.get(experiment)
    if setting == declared.cell_key:
        return tuple(declared.cell_names)
    return {declared.mode_key: MODES, "dtype": DTYPES}.get(setting)


def _train_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    train = command("train", "train one network, one line per epoch (a trial file only with --out)", train_command,
                    TRAINING_INTERRUPTED)
    train.add_argument("--experiment", default="groups", help=f"one of {', '.join(experiments.REGISTRY)}")
    # Each experiment's own options (``train_flags``), typed as its settings are.
    for setting, (experiment, words) in train_flags().items():
        kind = field_types(experiments.get(experiment).settings_type)[setting]
        train.add_argument(f"--{setting.replace('_', '-')}", type=kind if kind in (int, float) else str,
                           help=_setting_help(experiment, setting, words, _choices(experiment, setting)))
    train.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="any trial setting (repeatable; see pipeline/experiments/)")
    train.add_argument("--out", type=Path, help="results folder to keep the trial file in (without it nothing is saved)")
    train.add_argument("--force", action="store_true", help="with --out: rerun a trial that is already complete")
    train.add_argument("--grow", action="store_true",
                       help="with --out: add the trial to a folder whose grid does not have it (default: refused)")
    train.add_argument("--tensorboard", action="store_true",
                       help="also write TensorBoard curves: OUT/tensorboard/<trial>/ (without --out: ./tensorboard/)")
    train.add_argument("--wandb", action="store_true",
                       help="also log the curves to a Weights & Biases run, offline unless WANDB_MODE=online: "
                            "OUT/wandb/ (without --out: ./wandb/)")


def _plan_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    plan = command("plan", "a grid's trials by cell: compute, estimated time and GPU-hours on a profile, storage, "
                           "and the job arrays a submission would make", plan_command)
    _add_grid_arguments(plan)
    plan.add_argument("--cluster", default="local",
                      help="cluster profile whose device the estimates are for (slurm/profiles or a .toml file)")
    plan.add_argument("--trials", action="store_true", help="list every trial instead of a summary by cell")


def _run_trial_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    run = command("run-trial", "run one trial of a results folder in this process (what one array task executes)",
                  run_trial_command, TRAINING_INTERRUPTED)
    run.add_argument("--exp", metavar="NAME_OR_PATH",
                     help="the trial's grid (default: the folder's own, from its manifest.json; needed for a new "
                          "folder)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                     help="override a value of --exp's grid (repeatable; default: none)")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="position in the folder's grid (with --exp: in that grid)")
    which.add_argument("--trial", metavar="ID", help="trial id, e.g. rot-aug-s007")
    run.add_argument("--out", required=True, type=Path, help="results folder")
    run.add_argument("--grow", action="store_true",
                     help="let --exp/--set add trials the folder's grid does not have (default: refused)")
    run.add_argument("--dry-run", action="store_true",
                     help="say which trial would run, and what it would add; run nothing")
    run.add_argument("--force", action="store_true", help="rerun a complete trial")
    run.add_argument("--checkpoint-every", type=float, default=CHECKPOINT_EVERY_S, metavar="SECONDS",
                     help="write the resume checkpoint at most this often (0: every epoch)")
    run.add_argument("--tensorboard", action="store_true", help=TENSORBOARD_HELP)
    run.add_argument("--wandb", action="store_true", help=WANDB_HELP)


def _launch_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    submit = command("submit", "submit a grid as a job array (SLURM) or run it on this machine", submit_command,
                     LAUNCH_INTERRUPTED)
    _add_grid_arguments(submit)
    _add_launch_arguments(submit, "local")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the tasks and, for SLURM, the array's sbatch script; submit nothing")

    smoke = command("smoke", "does this cluster run the pipeline? The cluster-smoke grid (every experiment at toy size "
                             "and one epoch at the paper's width) on a profile's nodes, waited for, then a verdict: "
                             "CUDA seen, GPU model, driver, speed against pipeline/launch/throughput.py", smoke_command)
    smoke.add_argument("--cluster", required=True, help="cluster profile in slurm/profiles or a .toml file")
    smoke.add_argument("--out", required=True, type=Path, help="results folder (make smoke: results/smoke-CLUSTER)")
    smoke.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a value of the cluster-smoke grid (repeatable)")


def _resubmit_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    resubmit = command("resubmit", "resubmit the missing, failed, stopped or cancelled trials, each with the options "
                                   "(curve sinks, trials per task, seed packing) of the submission that launched it",
                       resubmit_command, LAUNCH_INTERRUPTED)
    _add_launch_arguments(resubmit, None)
    resubmit.add_argument("--dry-run", action="store_true",
                          help="say which trials would be resubmitted, with which options and tasks; submit nothing")
    resubmit.add_argument("--trials", metavar="ID,...", help="only these trials (default: every one that needs it)")
    resubmit.add_argument("--states", metavar="STATE,...",
                          help=f"only trials in these states, of {', '.join(RESUBMITTABLE)} (default: all of them)")


def _status_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    status = command("status", "the state of every trial of a results folder", status_command)
    status.add_argument("--out", required=True, type=Path, help="results folder")
    status.add_argument("--brief", action="store_true", help="list only trials that are not complete")
    status.add_argument("--watch", nargs="?", type=float, const=10.0, default=None, metavar="SECONDS",
                        help="redraw every SECONDS (10 if not given) until nothing is queued or running")

    logs = command("logs", "print a trial's log (OUT/logs/TRIAL_ID.log); -f follows it while the trial runs",
                   logs_command)
    logs.add_argument("trial_id", metavar="TRIAL_ID", help="e.g. rot-aug-s007 (see `pipeline status`)")
    logs.add_argument("--out", required=True, type=Path, help="results folder")
    logs.add_argument("-f", "--follow", action="store_true", help="go on printing until the trial stops (Ctrl-C)")


def _stop_and_aggregate_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    cancel = command("cancel", "stop the grid: cancel its SLURM tasks, stop its local processes", cancel_command)
    cancel.add_argument("--out", required=True, type=Path, help="results folder")

    aggregate = command("aggregate", "tables, figures and the reproduction report of a results folder",
                        aggregate_command)
    aggregate.add_argument("--out", required=True, type=Path, help="results folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also PIPELINE_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler: Handler, interrupted: str = "interrupted") -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        sub.set_defaults(handler=handler, interrupted=interrupted)
        return sub

    # In the order `pipeline --help` lists them.
    _train_parser(command)
    _plan_parser(command)
    _run_trial_parser(command)
    _launch_parsers(command)
    _status_parsers(command)
    _resubmit_parser(command)
    _stop_and_aggregate_parsers(command)
    return parser
