"""Medians over seeds that a figure can draw as one line.

Where the x axis is the epoch, every seed has a value at every epoch and the median is taken epoch by
epoch. Where it is the distance travelled, seeds reach a given distance at different epochs: taking the
median of x and of y separately at each epoch pairs the x of one seed with the y of another and draws a
curve no run follows. :func:`median_along_x` instead reads every seed at common values of x and takes the
median of y there, so that (with an odd number of seeds covering it) each point of the median lies on some
run. It is drawn over the range most seeds cover: where one seed stops early (it travelled little), the
median of the others goes on, and where a seed stops the median can step to that of the rest.
"""

from __future__ import annotations

import numpy as np


def first_passage(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points where a run first reaches a new largest x, in order.

    The distance travelled usually grows every step; where a run turns back, the later points repeat
    distances it had already reached, and keeping the first passage leaves x strictly increasing, as
    interpolation needs, without inventing points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size == 0:
        return x, y
    previous_best = np.concatenate([[-np.inf], np.maximum.accumulate(x)[:-1]])
    record = x > previous_best
    return x[record], y[record]


def median_along_x(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`median_along_x_counted` without the counts."""
    x, y, _ = median_along_x_counted(runs)
    return x, y


def median_along_x_counted(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, median, how many runs it is the median of) over runs of y at common values of x, over the range of
    x that most runs cover.

    Each run is interpolated linearly between its own points. At each x the median is taken over the runs
    that reach it, for as long as more than half of the runs do: a seed that travels little does not cut the
    others' median short, and a seed that travels far does not carry it alone. The common x values are the
    runs' own x values inside that range (and its ends), so the median has a point wherever any run has one.
    Returns empty arrays where no x is covered by more than half of the runs. Where the count changes, the
    median is that of other runs: a figure should not join the two by a vertical stroke no run makes."""
    empty = np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
    paths = [first_passage(x, y) for x, y in runs]
    paths = [(x, y) for x, y in paths if x.size]
    if not paths:
        return empty
    quorum = len(paths) // 2 + 1
    low = sorted(x[0] for x, _ in paths)[quorum - 1]  # where the quorum-th run has started
    high = sorted((x[-1] for x, _ in paths), reverse=True)[quorum - 1]  # how far the quorum-th run reaches
    if high < low:
        return empty
    # Just past the end of each run that stops inside the range, the median of the others starts.
    after_ends = [np.nextafter(x[-1], np.inf) for x, _ in paths if low <= x[-1] < high]
    grid = np.unique(np.concatenate([x[(x >= low) & (x <= high)] for x, _ in paths] + [[low, high], after_ends]))
    values = np.stack([np.where((grid >= x[0]) & (grid <= x[-1]), np.interp(grid, x, y), np.nan) for x, y in paths])
    counts = np.sum(~np.isnan(values), axis=0)
    covered = counts >= quorum
    return grid[covered], np.nanmedian(values[:, covered], axis=0), counts[covered]


def median_by_epoch(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The median over runs of y at each epoch (x, increasing within a run) that every run has."""
    runs = [(np.asarray(x), np.asarray(y, dtype=float)) for x, y in runs if len(x)]
    if not runs:
        return np.zeros(0), np.zeros(0)
    common = runs[0][0]
    for x, _ in runs[1:]:
        common = np.intersect1d(common, x)
    values = np.stack([y[np.searchsorted(x, common)] for x, y in runs])
    return common, np.median(values, axis=0)
