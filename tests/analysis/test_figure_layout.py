"""Figures readable at a glance for any number of panels and seeds (analysis/style.py, curves.py, trajectories.py):
panels wrap into a grid, no text collides with other text (measured from the rendered extents), no panel is left
empty, exact zeros are drawn between ticks, and a median of fewer seeds says of how many."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg

from analysis import style
from analysis.curves import training_curves
from analysis.style import STYLE, bottom_below, panel_grid, zero_line_at
from analysis.trajectories import trajectory_figure
from pipeline import experiments

NETWORKS = ["rot", "trans", "trans1d", "rototrans", "cnn-cross", "cnn-skew", "cnn-nonunitary", "toy-z2", "toy-linear"]


def synthetic(experiment: str, cells: list[str], seeds: int, epochs: int, values) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, trials) tables as analysis.loading makes them, for complete trials whose total layer has
    ``values(cell, seed, epoch)`` -> {series: value}."""
    rows, trials = [], []
    for c, cell in enumerate(cells):
        for seed in range(seeds):
            trial_id = f"{cell}-s{seed:03d}"
            trials.append({"trial_id": trial_id, "experiment": experiment, "cell": cell, "mode": "equi",
                           "series": "Equi", "index": len(trials), "settings": json.dumps({}), "status": "complete",
                           "dtype": "float32"})
            for epoch in range(epochs):
                rows.append({"trial_id": trial_id, "experiment": experiment, "cell": cell, "mode": "equi",
                             "series": "Equi", "status": "complete", "phase": 1, "epoch": epoch, "layer": "total",
                             **values(c, seed, epoch)})
    return pd.DataFrame(rows), pd.DataFrame(trials)


def rendered_texts(figure):
    """(artist, its extent in pixels) of every piece of visible text in the figure."""
    FigureCanvasAgg(figure).draw()
    renderer = figure.canvas.get_renderer()
    candidates = [figure._suptitle, figure._supxlabel, figure._supylabel]
    for legend in figure.legends:
        candidates += [*legend.get_texts(), legend.get_title()]
    for ax in figure.axes:
        if not ax.get_visible():
            continue
        candidates += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            candidates += [tick.label1 for tick in axis._update_ticks()]  # the ticks drawn, in view
    return [(text, text.get_window_extent(renderer)) for text in candidates
            if text is not None and text.get_visible() and str(text.get_text()).strip()]


def collisions(figure) -> list[str]:
    texts = rendered_texts(figure)
    clashes = []
    for i, (a, box_a) in enumerate(texts):
        for b, box_b in texts[i + 1:]:
            overlap_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
            overlap_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
            if overlap_w > 1 and overlap_h > 1:
                clashes.append(f"{a.get_text()!r} / {b.get_text()!r}")
    width, height = figure.canvas.get_width_height()
    clipped = [t.get_text() for t, box in texts if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1]
    return clashes + [f"clipped: {text!r}" for text in clipped]


@pytest.mark.parametrize("count, shape", [(1, (1, 1)), (3, (1, 3)), (4, (2, 2)), (5, (2, 3)), (9, (3, 3)),
                                          (12, (4, 3))])
def test_panels_wrap_into_a_grid_and_no_slot_is_left_empty(count, shape):
    figure, axes = panel_grid(count)
    assert axes.shape == (1, count) and len(figure.axes) == count  # the slots a last row leaves are not drawn
    rows = {ax.get_subplotspec().rowspan.start for ax in figure.axes}
    columns = {ax.get_subplotspec().colspan.start for ax in figure.axes}
    assert (len(rows), len(columns)) == shape
    stacked, by_item = panel_grid(count, rows_per_item=3)
    assert by_item.shape == (3, count) and len(stacked.axes) == 3 * count
    side_by_side = {ax.get_subplotspec().colspan.start for ax in stacked.axes}
    assert len(side_by_side) == (count if count <= 4 else 3)  # up to four items of several rows stay in one row
    for item in range(count):  # an item's panels stay one above the other, in one column
        assert len({ax.get_subplotspec().colspan.start for ax in by_item[:, item]}) == 1


def test_nine_networks_of_training_curves_are_readable_and_empty_panels_are_not_drawn(monkeypatch):
    def values(c, seed, epoch):
        return {"loss": 2.0 / (1 + epoch + seed) + 0.1 * c, "grad_norm": 0.0 if NETWORKS[c] == "toy-linear"
                else 10.0 ** (-epoch / 10 - seed), "accuracy": np.nan if NETWORKS[c].startswith("toy")
                else 0.1 + 0.01 * epoch, "dist_E": 0.0, "dist_init": 0.1 * epoch, "norm": 1.0}

    epochs, trials = synthetic("stability", NETWORKS, 3, 51, values)
    with rc_context(STYLE):
        figure, facts = training_curves(epochs, trials, experiments.get("stability"))
        assert collisions(figure) == []
    visible = [ax for ax in figure.axes if ax.get_visible()]
    columns = {ax.get_subplotspec().colspan.start for ax in visible}
    assert len(columns) == 3 and facts.panels == len(visible) == 9 * 3 - 2  # no accuracy for the two toys
    assert facts.absent == ["training accuracy of toy-z2", "training accuracy of toy-linear"]
    for ax in visible:  # every panel drawn shows a line or says why it has none
        lines = [line for line in ax.get_lines() if np.isfinite(np.asarray(line.get_ydata(), float)).any()]
        assert lines or any("exactly 0" in t.get_text() for t in ax.texts), ax.get_title()
    # The control: nine panels in one row, as before they wrapped, collide (the check can tell).
    monkeypatch.setattr(style, "grid_columns", lambda count, rows_per_item=1: count)
    with rc_context(STYLE):
        one_row, _ = training_curves(epochs, trials, experiments.get("stability"))
        assert len(collisions(one_row)) > 10


def test_exact_zeros_are_drawn_between_ticks_never_on_one():
    def values(c, seed, epoch):  # a cell whose seeds stay exactly in E, beside ones that leave it
        return {"loss": 1.0, "accuracy": 0.5, "grad_norm": 1.0, "norm": 1.0, "dist_init": 0.1 * epoch + 0.01 * seed,
                "dist_E": 0.0 if c == 0 else 1e-9 * 10.0 ** (epoch / 2) * (1 + seed)}

    epochs, trials = synthetic("groups", ["rot", "trans"], 3, 12, values)
    with rc_context(STYLE):
        figure, facts = trajectory_figure(epochs, trials, experiments.get("groups"), log=True)
        FigureCanvasAgg(figure).draw()
    assert facts.zeros
    with_zeros = [ax for ax in figure.axes if any(line.get_linestyle() == ":" for line in ax.get_lines())]
    assert [ax.get_title() for ax in with_zeros] == ["rot: C$_4$"]
    for ax in figure.axes:  # the same level in every panel (their y axis is shared)
        zero = [line for line in with_zeros[0].get_lines() if line.get_linestyle() == ":"][0].get_ydata()[0]
        low, high = ax.get_ylim()
        ticks = [t for t in ax.get_yticks() if low <= t <= high]
        assert min(abs(math.log10(zero) - math.log10(t)) for t in ticks) >= 0.5  # half a decade from any tick
        assert all(t > zero for t in ticks)  # and no tick under it, which it could be read as
    assert zero_line_at(3e-12) < 1e-13 and bottom_below(zero_line_at(3e-12)) > 1e-14


def test_a_median_of_fewer_seeds_says_of_how_many():
    def values(c, seed, epoch):
        return {"loss": 1.0, "accuracy": 0.5, "grad_norm": 1.0, "norm": 1.0, "dist_E": 1e-3 * (1 + epoch + seed),
                "dist_init": 0.1 * epoch * (1 + seed)}  # seeds travel different distances in the same epochs

    epochs, trials = synthetic("groups", ["rot"], 3, 6, values)
    with rc_context(STYLE):
        figure, facts = trajectory_figure(epochs, trials, experiments.get("groups"))
    (ax,) = figure.axes
    assert facts.fewer and [t.get_text() for t in ax.texts] == ["2/3"]
