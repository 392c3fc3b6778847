"""What a trial measured once, after training (the ``results/`` group of its file), as tables.

Every experiment's results read alike as *measurements*: one row per trial, its labels and the group's
attributes. The arrays an experiment stores there are its own: the experiment names its analysis
(``Experiment.results_analysis``), and ``READERS`` below says, by that name, how the arrays read as the
analysis's tables. A new experiment with a final stage adds its reader here and its analysis in
``analysis.results_analyses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from analysis import stationary_point_tables

# labels, arrays (path in results/ -> values), attributes -> {table name: rows}
Reader = Callable[[dict[str, Any], dict[str, np.ndarray], dict[str, Any]], dict[str, list[dict[str, Any]]]]
READERS: dict[str, Reader] = {"stationary_points": stationary_point_tables.tables}


def read(analysis: str | None, labels: dict[str, Any], results: dict[str, Any]) -> tuple[dict[str, Any],
                                                                                         dict[str, list[dict[str, Any]]]]:
    """A trial's measurements (its labels and the results' attributes) and the rows of the tables its experiment's
    analysis reads from the arrays (none for an analysis without a reader)."""
    reader = READERS.get(analysis) if analysis is not None else None
    rows = reader(labels, results["arrays"], results["attrs"]) if reader is not None else {}
    return {**labels, **results["attrs"]}, rows
