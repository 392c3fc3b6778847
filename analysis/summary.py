"""Per-trial end points and per-cell statistics (median and interquartile range over seeds).

A *cell* is one (experiment, group or config, mode): the seeds of one setting. Statistics use complete
trials only; the counts say how many of the manifest's trials that is.

For the CNN the distance travelled is measured from the start of phase 2 (the runner resets the
reference point when phase 2 begins), so its "final travelled" is the phase-2 distance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.experiments.cnn import VARIANTS as CONFIGS
from pipeline.experiments.groups import GROUP_NAMES
from pipeline.settings import MODES

from .loading import TOTAL, Results

CELL = ["experiment", "group", "config", "mode"]
STATUSES = ("complete", "running", "failed", "inconsistent", "damaged", "missing")
INCOMPLETE_STATUSES = ("running", "failed")
# Per-trial end points summarised per cell, in this order.
END_POINTS = {
    "final_dist_E": "final total dist_E",
    "final_travelled": "final distance travelled (total dist_init)",
    "final_ratio": "final dist_E / distance travelled",
    "final_loss": "final loss",
    "final_accuracy": "final accuracy",
}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def cell_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort rows the way the paper reads: groups by group then mode, then CNN configurations."""
    rank = {name: i for i, name in enumerate((*GROUP_NAMES, *CONFIGS))}
    mode_rank = {name: i for i, name in enumerate(MODES)}
    keys = pd.DataFrame({
        "experiment": frame["experiment"].map({"groups": 0, "cnn": 1}).fillna(2),
        "setting": (frame["group"] + frame["config"]).map(rank).fillna(len(rank)),
        "mode": frame["mode"].map(mode_rank).fillna(len(mode_rank)),
    }, index=frame.index)
    return frame.loc[keys.sort_values(["experiment", "setting", "mode"], kind="stable").index]


def trial_end_points(results: Results) -> pd.DataFrame:
    """One row per complete trial: final total dist_E, travelled, their ratio, loss, accuracy, and
    ``max_rel_dist_E``, the largest dist_E / ||A|| (totals) over the epochs where the claim is about E
    (every epoch for groups; phase 2 for the CNN, whose phase 1 is Equi by construction)."""
    complete = set(results.trials.loc[results.trials["status"] == "complete", "trial_id"])
    totals = results.epochs[(results.epochs["layer"] == TOTAL) & results.epochs["trial_id"].isin(complete)]
    rows = []
    info = results.trials.set_index("trial_id")
    for trial_id, run in totals.groupby("trial_id", sort=False):
        run = run.sort_values("epoch")
        final = run.iloc[-1]
        trial = info.loc[trial_id]
        measured = run[run["phase"] == 2] if trial["experiment"] == "cnn" else run
        relative = _ratio(measured["dist_E"].to_numpy(), measured["norm"].to_numpy())
        phase1 = run[run["phase"] == 1]
        rows.append({
            "trial_id": trial_id, **{k: trial[k] for k in ("experiment", "group", "config", "mode", "seed", "dtype",
                                                           "augment", "phase2_optimizer")},
            "final_dist_E": final["dist_E"], "final_travelled": final["dist_init"],
            "final_ratio": _ratio(np.array([final["dist_E"]]), np.array([final["dist_init"]]))[0],
            "final_rel_dist_E": _ratio(np.array([final["dist_E"]]), np.array([final["norm"]]))[0],
            "max_rel_dist_E": np.nanmax(relative) if np.isfinite(relative).any() else np.nan,
            "max_rel_dist_E_phase1": (np.nanmax(_ratio(phase1["dist_E"].to_numpy(), phase1["norm"].to_numpy()))
                                      if trial["experiment"] == "cnn" and len(phase1) else np.nan),
            "final_loss": final["loss"], "final_accuracy": final["accuracy"],
        })
    columns = ["trial_id", "experiment", "group", "config", "mode", "seed", "dtype", "augment", "phase2_optimizer",
               *END_POINTS, "final_rel_dist_E", "max_rel_dist_E", "max_rel_dist_E_phase1"]
    return pd.DataFrame(rows, columns=columns)


def quartiles(values) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile) of the finite values, linear interpolation; NaN if none."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (np.nan, np.nan, np.nan)
    q25, median, q75 = np.percentile(finite, [25, 50, 75])
    return float(q25), float(median), float(q75)


def summarize(results: Results, end_points: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of the manifest: trial counts by status and median/IQR of each end point."""
    rows = []
    for cell, members in results.trials.groupby(CELL, sort=False):
        row = dict(zip(CELL, cell))
        counts = members["status"].value_counts()
        row["expected"] = len(members)
        for status in STATUSES:
            row[status] = int(counts.get(status, 0))
        finished = end_points[end_points["trial_id"].isin(members["trial_id"])]
        for column in (*END_POINTS, "max_rel_dist_E"):
            q25, median, q75 = quartiles(finished[column])
            row.update({f"{column}_median": median, f"{column}_q25": q25, f"{column}_q75": q75,
                        f"{column}_iqr": q75 - q25})
        rows.append(row)
    return cell_order(pd.DataFrame(rows)).reset_index(drop=True)
