"""Where a trial's results go, as the runner (``pipeline.run.runner``) sees it: the ``Sink`` protocol, and the
row it hands every sink (:class:`EpochRecord`).

Its implementers: the HDF5 trial store (``pipeline.trialfile.store``), the console and collecting sinks
(``pipeline.run.runner``), the curve sinks that wrap another sink (``pipeline.run.curve_sinks``: TensorBoard,
W&B) and the background writer (``pipeline.run.background``). The protocol lives here, in the trial file's
layer, because that is the lowest layer that can name what a sink is handed (a ``Trial`` of
``pipeline.experiments``, the data of ``pipeline.core``) and still lies below every implementer: the store here,
the others in ``pipeline.run`` above. Nothing here imports torch at run time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # names for the checker only: a sink is handed them, this module never builds one
    import torch

    from pipeline.core.data import Dataset
    from pipeline.experiments import Trial


@dataclass
class EpochRecord:
    """One row of a trial (``pipeline.schema``): its epoch and phase, and the value of every other series
    (``schema.ROW_VALUES``: a float, or a (L,) tensor for a per-layer series), also readable as attributes
    (``record.loss``, ``record.dist_E``)."""

    epoch: int
    phase: int
    values: dict = field(default_factory=dict)
    last: bool = False  # the trial's last row (it may come early: a search that converged)
    position: str = ""  # how the console names the row where it is not "epoch e/total" (a search's iteration)

    def __getattr__(self, name: str) -> Any:  # a series' value: a float or a tensor, by the schema
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no series {name!r}")

    def with_values(self, changed: dict) -> EpochRecord:
        return dataclasses.replace(self, values={**self.values, **changed})


# What a sink calls to have the rolling checkpoint's state built, only when it writes one.
Checkpoint = Callable[[], dict]


class Weights(Protocol):
    """What a sink may ask of the model at a row: its weights (a model of ``pipeline.core.models``, or what a
    background writer captured of it when the row was recorded)."""

    def snapshot(self) -> dict[str, torch.Tensor]: ...


class Sink(Protocol):
    """What every sink does, in the order the runner calls it: ``resume_point``, ``begin``, ``write_epoch``
    for every row it does not hold yet (``write_steps`` between two rows where the experiment records steps),
    ``save_latest_state`` before the final measurement, ``write_results`` with it, ``finish``; and ``close``
    once its owner is done with it, whatever happened (``raise_errors=False`` after a failure: keep what can
    be kept, raise nothing)."""

    def resume_point(self) -> dict | None:
        """The epoch and phase this sink already holds (to resume after), or None to start afresh."""

    def begin(self, trial: Trial, layer_names: list[str], device: torch.device, data: Dataset) -> None: ...

    def write_epoch(self, record: EpochRecord, model: Weights, checkpoint: Checkpoint) -> None: ...

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None: ...

    def write_results(self, arrays: dict, attrs: dict) -> None: ...

    def save_latest_state(self) -> None: ...

    def finish(self) -> None: ...

    def close(self, raise_errors: bool = True) -> None: ...
