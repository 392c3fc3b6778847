"""Training curves (loss and accuracy against epoch) and dist_E after single optimizer steps."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.drawing import PanelFacts, draw_panel, drawn_rows, figure_styles, ordered_cells
from analysis.loading import TOTAL
from analysis.style import (
    BAND,
    CHANCE_LINE,
    FLOOR_LINE,
    SeriesStyle,
    bottom_below,
    figure_columns,
    legend,
    linear_ticks,
    log_axis,
    mark_boundary,
    panel_grid,
    reading_handles,
    set_row_labels,
    title,
    zero_line_at,
)
from analysis.trajectories import DIST_E_LABEL, FigureFacts, band_tops, band_words, compress_first_phase, phase_boundary
from pipeline.experiments.base import Experiment
from pipeline.schema import ACCURACY, STEP_DIST_E


def _curve_panel(ax: Axes, panel: pd.DataFrame, metric: str, experiment: Experiment[Any, Any],
                 styles: dict[str, SeriesStyle], first_phase: SeriesStyle | None, boundary: int | None) -> PanelFacts:
    """One panel of the training curves: a series of one cell against the epoch, on a log axis where the
    experiment asks for one, the first phase compressed and its end marked as on the trajectory figures."""
    drawn = draw_panel(ax, panel, "epoch", metric, styles, first_phase)
    if metric in experiment.log_curves and (panel[metric] > 0).any():
        ax.set_yscale("log")
    elif metric in experiment.log_curves and (panel[metric].dropna() == 0).all():
        # Nothing for a log axis to show: said on the panel, not left as an empty frame.
        ax.text(0.5, 0.5, "exactly 0\nat every row", transform=ax.transAxes, ha="center", va="center",
                color="0.35")
        ax.set_yticks([0.0], ["0"])
    # The same epochs axis as the trajectory figures, so that the two read side by side.
    compressed = boundary is not None and compress_first_phase(ax, boundary, int(panel["epoch"].max()))
    if not compressed:
        linear_ticks(ax, "x", integer=True)
        if panel["epoch"].nunique() <= 3:  # a locator would add fractions between so few rows
            ax.set_xticks(sorted(set(panel["epoch"].astype(int))))
    if boundary is not None:
        mark_boundary(ax, boundary)
    return drawn


def training_curves(epochs: pd.DataFrame, trials: pd.DataFrame,
                    experiment: Experiment[Any, Any]) -> tuple[Figure, FigureFacts]:
    rows = drawn_rows(epochs, experiment.name)
    rows = rows[rows["layer"] == TOTAL]
    cells = ordered_cells(rows, experiment)
    styles, first_phase = figure_styles(trials, experiment)
    # A series no trial has (accuracy where the targets are real numbers) gets no row of panels.
    metrics = {name: words for name, words in experiment.curve_metrics.items() if rows[name].notna().any()}
    figure, axes = panel_grid(len(cells), rows_per_item=len(metrics))
    complete, running = set(), set()
    absent: list[str] = []
    chance = 1.0 / experiment.classes
    for c, cell in enumerate(cells):
        panel = rows[rows["cell"] == cell]
        boundary = phase_boundary(panel)
        for r, metric in enumerate(metrics):
            ax = axes[r][c]
            if not panel[metric].notna().any():  # no panel without a line: said in the caption instead
                ax.set_visible(False)
                absent.append(f"{metrics[metric]} of {experiment.cell_title(cell)}")
                continue
            drawn = _curve_panel(ax, panel, metric, experiment, styles, first_phase, boundary)
            complete |= drawn.complete
            running |= drawn.running
        shown = [ax for ax in axes[:, c] if ax.get_visible()]
        if shown:
            shown[0].set_title(experiment.cell_title(cell))
        if ACCURACY in metrics and axes[list(metrics).index(ACCURACY)][c].get_visible():
            accuracy = axes[list(metrics).index(ACCURACY)][c]
            accuracy.axhline(chance, zorder=1, **CHANCE_LINE)
            accuracy.set_ylim(0, 1)
    # Side by side, the full words would run into the neighbours' labels: then the label is their first words,
    # and the caption gives the rest.
    x_label = experiment.row_words if figure_columns(axes) <= 2 else experiment.row_words.split(" (")[0]
    for c in range(len(cells)):
        shown = [ax for ax in axes[:, c] if ax.get_visible()]
        if shown:
            shown[-1].set_xlabel(x_label)
    set_row_labels(axes, list(metrics.values()))
    title(figure, f"{experiment.display_title()}: {experiment.curves_title}")
    facts = FigureFacts(panels=sum(ax.get_visible() for ax in figure.axes), complete=len(complete),
                        running=len(running), compressed=any(ax.get_xscale() == "function" for ax in figure.axes),
                        absent=absent)
    present = set(rows["series"])
    handles = ([first_phase.handle()] if first_phase is not None else []) + \
              [style.handle() for label, style in styles.items() if label in present]
    reading = reading_handles(bool(running))
    reading.append(Line2D([], [], label=f"chance accuracy (1/{experiment.classes})", **CHANCE_LINE))
    legend(figure, handles, reading, experiment.legend_heading)
    return figure, facts


def step_rows(epochs: pd.DataFrame, steps: pd.DataFrame, experiment: Experiment[Any, Any]) -> pd.DataFrame:
    """Per trial, total dist_E against its optimizer steps, numbered from 1, with position 0 the state
    before the first recorded step (the last epoch before it)."""
    recorded = drawn_rows(steps, experiment.name)
    recorded = recorded[recorded["layer"] == TOTAL].sort_values(["trial_id", "step"])
    if recorded.empty:
        return recorded.assign(position=pd.Series(dtype=int))
    recorded = recorded.assign(position=recorded.groupby("trial_id").cumcount() + 1)
    start_epoch = (recorded.groupby("trial_id")["epoch"].min() - 1).rename("start_epoch")
    totals = drawn_rows(epochs, experiment.name)
    totals = totals[totals["layer"] == TOTAL].join(start_epoch, on="trial_id", how="inner")
    start = totals[totals["epoch"] == totals["start_epoch"]].assign(position=0)
    columns = ["trial_id", "cell", "series", "mode", "status", "phase", "epoch", "position", STEP_DIST_E]
    return pd.concat([start[columns], recorded[columns]], ignore_index=True)


def steps_add_information(steps: pd.DataFrame, experiment: Experiment[Any, Any]) -> bool:
    """Whether some trial recorded more than one step in an epoch: with one step per epoch (full-batch
    gradient descent) the steps repeat the epochs' figure."""
    recorded = drawn_rows(steps, experiment.name)
    recorded = recorded[recorded["layer"] == TOTAL]
    return bool(len(recorded)) and bool((recorded.groupby(["trial_id", "epoch"]).size() > 1).any())


def steps_figure(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame,
                 experiment: Experiment[Any, Any]) -> tuple[Figure, FigureFacts]:
    rows = step_rows(epochs, steps, experiment)
    cells = ordered_cells(rows, experiment)
    styles, _ = figure_styles(trials, experiment)
    figure, axes = panel_grid(len(cells), sharey=True)
    totals = drawn_rows(epochs, experiment.name)
    totals = totals[totals["layer"] == TOTAL]
    tops = {cell: band_tops(totals[totals["cell"] == cell], trials) for cell in cells}
    positive = rows.loc[rows[STEP_DIST_E] > 0, STEP_DIST_E]
    candidates = ([float(positive.min())] if len(positive) else []) + [t for _, t in tops.values() if t > 0]
    floor = zero_line_at(min(candidates) if candidates else 1e-10)
    facts = FigureFacts(panels=len(cells), complete=0, running=0, band=band_words({t for t, _ in tops.values()}))
    complete, running = set(), set()
    for ax, cell in zip(axes.flat, cells):
        panel = rows[rows["cell"] == cell]
        drawn = draw_panel(ax, panel, "position", STEP_DIST_E, styles, order="position", floor=floor)
        complete |= drawn.complete
        running |= drawn.running
        facts.zeros |= drawn.zeros
        ax.axhspan(bottom_below(floor), tops[cell][1], **BAND)
        if drawn.zeros:
            ax.axhline(floor, zorder=1, **FLOOR_LINE)
        ax.set_title(experiment.cell_title(cell))
        linear_ticks(ax, "x", integer=True)
    top = max([float(rows[STEP_DIST_E].max())] + [t for _, t in tops.values()])
    for ax in axes.flat:
        log_axis(ax, bottom_below(floor), top)
    phases = sorted(set(rows.loc[rows["position"] > 0, "phase"]))
    where = f" of phase {phases[0]}" if len(phases) == 1 else ""
    for ax in axes[-1]:
        ax.set_xlabel(f"optimizer step{where}")
    set_row_labels(axes, [DIST_E_LABEL])
    title(figure, f"{experiment.display_title()}: distance from E after every optimizer step{where}, all layers, "
          "log scale")
    present = set(rows["series"])
    handles = [style.handle() for label, style in styles.items() if label in present]
    legend(figure, handles, reading_handles(bool(running), facts.band, facts.zeros), experiment.legend_heading)
    facts.complete, facts.running = len(complete), len(running)
    return figure, facts
