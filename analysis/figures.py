"""The figures of a results folder, PNG (300 dpi) and PDF under stable names, with their captions.

Per experiment with complete or running trials (names from ``analysis.figure_names``):

- ``<experiment>_dist_vs_travelled`` (where x is the distance travelled): total dist_E against the distance
  travelled, a panel per cell, linear axes: the paper's figure.
- ``<experiment>_dist_vs_<x>_log``: the same, or against the epoch, with a log dist_E axis, starting at the
  first step, a shared y axis and the round-off band shaded.
- ``<experiment>_dist_vs_<x>_layers_log``: the same with a row of panels per measured layer.
- ``<experiment>_ratio_vs_epoch_log`` (where x is the distance travelled): dist_E over the distance
  travelled against the epoch, log scale: an axis every seed shares, so medians run the whole way.
- ``<experiment>_training_curves``: loss and accuracy against epoch, chance accuracy dotted.
- ``<experiment>_steps_log``: dist_E after every optimizer step, made only where some epoch has more than
  one step (with one step per epoch it would repeat the epochs' figure).

Every figure draws a series per mode and swept values side by side (e.g. Aug with the exact orbit beside
Aug with sampled passes, in their own hues, the exact orbit with circles), a thin line per seed and a thick
median per series; running trials dashed up to their last epoch, outside the medians. Modes the figures do
not know get grey styles and their own words.

An experiment with arms (``Experiment.arm_key``: Experiment G's minibatch-SGD extension beside the paper's
full-batch GD) gets each arm's figures apart: its own arm under the names above, every other arm under
``<experiment>_<arm>_...`` (``groups_sgd_dist_vs_travelled``), titled by ``arm_title``, so that runs that
travel ten times farther never squeeze the paper's into a corner.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import rc_context

from analysis import figure_names
from analysis.claims import NOM_MIN_RATIO
from analysis.curves import steps_add_information, steps_figure, training_curves
from analysis.drawing import drawn_rows
from analysis.loading import experiment_of
from analysis.style import STYLE, save
from analysis.trajectories import FigureFacts, layers_of, ratio_figure, trajectory_figure
from pipeline import experiments
from pipeline.experiments.base import Experiment
from pipeline.progress import Progress


@dataclass
class FigureInfo:
    name: str
    panels: int
    caption: str
    paths: list[Path] = field(default_factory=list)
    complete: int = 0  # trials drawn whole
    running: int = 0  # trials drawn dashed, up to their last epoch


def _median_words(experiment: Experiment[Any, Any]) -> str:
    if experiment.trajectory_x == "travelled":
        return ("thick lines: per series, the median over seeds of dist_E taken at common values of the distance "
                "travelled (each seed interpolated linearly between its epochs), so that the line follows the runs; "
                "at each distance the median is over the seeds that reach it, drawn over the range that more than "
                "half of the seeds cover (the ratio figure shows every seed over every epoch)")
    return "thick lines: per series, the median over seeds at each epoch"


def _arms(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame,
          experiment: Experiment[Any, Any]) -> list[tuple[Experiment[Any, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """(experiment or a view of one arm, its epochs, steps, trials) per arm of the experiment's trials.

    The experiment's own arm keeps the experiment (its figures keep their names); another arm gets a copy of
    the experiment named ``<experiment>_<arm>`` and titled ``arm_title``, its tables relabelled to that name,
    so that the figure builders see it as an experiment of its own."""
    key = experiment.arm_key
    mine = trials[trials["experiment"] == experiment.name]
    if key is None or mine.empty:
        return [(experiment, epochs, steps, trials)]
    own = getattr(experiment.settings_type(), key)
    arm_of = {trial_id: json.loads(text).get(key, own) for trial_id, text in zip(mine["trial_id"], mine["settings"])}
    arms = sorted(dict.fromkeys(arm_of.values()), key=lambda arm: arm != own)
    if arms == [own]:
        return [(experiment, epochs, steps, trials)]
    found = []
    for arm in arms:
        ids = {trial_id for trial_id, value in arm_of.items() if value == arm}
        view, words = experiment, experiment.describe(key, arm)
        if arm != own:
            view = copy.copy(experiment)
            # The view's own names shadow its class's: its figures go by the arm's name and title, and the legend
            # says once, above its entries, what they share.
            vars(view).update(name=figure_names.arm_experiment_name(experiment, arm), title=experiment.arm_title(arm),
                              legend_heading=words)

        def part(table: pd.DataFrame, ids: set[str] = ids, view: Experiment[Any, Any] = view,
                 words: str = words) -> pd.DataFrame:
            rows = table[table["trial_id"].isin(ids)]
            if view is experiment:
                return rows
            rows = rows.assign(experiment=view.name)
            if words and "series" in rows:
                rows = rows.assign(series=rows["series"].str.replace(f", {words}", "", regex=False))
            return rows

        found.append((view, part(epochs), part(steps), part(trials)))
    return found


def _reading(facts: FigureFacts, median: str, experiment: Experiment[Any, Any]) -> str:
    parts = [f"Thin lines: single seeds; {median}"]
    if experiment.first_phase_mode is not None:
        parts.append(f"phase 1 trains as {experiment.mode_words(experiment.first_phase_mode)} in every trial and is "
                     "drawn in its colour, its median taken over all trials of the panel")
    if facts.band:
        parts.append("shaded: the round-off band, dist_E ≤ ROUNDOFF_THRESHOLD·‖A‖ with ‖A‖ the panel's median "
                     "weight norm; the verdicts count a trial inside it as in E")
    if facts.zeros:
        parts.append("values exactly 0 are drawn on the dotted line at the bottom")
    if facts.fewer:
        parts.append("paler pieces of a median: beyond where a seed stopped, the median of the seeds that got so far "
                     "(drawn apart, not joined to the median of all; k/n at the start of the first and the last such "
                     "piece: the median of k of the n seeds)")
    if facts.compressed:
        parts.append("phase 1, longer than phase 2, is drawn compressed to a third of the width")
    if facts.absent:
        parts.append(f"not drawn, having no values: {', '.join(facts.absent)}")
    trials = f"{facts.complete} complete trial{'s' if facts.complete != 1 else ''}"
    if facts.running:
        trials += (f" and {facts.running} running trial{'s' if facts.running != 1 else ''}, drawn dashed up to "
                   "their last epoch and left out of the medians")
    parts.append(trials)
    return "; ".join(parts) + "."


def _figures_to_draw(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame) -> dict:
    """name -> (builder, what the figure shows, how its median is taken, the experiment)."""
    planned = {}
    names = list(experiments.REGISTRY) + [n for n in dict.fromkeys(trials["experiment"]) if n not in experiments.REGISTRY]
    for name in names:
        for experiment, arm_epochs, arm_steps, arm_trials in _arms(epochs, steps, trials, experiment_of(name)):
            planned.update(_figures_of_arm(experiment, arm_epochs, arm_steps, arm_trials))
    return planned


def _figures_of_arm(experiment: Experiment[Any, Any], epochs: pd.DataFrame, steps: pd.DataFrame,
                    trials: pd.DataFrame) -> dict:
    """The figures of one experiment (or of one arm of it)."""
    planned: dict[str, tuple] = {}
    if not drawn_rows(epochs, experiment.name).empty:
        title = experiment.display_title()
        x_words = "the distance travelled from A⁰" if experiment.trajectory_x == "travelled" else "the epoch"
        median = _median_words(experiment)
        wanted = set(experiment.standard_figures)
        if figure_names.has_linear_trajectory(experiment) and "trajectory" in wanted:
            planned[figure_names.trajectory(experiment)] = (
                lambda e=experiment: trajectory_figure(epochs, trials, e),
                f"{title}: distance from E of all layers (y) against {x_words} (x), a panel per cell", median,
                experiment)
        if figure_names.has_linear_trajectory(experiment) and "trajectory" in wanted:
            planned[figure_names.ratio(experiment)] = (
                lambda e=experiment: ratio_figure(epochs, trials, e),
                f"{title}: distance from E over the distance travelled from A⁰ (dist_E/‖A − A⁰‖, all layers) "
                f"against the epoch, log scale, y axis shared by the panels; dash-dotted: {NOM_MIN_RATIO:g} "
                "(`NOM_MIN_RATIO`), the least ratio at which claim 5 counts Nom as leaving E at a rate comparable "
                "to the distance travelled (staying in E is judged on dist_E/‖A‖ instead, as in the log figure: "
                "round-off over a short distance travelled looks large here)", "thick lines: per series, the median "
                "over seeds at each epoch; every seed has every epoch, so the medians run the whole way", experiment)
        if "trajectory" in wanted:
            planned[figure_names.trajectory(experiment, log=True)] = (
                lambda e=experiment: trajectory_figure(epochs, trials, e, log=True),
                f"{title}: distance from E of all layers against {x_words}, log scale from the first step, y axis "
                "shared by the panels", median, experiment)
        layers = layers_of(epochs, experiment)
        if len(layers) > 1 and "layers" in wanted:
            planned[figure_names.layers(experiment)] = (
                lambda e=experiment, layers=layers: trajectory_figure(epochs, trials, e, layers=layers, log=True),
                f"{title}: distance from E of each measured layer ({', '.join(layers)}: a row each) against {x_words}"
                + (" of that layer" if experiment.trajectory_x == "travelled" else "")
                + ", log scale from the first step, y axis shared by all panels", median, experiment)
        if "training_curves" in wanted:
            planned[figure_names.training_curves(experiment)] = (
                lambda e=experiment: training_curves(epochs, trials, e),
                f"{title}: " + ", ".join(experiment.curve_metrics.values()) + " (top to bottom) on the untransformed "
                f"training data against the {experiment.row_words}",
                f"thick lines: per series, the median over seeds at each {experiment.row_words.split(' (')[0]}",
                experiment)
        if "steps" in wanted and steps_add_information(steps, experiment):
            planned[figure_names.steps(experiment)] = (
                lambda e=experiment: steps_figure(epochs, steps, trials, e),
                f"{title}: distance from E of all layers after every optimizer step, log scale; step 0 is the state "
                "before the first recorded step", "thick lines: per series, the median over seeds at each step",
                experiment)
    return planned


def make_figures(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame,
                 folder: Path, extra: dict | None = None) -> dict[str, FigureInfo]:
    """Build and save every figure the complete and running trials support; returns them by name.
    ``extra``: name -> (builder returning (figure, panels), caption), figures of measurements made after
    training (``analysis.stationary_points``)."""
    made = {}
    planned, extra = _figures_to_draw(epochs, steps, trials), extra or {}
    # matplotlib's stubs take only literal rc keys; STYLE's are checked by rc_context itself when applied.
    with rc_context(STYLE), Progress("figures", len(planned) + len(extra)) as progress:  # type: ignore[arg-type]
        for name, (build, shows, median, experiment) in planned.items():
            figure, facts = build()
            caption = f"{shows}. {_reading(facts, median, experiment)}"
            made[name] = FigureInfo(name, sum(ax.get_visible() for ax in figure.axes), caption, save(figure, folder, name),
                                    facts.complete, facts.running)
            progress.advance()
        for name, (build, caption) in extra.items():
            figure, panels = build()
            made[name] = FigureInfo(name, panels, caption + ".", save(figure, folder, name))
            progress.advance()
    return made
