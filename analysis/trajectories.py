"""Trajectory figures: the distance from E against the distance travelled or the epoch, a panel per cell.

Log figures start at the first step: at epoch 0 every run sits at A⁰ ∈ E, where dist_E is zero or
round-off, and drawing that point would open every curve with a ramp across ten decades. They share
their y axis, so that round-off in one panel never looks like a departure in another, and shade the
round-off band: dist_E ≤ ``ROUNDOFF_THRESHOLD`` · ‖A‖, which the verdicts count as "in E".

In an experiment whose x is the epoch and whose first phase is much longer than the later ones (the CNN:
250 Equi epochs, then 50), the first phase is drawn compressed to a third of the width, so that the
phase the claims are about is not squeezed into a corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator
from numpy.typing import ArrayLike

from analysis.claims import NOM_MIN_RATIO, roundoff_threshold
from analysis.drawing import draw_panel, drawn_rows, figure_styles, ordered_cells
from analysis.loading import TOTAL
from analysis.style import (
    BAND,
    FLOOR_LINE,
    bottom_below,
    compact_number,
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
from pipeline.experiments.base import Experiment
from pipeline.schema import DIST_E, DIST_INIT, ROW_EPOCH

X_COLUMNS = {"travelled": DIST_INIT, "epoch": ROW_EPOCH}
X_LABELS = {"travelled": r"distance travelled $\|A - A^0\|_F$", "epoch": "epoch"}
X_WORDS = {"travelled": "distance travelled", "epoch": "epoch"}
DIST_E_LABEL = r"dist$_E$ = $\|A - \Pi_E A\|_F$"
RATIO_LABEL = r"dist$_E$ / $\|A - A^0\|_F$"
THRESHOLD_LINE: dict[str, Any] = {"color": "0.35", "linestyle": (0, (6, 2, 1, 2)), "linewidth": 0.9}
# A first phase longer than the rest is drawn over this share of the panel's width.
COMPRESSED_SHARE = 1 / 3


@dataclass
class FigureFacts:
    """What a figure shows beyond its title: for its caption and for tests."""

    panels: int
    complete: int
    running: int
    band: str = ""  # the round-off band's legend text, if drawn
    zeros: bool = False
    compressed: bool = False
    fewer: bool = False  # medians along x drawn where some seeds had stopped
    absent: list[str] = field(default_factory=list)  # panels not drawn, for want of data: "accuracy of toy-linear"


def phase_boundary(panel: pd.DataFrame) -> int | None:
    """The last epoch of the first phase, if the panel's runs have a later phase."""
    if not (panel["phase"] > 1).any():
        return None
    first = panel.loc[panel["phase"] == 1, "epoch"]
    return int(first.max()) if not first.empty else None


def compress_first_phase(ax: Axes, boundary: int, last: int) -> bool:
    """Draw epochs 0..boundary over COMPRESSED_SHARE of the width when the first phase is the longer."""
    later = last - boundary
    if boundary <= 0 or later <= 0 or boundary <= later:
        return False
    scale = COMPRESSED_SHARE / (1 - COMPRESSED_SHARE) * later / boundary

    def forward(x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return np.where(x <= boundary, x * scale, boundary * scale + (x - boundary))

    def inverse(u: ArrayLike) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        return np.where(u <= boundary * scale, u / scale, u - boundary * scale + boundary)

    ax.set_xscale("function", functions=(forward, inverse))
    # Not so close to the boundary's own tick that their labels touch.
    later_ticks = [t for t in MaxNLocator(nbins=3, integer=True).tick_values(boundary, last)
                   if boundary + later / 4 < t <= last]
    ax.xaxis.set_major_locator(FixedLocator([0, boundary, *later_ticks]))
    ax.xaxis.set_major_formatter(FuncFormatter(compact_number))
    return True


def band_tops(rows: pd.DataFrame, trials: pd.DataFrame) -> tuple[float, float]:
    """(threshold, threshold x median ‖A‖) of a panel's rows: the top of its round-off band."""
    dtypes = trials.set_index("trial_id")["dtype"].reindex(rows["trial_id"].unique()).dropna()
    threshold = roundoff_threshold(dtypes)
    return threshold, threshold * float(np.nanmedian(rows["norm"])) if len(rows) else threshold


def band_words(thresholds: set[float]) -> str:
    if len(thresholds) == 1:
        return fr"round-off, in E: ≤ {compact_number(thresholds.pop())}·‖A‖"
    return "round-off, in E (per dtype)"


def _trajectory_axes(ax: Axes, panel: pd.DataFrame, x_kind: str) -> bool:
    """A trajectory panel's x axis: against the epoch, a long first phase compressed and its end marked; whether
    it was compressed."""
    boundary = phase_boundary(panel) if x_kind == "epoch" else None
    compressed = boundary is not None and compress_first_phase(ax, boundary, int(panel["epoch"].max()))
    if boundary is not None:
        mark_boundary(ax, boundary)
    if not compressed:
        linear_ticks(ax, "x", integer=x_kind == "epoch")
    return compressed


def trajectory_figure(epochs: pd.DataFrame, trials: pd.DataFrame, experiment: Experiment[Any, Any],
                      layers: Sequence[str] = (TOTAL,), log: bool = False) -> tuple[Figure, FigureFacts]:
    """A column per cell and a row per layer (one row, ``total``, for all layers together)."""
    rows = drawn_rows(epochs, experiment.name)
    rows = rows[rows["layer"].isin(layers)]
    cells = ordered_cells(rows, experiment)
    styles, first_phase = figure_styles(trials, experiment)
    x_kind = experiment.trajectory_x if experiment.trajectory_x in X_COLUMNS else "epoch"
    x = X_COLUMNS[x_kind]
    figure, axes = panel_grid(len(cells), rows_per_item=len(layers), sharey=log)
    panels = [(layer, cell, rows[(rows["layer"] == layer) & (rows["cell"] == cell)]) for layer in layers for cell in cells]
    floor: float | None = None
    tops: dict[tuple[str, str], tuple[float, float]] = {}
    if log:
        tops = {(layer, cell): band_tops(panel, trials) for layer, cell, panel in panels}
        positive = rows.loc[(rows[DIST_E] > 0) & (rows[ROW_EPOCH] > 0), DIST_E]
        candidates = ([float(positive.min())] if len(positive) else []) + [t for _, t in tops.values() if t > 0]
        floor = zero_line_at(min(candidates) if candidates else 1e-10)
    facts = FigureFacts(panels=len(panels), complete=0, running=0)
    complete, running = set(), set()
    for ax, (layer, cell, panel) in zip(axes.flat, panels):
        drawn = draw_panel(ax, panel, x, DIST_E, styles, first_phase, along_x=x_kind == "travelled", floor=floor,
                           from_first_step=log)
        complete |= drawn.complete
        running |= drawn.running
        facts.zeros |= drawn.zeros
        facts.fewer |= drawn.fewer
        facts.compressed |= _trajectory_axes(ax, panel, x_kind)
        if floor is not None:  # a log scale
            ax.axhspan(bottom_below(floor), tops[layer, cell][1], **BAND)
            if drawn.zeros:
                ax.axhline(floor, zorder=1, **FLOOR_LINE)
        else:
            linear_ticks(ax, "y")
            ax.set_ylim(bottom=0)
            if x_kind == "travelled":
                ax.set_xlim(left=0)
    if floor is not None:
        top = max([float(rows[DIST_E].max()) if len(rows) else floor * 10] + [t for _, t in tops.values()])
        for ax in axes.flat:
            log_axis(ax, bottom_below(floor), top)
        facts.band = band_words({threshold for threshold, _ in tops.values()})
    facts.complete, facts.running = len(complete), len(running)
    titled = axes[0] if len(layers) > 1 else axes.flat
    for ax, cell in zip(titled, cells):
        ax.set_title(experiment.cell_title(cell))
    # Under narrow panels the notation would run into the neighbours' labels; the caption gives it.
    x_label = X_LABELS[x_kind] if figure_columns(axes) <= 2 else X_WORDS[x_kind]
    for ax in axes[-1]:
        ax.set_xlabel(x_label)
    if x_kind == "epoch":
        # Every row of a column counts the same epochs: their numbers once, under the bottom row.
        for ax in axes[:-1].flat:
            ax.tick_params(axis="x", labelbottom=False)
    set_row_labels(axes, [DIST_E_LABEL] if len(layers) == 1 else [f"{layer}: dist$_E$" for layer in layers])
    which = "all layers" if list(layers) == [TOTAL] else "per layer" if len(layers) > 1 else f"layer {layers[0]}"
    title(figure, f"{experiment.display_title()}: distance from E against {X_WORDS[x_kind]}, {which}"
          + (", log scale" if log else ""))
    present = set(rows["series"])
    handles = ([first_phase.handle()] if first_phase is not None else []) + \
              [style.handle() for label, style in styles.items() if label in present]
    legend(figure, handles, reading_handles(facts.running > 0, facts.band or None, facts.zeros, facts.fewer),
           experiment.legend_heading)
    return figure, facts


def layers_of(epochs: pd.DataFrame, experiment: Experiment[Any, Any]) -> list[str]:
    """The measured layers of an experiment's drawn trials, in the order the files list them."""
    rows = drawn_rows(epochs, experiment.name)
    return [layer for layer in dict.fromkeys(rows["layer"]) if layer != TOTAL]



def ratio_figure(epochs: pd.DataFrame, trials: pd.DataFrame, experiment: Experiment[Any, Any]) -> tuple[Figure, FigureFacts]:
    """dist_E over the distance travelled from A⁰ (all layers) against the epoch, a panel per cell, log scale,
    shared y axis. Every seed has every epoch, so its medians run the whole way, however far each seed went;
    the ratio is what claim 5 judges Nom by, and its threshold is drawn."""
    rows = drawn_rows(epochs, experiment.name)
    rows = rows[(rows["layer"] == TOTAL) & (rows["epoch"] > 0)]
    moved = rows[DIST_INIT] > 0
    rows = rows.assign(ratio=(rows[DIST_E] / rows[DIST_INIT].where(moved)).fillna(0.0))
    cells = ordered_cells(rows, experiment)
    styles, first_phase = figure_styles(trials, experiment)
    figure, axes = panel_grid(len(cells), sharey=True)
    positive = rows.loc[rows["ratio"] > 0, "ratio"]
    floor = zero_line_at(min([float(positive.min())] if len(positive) else [NOM_MIN_RATIO]))
    facts = FigureFacts(panels=len(cells), complete=0, running=0)
    complete, running = set(), set()
    for ax, cell in zip(axes.flat, cells):
        drawn = draw_panel(ax, rows[rows["cell"] == cell], "epoch", "ratio", styles, first_phase, floor=floor)
        complete |= drawn.complete
        running |= drawn.running
        facts.zeros |= drawn.zeros
        ax.axhline(NOM_MIN_RATIO, zorder=1, **THRESHOLD_LINE)
        if drawn.zeros:
            ax.axhline(floor, zorder=1, **FLOOR_LINE)
        linear_ticks(ax, "x", integer=True)
        ax.set_title(experiment.cell_title(cell))
    top = max([float(rows["ratio"].max()) if len(rows) else 1.0, 1.0])
    for ax in axes.flat:
        log_axis(ax, bottom_below(floor), top)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    set_row_labels(axes, [RATIO_LABEL])
    title(figure, f"{experiment.display_title()}: distance from E over distance travelled, against epoch, all "
          "layers, log scale")
    facts.complete, facts.running = len(complete), len(running)
    present = set(rows["series"])
    handles = ([first_phase.handle()] if first_phase is not None else []) + \
              [style.handle() for label, style in styles.items() if label in present]
    reading = reading_handles(bool(running), None, facts.zeros)
    reading.append(Line2D([], [], label=f"claim 5: Nom at least {NOM_MIN_RATIO:g}", **THRESHOLD_LINE))
    legend(figure, handles, reading, experiment.legend_heading)
    return figure, facts
