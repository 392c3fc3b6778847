"""What the analysis makes of the measurements an experiment takes once, after training (the ``results/``
group of its trial files): tables, figures and a section of the report.

An experiment names its analysis (``Experiment.results_analysis``, Experiment S: ``stationary_points``);
the aggregation and the report ask this registry for the analyses a folder's experiments name, and hard-code
none. A new experiment with a final stage adds its analysis module and one line in ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from analysis import stationary_points
from analysis.loading import Results, experiment_of


@dataclass(frozen=True)
class ResultsAnalysis:
    heading: str  # of its section of the report
    tables: dict[str, Callable[[Results], pd.DataFrame]]  # the aggregate's CSV files (name without .csv)
    figures: Callable[[Results], dict]  # figure name -> (builder returning (figure, panels), caption)
    section: Callable[[Results, dict | None], str]  # its section of the report ("" where nothing was measured)
    # What each trial measured, one row per complete trial (what the report's table of the paper's claims reads),
    # and how the reasons in its ``claim3_reasons`` column read in words, summed over trials.
    trial_table: Callable[[Results], pd.DataFrame]
    reasons_in_words: Callable[[pd.Series], str]
    # What one trial measured, in a few lines (``pipeline train`` prints them at its end), from its results' attributes.
    summary_lines: Callable[[dict], list[str]]


REGISTRY: dict[str, ResultsAnalysis] = {
    "stationary_points": ResultsAnalysis(
        "Stationary points and their stability",
        {"stationary_points": stationary_points.cell_table, "stationary_points_trials": stationary_points.trial_table},
        stationary_points.planned_figures, stationary_points.report_section, stationary_points.trial_table,
        stationary_points.common_reasons, stationary_points.summary_lines),
}


def named_by(results: Results) -> list[ResultsAnalysis]:
    """The analyses that the folder's experiments name, in the registry's order, where any trial measured
    after training."""
    if results.measurements.empty:
        return []
    names = {experiment_of(name).results_analysis for name in dict.fromkeys(results.trials["experiment"])}
    return [analysis for name, analysis in REGISTRY.items() if name in names]


def summary_lines(experiment: str, attrs: dict) -> list[str]:
    """What a trial of ``experiment`` measured after training, in a few lines (none where its experiment names no
    analysis)."""
    name = experiment_of(experiment).results_analysis
    return REGISTRY[name].summary_lines(attrs) if name in REGISTRY else []
