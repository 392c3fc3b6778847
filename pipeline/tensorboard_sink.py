"""Live curves: TensorBoard event files beside the trial files, ``OUT/tensorboard/<trial_id>/``.

``--tensorboard`` (on ``submit``, ``resubmit``, ``run-trial`` and ``train``) wraps each trial's sink
(``pipeline.runner``) in :class:`TensorBoardSink`, which passes every call on unchanged and also writes
per epoch every series that ``pipeline.schema`` gives a TensorBoard tag: ``loss``, ``accuracy``,
``grad_norm``, ``seconds``, and per layer and in total ``dist_E/<layer>``, ``travelled/<layer>`` (distance
from the start of the phase) and ``step_perp/<layer>`` (the part of the epoch's step off E).
Follow a grid with ``tensorboard --logdir OUT/tensorboard`` (each trial is a run). A resumed trial drops
the events after its checkpoint and writes them again, so its curves are those of an uninterrupted run.
The HDF5 file stays the record; the events are for watching.

The ``tensorboard`` package is the project's ``tensorboard`` extra (``make env`` installs it).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import schema

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter
from .settings import ConfigError

FLUSH_EVERY_S = 5.0  # live enough to watch, without a file sync per fast epoch


def check_available() -> None:
    """Before anything is launched: a missing package is one line, not a failure on every node."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package, which is not installed in this environment; "
                          "install the project's extra: pip install -c constraints.txt -e '.[tensorboard]'")


class TensorBoardSink:
    """Passes every sink call to ``inner`` and writes the epoch's curves to TensorBoard event files."""

    def __init__(self, inner, directory: Path):
        self.inner = inner
        self.directory = Path(directory)
        self._writer: SummaryWriter | None = None
        self._flushed = 0.0

    def __getattr__(self, name):  # anything else the runner or a caller asks of the sink
        return getattr(self.inner, name)

    def resume_point(self):
        return self.inner.resume_point()

    def begin(self, trial, layer_names, device, data) -> None:
        self.inner.begin(trial, layer_names, device, data)
        from torch.utils.tensorboard import SummaryWriter

        self.layer_names = list(layer_names)
        point = self.inner.resume_point()
        # Rows after the checkpoint are trained again: their old events go, the new ones replace them.
        purge = point["epoch"] + 1 if point is not None else None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(str(self.directory), purge_step=purge, flush_secs=int(FLUSH_EVERY_S))

    def write_epoch(self, record, model, checkpoint) -> None:
        self.inner.write_epoch(record, model, checkpoint)
        writer, step = self._writer, int(record.epoch)
        assert writer is not None, "begin() opens the event file"
        for series in schema.EPOCH_SERIES:
            if series.tensorboard is None or series.name not in record.values:
                continue
            if series.per_layer:
                values = [float(v) for v in record.values[series.name]]
                writer.add_scalar(f"{series.tensorboard}/total", sum(v * v for v in values) ** 0.5, step)
                for layer, value in zip(self.layer_names, values):
                    writer.add_scalar(f"{series.tensorboard}/{layer}", value, step)
            else:
                value = float(record.values[series.name])
                if value == value:  # grad_norm is NaN at row 0
                    writer.add_scalar(series.tensorboard, value, step)
        now = time.monotonic()
        if now - self._flushed >= FLUSH_EVERY_S or record.last:
            writer.flush()
            self._flushed = now

    def write_steps(self, epoch, dist_E) -> None:
        self.inner.write_steps(epoch, dist_E)

    def write_results(self, arrays, attrs) -> None:
        self.inner.write_results(arrays, attrs)

    def save_latest_state(self) -> None:
        self.inner.save_latest_state()

    def finish(self) -> None:
        self.inner.finish()
        self.close()

    def close(self, raise_errors: bool = True) -> None:
        """Flush and close the event file (also after a failure: the curves so far stay readable)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
