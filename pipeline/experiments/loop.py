"""The hook by which an experiment runs a trial in a loop of its own instead of the runner's epoch loop.

Most experiments train in epochs, and the runner's loop (``pipeline.run.runner``) drives them through
``Experiment.train_epoch``. An experiment whose trial is not a course of epochs (Experiment S: a search, in
iterations and stages) returns its own loop from ``Experiment.own_loop``; the runner then sets the trial up
(data, model, stepper, sinks, a resumed state) and hands that loop a :class:`RunControl`, through which the
loop records its rows, and after which the runner runs the final stage and closes the sinks as always.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # for annotations only: the stepper and the data bring torch, which this layer loads lazily
    from pipeline.core.data import Dataset
    from pipeline.core.training import Stepper


class RunControl(Protocol):
    """What the runner lends a loop of an experiment's own (one trial, one model)."""

    @property
    def stepper(self) -> Stepper:
        """What trains, as ``Experiment.stepper`` made it (with a resumed state loaded)."""
        ...

    @property
    def data(self) -> Dataset: ...

    @property
    def rows_done(self) -> int:
        """The last row every sink holds: -1 for a fresh trial, else the row it resumes from."""
        ...

    @property
    def total_rows(self) -> int:
        """``Experiment.total_epochs``: the last row a trial can have."""
        ...

    def between_rows(self, row: int) -> None:
        """Before the work that leads to ``row``: a stop request (cancel, preemption) or a fault planned for
        ``row`` (tests) is raised here."""

    def record(self, row: int, loss: float, accuracy: float, series: Mapping[str, float], position: str,
               last: bool = False) -> None:
        """Row ``row`` is the state now: every sink gets it (its loss and accuracy, the other ``series`` of
        ``pipeline.schema`` it has, the layer measurements the runner adds) with a checkpoint of it, unless the
        sinks hold it already. ``position`` is how the console names the row (e.g. "iteration 40, first
        order"); ``last``: the trial's last row."""


OwnLoop = Callable[[RunControl], None]
"""A loop of an experiment's own: it runs the trial from ``rows_done`` to its last row through the control."""
