"""Per-trial end points and per-cell statistics (median and interquartile range over seeds).

A *cell* is one experiment, cell (group, CNN variant), mode and set of swept values: the seeds of one
setting. Statistics use complete trials only; the counts say how many of the manifest's trials that is.

For a multi-phase experiment the distance travelled is measured from the start of the current phase (the
runner resets its reference point when a phase begins), so its "final travelled" is that of the last phase.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from analysis.loading import CELL_KEYS, TOTAL, Results, experiment_of
from pipeline import experiments
from pipeline.schema import ACCURACY, DIST_E, DIST_INIT, LOSS, NORM, ROW_EPOCH, ROW_PHASE
from pipeline.settings import MODES

CELL = ["experiment", "cell", "mode", "swept"]
STATUSES = ("complete", "running", "failed", "cancelled", "inconsistent", "damaged", "missing")
# Per-trial end points summarised per cell, in this order, with what they are in words.
END_POINTS = {
    "final_dist_E": "final distance from E (dist_E, all layers)",
    "final_travelled": "final distance travelled (dist_init, all layers)",
    "final_ratio": "final distance from E per unit distance travelled",
    "final_rel_dist_E": "final distance from E relative to the weight norm",
    "final_loss": "final training loss",
    "final_accuracy": "final training accuracy",
}
# A cell "did not learn" when the median over its seeds of the final training accuracy is below this
# multiple of chance (1 / number of classes: 0.2 for ten digits). Its distances then describe a network
# that has not fitted the data, which a reader must know before comparing them with the paper's.
LEARNING_MIN_FACTOR = 2.0


def _ratio(numerator: ArrayLike, denominator: ArrayLike) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def cell_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the order a reader expects: experiments as registered, cells as each experiment lists
    them, modes Equi, Aug, Nom; ties (swept values, unknown names) keep their order in the manifest."""
    experiment_rank = {name: i for i, name in enumerate(experiments.REGISTRY)}
    mode_rank = {name: i for i, name in enumerate(MODES)}

    def cell_rank(row: pd.Series) -> int:
        names = experiment_of(row["experiment"]).cell_names
        return names.index(row["cell"]) if row["cell"] in names else len(names)

    keys = pd.DataFrame({
        "experiment": frame["experiment"].map(experiment_rank).fillna(len(experiment_rank)),
        "cell": frame.apply(cell_rank, axis=1) if len(frame) else pd.Series(dtype=float),
        "mode": frame["mode"].map(mode_rank).fillna(len(mode_rank)),
    }, index=frame.index)
    return frame.loc[keys.sort_values(["experiment", "cell", "mode"], kind="stable").index]


def trial_end_points(results: Results) -> pd.DataFrame:
    """One row per complete trial: final dist_E, distance travelled, their ratio, dist_E/‖A‖, loss and
    accuracy (totals over layers), the largest dist_E/‖A‖ over all epochs (``max_rel_dist_E``) and over
    the epochs of each phase (``max_rel_dist_E_phase<p>``)."""
    complete = results.trials.loc[results.trials["status"] == "complete", "trial_id"]
    totals = results.epochs[(results.epochs["layer"] == TOTAL) & results.epochs["trial_id"].isin(set(complete))]
    totals = totals.sort_values(["trial_id", ROW_EPOCH]).assign(rel=lambda t: _ratio(t[DIST_E], t[NORM]))
    by_trial = totals.groupby("trial_id", sort=False)
    final = by_trial.tail(1).set_index("trial_id")  # the last epoch's row, NaNs and all
    table = pd.DataFrame({
        "final_dist_E": final[DIST_E], "final_travelled": final[DIST_INIT],
        "final_ratio": _ratio(final[DIST_E], final[DIST_INIT]),
        "final_rel_dist_E": _ratio(final[DIST_E], final[NORM]),
        "max_rel_dist_E": by_trial["rel"].max(),
        "final_loss": final[LOSS], "final_accuracy": final[ACCURACY],
    })
    if not totals.empty:
        per_phase = totals.groupby(["trial_id", ROW_PHASE])["rel"].max().unstack(ROW_PHASE)
        for phase in per_phase.columns:
            table[f"max_rel_dist_E_phase{int(phase)}"] = per_phase[phase]
    table = table.reindex(pd.Index(complete, name="trial_id")).dropna(how="all").reset_index()
    return table


def quartiles(values: ArrayLike) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile) of the finite values, linear interpolation; NaN if none."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (np.nan, np.nan, np.nan)
    q25, median, q75 = np.percentile(finite, [25, 50, 75])
    return float(q25), float(median), float(q75)


def chance_accuracy(experiment: str) -> float:
    return 1.0 / experiment_of(experiment).classes


def summarize(results: Results, end_points: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of the manifest: trial counts by status, whether it learned, and median and
    quartiles of each end point over its complete trials."""
    labels = ["experiment", "cell", *CELL_KEYS, "mode", *results.swept_columns, "series", "swept"]
    rows = []
    for _, members in results.trials.groupby(CELL, sort=False):
        row = {column: members[column].iloc[0] for column in labels}
        counts = members["status"].value_counts()
        row["expected"] = len(members)
        row.update({status: int(counts.get(status, 0)) for status in STATUSES})
        finished = end_points[end_points["trial_id"].isin(set(members["trial_id"]))]
        for column in (*END_POINTS, "max_rel_dist_E"):
            q25, median, q75 = quartiles(finished[column] if column in finished else [])
            row.update({f"{column}_median": median, f"{column}_q25": q25, f"{column}_q75": q75,
                        f"{column}_iqr": q75 - q25})
        row["chance_accuracy"] = chance_accuracy(row["experiment"])
        accuracy = row["final_accuracy_median"]
        row["meant_to_learn"] = experiment_of(row["experiment"]).meant_to_learn(json.loads(members["settings"].iloc[0]))
        row["not_learning"] = bool(row["meant_to_learn"] and np.isfinite(accuracy)
                                   and accuracy < LEARNING_MIN_FACTOR * row["chance_accuracy"])
        rows.append(row)
    return cell_order(pd.DataFrame(rows)).reset_index(drop=True)
