"""Experiment S's trial as a loop of its own (``Experiment.own_loop``): the search for A*, top to bottom.

The search (``pipeline.core.stationary_search``) runs in two stages: **first order**, blocks of up to
``block`` iterations of L-BFGS (or gradient descent) on Π_E∇R, then, with ``refine="newton"``, **Newton**,
one trust-region step on E per block. A row of the trial file is the state after a block (row 0 is A⁰),
with R, the accuracy and ‖Π_E∇R‖ at that point (``grad_norm``). Each row reaches the sinks with a
checkpoint of the whole search (θ, the L-BFGS memory, the trust radius, the best iterate: the stepper's
``state_dict``), so a trial stopped anywhere resumes from its last row and takes exactly the steps it would
have taken. The measurements at A* follow as the runner's final stage (``StabilityExperiment.finalize``).
"""

from __future__ import annotations

import math

from pipeline.core.stationary_search import FIRST_ORDER, NEWTON, StationarySearch
from pipeline.experiments.loop import RunControl
from pipeline.experiments.stability_trial import StationaryStepper
from pipeline.schema import GRAD_NORM


def search_loop(run: RunControl) -> None:
    """Run the search from where the trial stands (A⁰, or its last row) to its end, a row per block."""
    stepper = run.stepper
    if not isinstance(stepper, StationaryStepper):
        raise TypeError(f"Experiment S's loop runs a StationaryStepper, not {type(stepper).__name__}")
    search, total = stepper.search, run.total_rows
    row = max(run.rows_done, 0)
    if run.rows_done < 0:
        # A⁰. Its grad_norm stays NaN, as row 0 of every trial file: no block led there (‖Π_E∇R‖ at A⁰ is
        # the results' start_projected_grad_norm).
        run.record(0, search.loss, search.accuracy, {GRAD_NORM: math.nan}, position(0, total, "start", search),
                   last=search.done or total == 0)
    while row < total and not search.done:
        run.between_rows(row + 1)  # a stop request, or a fault planned for this row (tests)
        stage = search.stage
        if stage == FIRST_ORDER:
            search.first_order_block()  # up to `block` iterations of L-BFGS (or gradient descent) on Π_E∇R
        else:
            search.newton_block()  # one trust-region step on E; the search keeps its best iterate
        row += 1
        run.record(row, search.loss, search.accuracy, {GRAD_NORM: search.norm}, position(row, total, stage, search),
                   last=search.done or row == total)


def position(row: int, total: int, stage: str, search: StationarySearch) -> str:
    """How the console names a row: its block, the stage that made it with the search's own count, and
    ‖Π_E∇R‖ there (the search's measure of progress, which the console's series do not show)."""
    if stage == "start":
        where = "A⁰"
    elif stage == NEWTON:
        where = f"Newton step {search.newton_iterations}"
    else:
        where = f"{stage}, iteration {search.iterations}"
    ended = f", search ended: {search.ended}" if search.done else ""
    return f"block {row}/{total} ({where}{ended}) ‖Π_E∇R‖ {search.norm:.3e}"
