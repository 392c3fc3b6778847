"""How a trial file of Experiment S reads as tables: the ``results/`` arrays its search measured at A*, the
spectra of H_E and H_⊥ and the perturbation runs, as rows (``analysis.result_tables`` asks for them by the name
``Experiment.results_analysis`` gives; ``analysis.stationary_points`` reads them from ``Results.tables``).

Kept apart from ``analysis.stationary_points`` so that reading a folder needs none of its figures or report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.schema import DIST_E

SPECTRA, PERTURBATIONS = "spectra", "perturbations"
BLOCKS = ("E", "perp")


def _spectra(labels: dict[str, Any], arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for block in BLOCKS:
        lowest = arrays.get(f"spectrum/{block}/lowest")
        if lowest is None:
            continue
        residuals = arrays.get(f"spectrum/{block}/lowest_residuals", np.full(len(lowest), np.nan))
        for index, (value, residual) in enumerate(zip(lowest, residuals)):
            rows.append({**labels, "block": block, "end": "lowest", "index": index, "value": float(value),
                         "residual": float(residual)})
        rows.append({**labels, "block": block, "end": "largest", "index": 0,
                     "value": attrs.get(f"lambda_max_{block}", np.nan),
                     "residual": attrs.get(f"lambda_max_{block}_residual", np.nan)})
    return rows


def _perturbations(labels: dict[str, Any], arrays: dict[str, np.ndarray],
                   attrs: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, series in arrays.items():
        if name.startswith("perturbation/"):
            run = name.split("/", 1)[1]
            for step, value in enumerate(series):
                rows.append({**labels, "run": run, "step": step, DIST_E: float(value),
                             "predicted_factor": attrs.get(f"{run}_predicted", np.nan),
                             "measured_factor": attrs.get(f"{run}_measured", np.nan)})
    return rows


def tables(labels: dict[str, Any], arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A trial's rows of each table, by the table's name (its CSV file in the aggregate)."""
    return {SPECTRA: _spectra(labels, arrays, attrs), PERTURBATIONS: _perturbations(labels, arrays, attrs)}
