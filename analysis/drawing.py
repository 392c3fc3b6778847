"""Drawing the runs of one panel: a thin line per seed, a thick median per series, phases in their modes.

A panel's rows are a slice of the epochs (or steps) table: ``trial_id``, ``series``, ``mode``, ``status``,
``phase``, the column that orders a run (``epoch``), and the x and y columns. Complete trials are drawn
as thin solid lines and make the medians; running trials are drawn dashed up to their last row and
never enter a median, since a median over seeds that stop at different epochs would jump where one stops.

In a multi-phase experiment the first phase trains in the experiment's ``first_phase_mode`` whatever a
trial's (later-phase) mode is, so every run's first-phase segment is drawn in that mode's style, and its
median is taken once over all the panel's runs, which share the first phase seed by seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from analysis.medians import median_along_x_counted, median_by_epoch
from analysis.style import FEWER_SEEDS, RUN_LINE, RUNNING_END, RUNNING_LINE, SeriesStyle, mode_rank, series_styles
from pipeline.experiments.base import Experiment

COMPLETE, RUNNING = "complete", "running"
DRAWN_STATUSES = (COMPLETE, RUNNING)


@dataclass
class PanelFacts:
    running: set = field(default_factory=set)  # trial ids drawn as running
    complete: set = field(default_factory=set)
    zeros: bool = False  # exact zeros were drawn on the floor of a log axis
    fewer: bool = False  # a median along x was drawn where some seeds had stopped (paler)


def _segments(run: pd.DataFrame, first_phase: bool) -> list[tuple[bool, pd.DataFrame]]:
    """(is the first phase, rows) pieces of one run; a later phase starts at the last epoch of the
    first, so that the line continues through the boundary."""
    if not first_phase or not (run["phase"] > 1).any():
        return [(first_phase and bool((run["phase"] == 1).all()), run)]
    first = run[run["phase"] == 1]
    later = run[run["phase"] > 1]
    if not first.empty:
        later = pd.concat([first.iloc[[-1]], later])
    return [(True, first), (False, later)]


def _values(rows: pd.DataFrame, x: str, y: str, floor: float | None) -> tuple[np.ndarray, np.ndarray]:
    ys = rows[y].to_numpy(dtype=float)
    if floor is not None:
        ys = np.where(ys > 0, ys, floor)
    return rows[x].to_numpy(dtype=float), ys


def draw_panel(ax: Axes, rows: pd.DataFrame, x: str, y: str, styles: dict[str, SeriesStyle],
               first_phase: SeriesStyle | None = None, along_x: bool = False, order: str = "epoch",
               floor: float | None = None, from_first_step: bool = False) -> PanelFacts:
    """Draw the panel's runs and medians. Runs are ordered by ``order``. ``along_x``: the median follows
    the runs along x (x the distance travelled); otherwise x is the order itself (epochs, steps), which
    every run shares, and the median is taken at each value. ``floor``: on a log axis, where values that
    are not positive are drawn. ``from_first_step``: leave out each run's starting point (and the median
    before the earliest first step), which the medians still use: from A⁰ ∈ E the first gradient step is
    a straight segment along which dist_E grows in proportion to the distance travelled, so interpolating
    between a run's start and its first step stays on that run."""
    facts = PanelFacts()
    rows = rows[rows["status"].isin(DRAWN_STATUSES)]
    medians: dict[tuple[bool, str], list] = {}
    first_steps = []
    for (label, trial_id), run in rows.groupby(["series", "trial_id"], sort=False):
        run = run.sort_values(order)
        complete = run["status"].iloc[0] == COMPLETE
        (facts.complete if complete else facts.running).add(trial_id)
        shown = run.iloc[1:] if from_first_step else run
        if floor is not None:
            facts.zeros |= bool((shown[y] <= 0).any())
        if complete and len(run) > 1:
            first_steps.append(float(run[x].iloc[1]))
        for in_first_phase, piece in _segments(run, first_phase is not None):
            style = first_phase if in_first_phase and first_phase is not None else styles[label]
            drawn = piece[piece.index.isin(shown.index)]
            xs, ys = _values(drawn, x, y, floor)
            ax.plot(xs, ys, color=style.colour, **(RUN_LINE if complete else RUNNING_LINE))
            if complete:
                # The first phase is shared by every series of the panel: one median over all of them.
                key = (True, "") if in_first_phase else (False, label)
                medians.setdefault(key, []).append((piece[x].to_numpy(dtype=float), piece[y].to_numpy(dtype=float)))
        if not complete and len(shown):
            # Where a running trial has got to, visible even while it has a single point to show.
            xs, ys = _values(shown.iloc[[-1]], x, y, floor)
            ax.plot(xs, ys, color=style.colour, **RUNNING_END)
    start = min(first_steps) if from_first_step and first_steps else -np.inf
    for (in_first_phase, label), runs in medians.items():
        style = first_phase if in_first_phase and first_phase is not None else styles[label]
        if along_x:
            mx, my, counts = median_along_x_counted(runs)
        else:
            mx, my = median_by_epoch(runs)
            counts = np.full(len(mx), len(runs))
        kept = mx >= start
        mx, my, counts = mx[kept], my[kept], counts[kept]
        if floor is not None:
            my = np.where(my > 0, my, floor)
        # A piece per set of seeds: where a seed stops, the median of the others is drawn apart, paler, and says
        # of how many seeds it is (the first and the last such piece of a line: more would crowd the panel).
        breaks = np.flatnonzero(np.diff(counts)) + 1
        pieces = list(zip(np.split(mx, breaks), np.split(my, breaks), np.split(counts, breaks)))
        fewer_pieces = [i for i, (_, _, c) in enumerate(pieces) if len(c) and c[0] < len(runs)]
        for i, (piece_x, piece_y, piece_counts) in enumerate(pieces):
            fewer = i in fewer_pieces
            facts.fewer |= fewer
            ax.plot(piece_x, piece_y, zorder=3, **style.median_kwargs(), **(FEWER_SEEDS if fewer else {}))
            if fewer and i in (fewer_pieces[0], fewer_pieces[-1]) and len(piece_x):
                ax.annotate(f"{piece_counts[0]}/{len(runs)}", (piece_x[0], piece_y[0]), xytext=(2, 3),
                            textcoords="offset points", fontsize=6.5, color=style.colour, zorder=4)
    return facts


def drawn_rows(table: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The rows of one experiment's complete and running trials."""
    return table[(table["experiment"] == experiment) & table["status"].isin(DRAWN_STATUSES)]


def ordered_cells(rows: pd.DataFrame, experiment: Experiment[Any, Any]) -> list[str]:
    """The cells of ``rows`` as the experiment lists them, then any others in order of appearance."""
    present = list(dict.fromkeys(rows["cell"]))
    known = [c for c in experiment.cell_names if c in present]
    return known + [c for c in present if c not in known]


def figure_styles(trials: pd.DataFrame,
                  experiment: Experiment[Any, Any]) -> tuple[dict[str, SeriesStyle], SeriesStyle | None]:
    """A style per series of the experiment's trials (in legend order: modes Equi, Aug, Nom, then the
    manifest's order), and the style of the first phase for a multi-phase experiment. Styles come from
    every trial of the manifest, so that a series keeps its style while the grid fills up."""
    mine = trials[trials["experiment"] == experiment.name]
    ranked = mine.assign(rank=mine["mode"].map(mode_rank)).sort_values(["rank", "index"], kind="stable")
    exact = [experiment.exact_orbit(mode, json.loads(text)) for mode, text in zip(ranked["mode"], ranked["settings"])]
    pairs = list(dict.fromkeys(zip(ranked["series"], ranked["mode"], exact)))
    first = experiment.first_phase_mode
    if first is None:
        return series_styles(pairs), None
    label = f"phase 1 {experiment.mode_words(first)}"
    styles = series_styles([(label, first), *pairs])
    return {k: v for k, v in styles.items() if k != label}, styles[label]
