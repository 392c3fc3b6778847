"""Live curves for the trackers researchers watch: TensorBoard (``--tensorboard``) and Weights & Biases
(``--wandb``), through one interface.

A curve sink wraps a trial's own sink (``pipeline.run.runner``: the HDF5 store, or the console): it passes every
call on unchanged and, per epoch, also writes every series that ``pipeline.schema`` gives a tag: ``loss``,
``accuracy``, ``grad_norm``, ``seconds``, and per layer and in total ``dist_E/<layer>``,
``travelled/<layer>`` and ``step_perp/<layer>`` (:func:`curve_values`). The HDF5 file stays the record; the
curves are for watching. Each tracker is a subclass that says how it opens a trial's run, logs one epoch's
values and closes (:class:`CurveSink`); ``SINKS`` names them, and a submission records which it used, so
that ``resubmit`` keeps them (``pipeline.launch.submission``).

A trial resumed without a sink that an earlier attempt had leaves that sink's curves ending where the
earlier attempt stopped: the run says so in its log, and the trial file keeps it (``curve_gaps``), which
``status`` shows.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import schema
from pipeline.errors import ConfigError
from pipeline.trialfile.sink import Checkpoint, EpochRecord, Sink, Weights

if TYPE_CHECKING:  # names for the checker only: torch is the runner's, never imported here
    import torch

    from pipeline.core.data import Dataset
    from pipeline.experiments import Trial

# option name -> (module, class, the package it needs, the project's extra that installs it)
SINKS = {
    "tensorboard": ("pipeline.run.tensorboard_sink", "TensorBoardSink", "tensorboard", "tensorboard"),
    "wandb": ("pipeline.run.wandb_sink", "WandbSink", "wandb", "wandb"),
}
# The trial file's attribute that keeps, per sink, the epoch its curves stop at where a later attempt ran
# without it (JSON: {"tensorboard": 84}).


def check_available(names: Iterable[str]) -> None:
    """Before anything is launched: a sink whose package is missing is one line, not a failure on every node."""
    for name in names:
        if name not in SINKS:
            raise ConfigError(f"unknown sink {name!r}; accepted: {', '.join(SINKS)}")
        package, extra = SINKS[name][2], SINKS[name][3]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"--{name} needs the {package} package, which is not installed in this environment; "
                              f"install the project's extra: pip install -c constraints.txt -e '.[{extra}]'")


def sink_class(name: str) -> type[CurveSink]:
    module, cls, _, _ = SINKS[name]
    found: type[CurveSink] = getattr(importlib.import_module(module), cls)
    return found


def curve_values(record: EpochRecord, layer_names: list[str]) -> dict[str, float]:
    """tag -> value of one row, for every series with a tag (a NaN, such as grad_norm at row 0, left out)."""
    values: dict[str, float] = {}
    for series in schema.EPOCH_SERIES:
        if series.tensorboard is None or series.name not in record.values:
            continue
        if series.per_layer:
            per_layer = [float(v) for v in record.values[series.name]]
            values[f"{series.tensorboard}/{schema.TOTAL}"] = schema.total_over_layers(per_layer)
            values.update({f"{series.tensorboard}/{layer}": v for layer, v in zip(layer_names, per_layer)})
        else:
            value = float(record.values[series.name])
            if not math.isnan(value):
                values[series.tensorboard] = value
    return values


class CurveSink:
    """Passes every sink call to ``inner`` and writes the epoch's curves to a tracker: subclasses implement
    ``_open(trial, resume_epoch)``, ``_log(epoch, values, last)`` and ``_close()``."""

    name = ""  # the option that asks for it: "tensorboard", "wandb"

    def __init__(self, inner: Sink, directory: Path, trial: Trial | None = None):
        """``directory``: where the tracker keeps the trial's run; ``trial``: the trial, for trackers that name
        their run before ``begin``."""
        self.inner = inner
        self.directory = Path(directory)
        self.layer_names: list[str] = []
        self._open_run = False

    def __getattr__(self, name: str) -> Any:  # anything else the runner or a caller asks of the sink
        return getattr(self.inner, name)

    def resume_point(self) -> dict | None:
        return self.inner.resume_point()

    def begin(self, trial: Trial, layer_names: list[str], device: torch.device, data: Dataset) -> None:
        self.inner.begin(trial, layer_names, device, data)
        self.layer_names = list(layer_names)
        point = self.inner.resume_point()
        self._open(trial, point["epoch"] if point is not None else None)
        self._open_run = True

    def write_epoch(self, record: EpochRecord, model: Weights, checkpoint: Checkpoint) -> None:
        self.inner.write_epoch(record, model, checkpoint)
        self._log(int(record.epoch), curve_values(record, self.layer_names), bool(record.last))

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
        self.inner.write_steps(epoch, dist_E)

    def write_results(self, arrays: dict, attrs: dict) -> None:
        self.inner.write_results(arrays, attrs)

    def save_latest_state(self) -> None:
        self.inner.save_latest_state()

    def finish(self) -> None:
        self.inner.finish()
        self.close()

    def close(self, raise_errors: bool = True) -> None:
        """Close the tracker's run (also after a failure: the curves so far stay readable)."""
        if self._open_run:
            self._open_run = False
            self._close()

    # -- what a tracker implements ------------------------------------------------------------------------
    @staticmethod
    def has_run(place: Path, trial_id: str, out_dir: Path) -> bool:
        """Whether an earlier attempt of the trial wrote curves into ``place``."""
        raise NotImplementedError

    def _open(self, trial: Trial, resume_epoch: int | None) -> None:
        raise NotImplementedError

    def _log(self, epoch: int, values: dict[str, float], last: bool) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError


def wrap(sink: Sink, names: Iterable[str], trial: Trial, places: dict[str, Path]) -> Sink:
    """``sink`` wrapped in the curve sinks ``names`` for ``trial``, each writing where ``places`` says."""
    for name in names:
        sink = sink_class(name)(sink, places[name], trial)
    return sink


def gaps_words(gaps: dict[str, int]) -> str:
    """What status says of a trial whose curves stop early: "TensorBoard curves end at epoch 84"."""
    titles = {"tensorboard": "TensorBoard", "wandb": "W&B"}
    return "; ".join(f"{titles.get(name, name)} curves end at epoch {epoch} (an attempt ran without --{name})"
                     for name, epoch in sorted(gaps.items()))
