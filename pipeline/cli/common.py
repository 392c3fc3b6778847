"""What several commands share: how a run's outcome and a folder's grid are told, the curve sinks asked for,
and waiting for a launched grid."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import SchedulerError
from pipeline.folder import ResultsFolder
from pipeline.run import curve_sinks
from pipeline.settings import ConfigError, quoted
from pipeline.trialfile.manifest import entries as manifest_entries

if TYPE_CHECKING:  # status reads the trial files (h5py): named for the checker only
    from pipeline.launch.monitor import TrialState


def report_outcome(outcomes: dict[str, str]) -> int:
    busy = [f"{trial_id} {outcome}" for trial_id, outcome in outcomes.items() if outcome.startswith("busy")]
    if busy:
        print("error: " + "; ".join(busy), file=sys.stderr)
        return 1
    return 0


def grid_of(manifest: dict) -> str:
    count = len(manifest_entries(manifest))
    return f"the {count} trial(s) of grid {manifest.get('grid', '?')}"


def check_workers(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.trials_per_task is not None and args.trials_per_task < 1:
        raise ConfigError(f"--trials-per-task must be at least 1, got {args.trials_per_task}")


def curve_lines(out: Path, sinks: Iterable[str]) -> list[str]:
    folder = ResultsFolder(out)
    lines = []
    if "tensorboard" in sinks:
        lines.append(f"live curves: tensorboard --logdir {quoted(folder.tensorboard)}")
    if "wandb" in sinks:
        lines.append(f"W&B runs (offline unless WANDB_MODE says otherwise) in {quoted(folder.wandb)}: "
                     f"wandb sync {quoted(folder.wandb)}/wandb/offline-run-* uploads them")
    return lines


def requested_sinks(args: argparse.Namespace) -> tuple[str, ...]:
    """The curve sinks the command line asks for (``--tensorboard``, ``--wandb``), checked to be installed."""
    names = tuple(name for name in curve_sinks.SINKS if getattr(args, name, False))
    curve_sinks.check_available(names)
    return names


def follow(out: Path, wait: bool, launched: set[int] | None = None) -> int:
    """Wait for the grid where asked; the exit status says whether the trials ``launched`` (default: all)
    completed."""
    # deferred: h5py (status reads the trial files), kept out of the command line's start
    from pipeline.launch.monitor import format_status, gather, wait_for

    command = f"python -m pipeline status --out {quoted(out)}"
    if not wait:
        print(f"follow it with: {command}")
        return 0
    try:
        wait_for(out)
    except KeyboardInterrupt:
        print(f"\nstopped waiting; the grid goes on. Follow it with `{command}`, stop it with "
              f"`python -m pipeline cancel --out {quoted(out)}`", file=sys.stderr)
        return 130
    states = gather(out)
    print(format_status(states, only_unfinished=True))
    return 1 if any(s.state != "complete" for s in states if launched is None or s.index in launched) else 0


def refuse_unknown(states: list[TrialState], force: bool) -> None:
    """Refuse to submit trials whose state cannot be told, saying why the first of them cannot (squeue did
    not answer, a lease that cannot be read or proven, a launch whose job ids were not recorded)."""
    unknown = [s for s in states if s.state == "unknown"]
    if unknown and not force:
        raise SchedulerError(f"{len(unknown)} trial(s) may still be queued or running, which cannot be told here "
                             f"(e.g. {unknown[0].trial_id}: {unknown[0].detail}); submitting them again could run them "
                             "twice. Retry when it can be told, or pass --force")
