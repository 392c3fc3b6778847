"""Live curves in Weights & Biases: one run per trial, in ``OUT/wandb/``, grouped by cell.

``--wandb`` (on ``submit``, ``resubmit``, ``run-trial`` and ``train``) wraps each trial's sink in
:class:`WandbSink`, a curve sink (``pipeline.run.curve_sinks``: the same tags and values per epoch as the
TensorBoard curves, logged at step = epoch). Each trial is one run: its name is the trial id, its group the
trial's cell (the trial id without its seed, e.g. ``rot-aug-orbit``, so that a group holds the seeds of one
setting), its job type the experiment, and its config the trial's settings (every one of them, with the
trial id, cell, mode and swept settings).

GPU nodes usually have no internet, so runs are written **offline** unless ``WANDB_MODE`` says otherwise
(``WANDB_MODE=online`` on a node that reaches the server); ``wandb sync OUT/wandb/wandb/offline-run-*``
uploads them afterwards. ``WANDB_PROJECT`` names the project (default ``equivariance-dynamics``),
``WANDB_ENTITY`` the team. A resumed trial logs the epochs after its checkpoint into a new offline
directory of the same run id (``resume="allow"``), which ``wandb sync`` merges.

The ``wandb`` package is the project's ``wandb`` extra (``make env`` installs it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from pipeline import experiments
from pipeline.experiments import Trial
from pipeline.run.curve_sinks import CurveSink
from pipeline.trialfile.sink import Sink

PROJECT = "equivariance-dynamics"


def run_id(trial_id: str, folder: Path) -> str:
    """A stable run id per trial and results folder (a resumed trial continues its own run; the same trial id
    in another folder is another run)."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', trial_id)}-{digest}"


def cell_group(trial_id: str) -> str:
    """The trial's cell: its id without the seed (``rot-aug-orbit-s007`` -> ``rot-aug-orbit``)."""
    return re.sub(r"-s\d+$", "", trial_id)


def run_config(trial: Trial) -> dict:
    labels = experiments.of(trial).labels(trial.settings)
    return {**dataclasses.asdict(trial.settings), "trial_id": trial.trial_id, "experiment": trial.experiment,
            "cell": labels.cell, "mode": labels.mode, "swept": dict(trial.swept)}


class WandbSink(CurveSink):
    """Passes every sink call to ``inner`` and logs the epoch's curves to the trial's W&B run, kept in
    ``directory`` (W&B's ``dir``)."""

    name = "wandb"

    def __init__(self, inner: Sink, directory: Path, trial: Trial | None = None):
        super().__init__(inner, directory, trial)
        self._run: Any = None

    @staticmethod
    def has_run(place: Path, trial_id: str, out_dir: Path) -> bool:
        # W&B keeps each attempt's run in a directory of its own below ``place``, named after the run id.
        return any(place.glob(f"*/*-{run_id(trial_id, out_dir)}"))

    def _open(self, trial: Trial, resume_epoch: int | None) -> None:
        import wandb  # deferred: wandb, only with --wandb

        self.directory.mkdir(parents=True, exist_ok=True)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                  save_code=False, disable_job_creation=True, x_save_requirements=False)
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, dir=str(self.directory),
                               mode=os.environ.get("WANDB_MODE") or "offline",  # type: ignore[arg-type]
                               id=run_id(trial.trial_id, self.directory.parent), name=trial.trial_id,
                               group=cell_group(trial.trial_id), job_type=trial.experiment, config=run_config(trial),
                               reinit="create_new", resume="allow", settings=settings)

    def _log(self, epoch: int, values: dict[str, float], last: bool) -> None:
        assert self._run is not None, "begin() opens the run"
        self._run.log(values, step=epoch)

    def _close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
