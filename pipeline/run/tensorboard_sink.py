"""Live curves: TensorBoard event files beside the trial files, ``OUT/tensorboard/<trial_id>/``.

``--tensorboard`` (on ``submit``, ``resubmit``, ``run-trial`` and ``train``) wraps each trial's sink in
:class:`TensorBoardSink`, a curve sink (``pipeline.run.curve_sinks``: every series of ``pipeline.schema`` with a
tag, per epoch). Follow a grid with ``tensorboard --logdir OUT/tensorboard`` (each trial is a run). A
resumed trial drops the events after its checkpoint and writes them again, so its curves are those of an
uninterrupted run.

The ``tensorboard`` package is the project's ``tensorboard`` extra (``make env`` installs it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.experiments import Trial
from pipeline.run import curve_sinks
from pipeline.run.curve_sinks import CurveSink
from pipeline.trialfile.sink import Sink

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

FLUSH_EVERY_S = 5.0  # live enough to watch, without a file sync per fast epoch


def check_available() -> None:
    """Before anything is launched: a missing package is one line, not a failure on every node."""
    curve_sinks.check_available(["tensorboard"])


class TensorBoardSink(CurveSink):
    """Passes every sink call to ``inner`` and writes the epoch's curves to TensorBoard event files in
    ``directory`` (one run)."""

    name = "tensorboard"

    def __init__(self, inner: Sink, directory: Path, trial: Trial | None = None):
        super().__init__(inner, directory, trial)
        self._writer: SummaryWriter | None = None
        self._flushed = 0.0

    @staticmethod
    def has_run(place: Path, trial_id: str, out_dir: Path) -> bool:
        return place.is_dir() and any(place.iterdir())

    def _open(self, trial: Trial, resume_epoch: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # deferred: torch and tensorboard, only with --tensorboard

        # Rows after the checkpoint are trained again: their old events go, the new ones replace them.
        purge = resume_epoch + 1 if resume_epoch is not None else None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(str(self.directory), purge_step=purge, flush_secs=int(FLUSH_EVERY_S))

    def _log(self, epoch: int, values: dict[str, float], last: bool) -> None:
        writer = self._writer
        assert writer is not None, "begin() opens the event file"
        for tag, value in values.items():
            writer.add_scalar(tag, value, epoch)
        now = time.monotonic()
        if now - self._flushed >= FLUSH_EVERY_S or last:
            writer.flush()
            self._flushed = now

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
