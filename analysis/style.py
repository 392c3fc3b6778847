"""How every figure looks: sizes, fonts, the style of each series, axes, legends and saving.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot), so nothing
here touches global matplotlib state or leaks open figures.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from analysis.atomic import replace_atomically
from pipeline.settings import MODES

# Sizes are those of the saved figure: 7 inches is a full text width, so nothing is scaled down in print.
FIGURE_WIDTH = 7.0
NARROW_WIDTH = 4.5  # a single panel: a column-and-a-half figure rather than one stretched panel
ROW_HEIGHT = 2.3
SHORT_ROW_HEIGHT = 1.8
DPI = 300
STYLE: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "figure.titlesize": 9, "figure.labelsize": 8,
    "axes.spines.top": False, "axes.spines.right": False,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text for journals' checks and editors
}

# Okabe-Ito colours stay distinct for colour-blind readers. Each mode has its own hues, so that series of
# one mode are told apart and still read as that mode; modes the figures do not know get greys. Aug over
# the whole orbit (exact) and Aug with sampled group elements behave differently (the first stays in E), so
# they are told apart at a glance: the exact orbit in reddish purple with a circle on its median line,
# sampled Aug in vermillion and orange without.
MODE_COLOURS: dict[str, tuple[str, ...]] = {"equi": ("#0072B2", "#56B4E9"), "aug": ("#D55E00", "#E69F00"),
                                            "nom": ("#009E73", "#000000")}
EXACT_AUG_COLOURS = ("#CC79A7", "#882255")
EXACT_AUG_MARKER = "o"
OTHER_COLOURS = ("#666666", "#999999", "#333333")
# Line styles keep series apart in greyscale: each series of a figure has its own, in legend order.
DASHES = ["-", (0, (5, 2)), (0, (5, 1.5, 1, 1.5)), (0, (1.5, 1.5)), (0, (8, 2, 1, 2, 1, 2)), (0, (3, 1))]

RUN_LINE: dict[str, Any] = {"linewidth": 0.6, "alpha": 0.35}
RUNNING_LINE: dict[str, Any] = {"linewidth": 0.9, "alpha": 0.6, "linestyle": (0, (2, 1.5))}
RUNNING_END: dict[str, Any] = {"marker": "o", "markersize": 2.5, "linestyle": "none", "alpha": 0.8}
MEDIAN_LINE: dict[str, Any] = {"linewidth": 2.0}
# A median of fewer seeds than the series has (more than half: the others stopped short of that distance).
FEWER_SEEDS: dict[str, Any] = {"alpha": 0.45}
# Markers on a median line: about one every tenth of its drawn length, whatever its number of points.
MEDIAN_MARKERS: dict[str, Any] = {"markersize": 4.0, "markevery": 0.1, "markeredgewidth": 0.8, "markeredgecolor": "white"}
FLOOR_LINE: dict[str, Any] = {"color": "0.45", "linestyle": ":", "linewidth": 0.8}
BOUNDARY_LINE: dict[str, Any] = {"color": "0.3", "linestyle": (0, (4, 2)), "linewidth": 0.8}
BAND: dict[str, Any] = {"color": "0.91", "linewidth": 0, "zorder": 0}
CHANCE_LINE: dict[str, Any] = {"color": "0.5", "linestyle": (0, (1, 2)), "linewidth": 0.9}


@dataclass(frozen=True)
class SeriesStyle:
    label: str
    colour: str
    dashes: object
    marker: str | None = None  # on the median line (Aug over the exact orbit)

    def median_kwargs(self) -> dict:
        markers = {"marker": self.marker, **MEDIAN_MARKERS} if self.marker else {}
        return {"color": self.colour, "linestyle": self.dashes, **MEDIAN_LINE, **markers}

    def handle(self) -> Line2D:
        kwargs = self.median_kwargs()
        kwargs.pop("markevery", None)  # a legend's short line carries one marker
        return Line2D([], [], label=self.label, **kwargs)


def series_styles(series: list[tuple]) -> dict[str, SeriesStyle]:
    """Styles for ``(label, mode)`` or ``(label, mode, exact orbit)`` in legend order: the k-th series of a
    mode gets its k-th hue (exact-orbit Aug its own hues and a marker), the i-th series of the figure its
    i-th line style."""
    styles: dict[str, SeriesStyle] = {}
    counts: dict[tuple[str, bool], int] = {}
    for label, mode, *rest in series:
        if label in styles:
            continue
        exact = bool(rest and rest[0]) and mode == "aug"
        k = counts.get((mode, exact), 0)
        counts[(mode, exact)] = k + 1
        colours = EXACT_AUG_COLOURS if exact else MODE_COLOURS.get(mode, OTHER_COLOURS)
        styles[label] = SeriesStyle(label, colours[k % len(colours)], DASHES[len(styles) % len(DASHES)],
                                    EXACT_AUG_MARKER if exact else None)
    return styles


def mode_rank(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else len(MODES)


MAX_COLUMNS = 4  # panels side by side in a 7-inch figure before their titles and ticks collide
WRAP_COLUMNS = 3  # beyond MAX_COLUMNS, items wrap into rows of this many


def grid_columns(count: int, rows_per_item: int = 1) -> int:
    """Items side by side: all of them up to MAX_COLUMNS (four single panels as 2 x 2), else WRAP_COLUMNS."""
    if count == 4 and rows_per_item == 1:
        return 2
    return count if count <= MAX_COLUMNS else WRAP_COLUMNS


def panel_grid(count: int, rows_per_item: int = 1, sharey: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of ``count`` items, each a column of ``rows_per_item`` panels. Items wrap into blocks of at most
    ``grid_columns(count)`` columns (four single panels as 2 x 2, nine as 3 x 3), so that any number of them
    stays readable; the slots a last block leaves are not drawn. Returns the axes in the items' order,
    ``axes[r][i]`` for row r of item i, whatever block they landed in (``first_column`` tells which panels
    start a row of the figure)."""
    columns = grid_columns(count, rows_per_item)
    blocks = -(-count // columns)
    rows = rows_per_item * blocks
    width = FIGURE_WIDTH if columns > 1 else NARROW_WIDTH
    # Figures of many rows (a row per layer) stay within a page; a single panel gets the height that a wrapped
    # title and a full legend would otherwise take from it.
    height = ROW_HEIGHT if rows <= 2 else SHORT_ROW_HEIGHT
    if rows == 1 and columns == 1:
        height *= 1.4
    figure = Figure(figsize=(width, height * rows + 0.7), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = np.empty((rows_per_item, count), dtype=object)
    for item in range(count):
        block, column = divmod(item, columns)
        for r in range(rows_per_item):
            axes[r][item] = grid[block * rows_per_item + r][column]
    used = {id(ax) for ax in axes.flat}
    for ax in grid.flat:
        if id(ax) not in used:
            figure.delaxes(ax)
    if sharey:  # y shared along each row of items (a metric or a layer), as a row of panels shared it before
        for r in range(rows_per_item):
            for ax in axes[r][1:]:
                ax.sharey(axes[r][0])
                if not first_column(ax):
                    ax.tick_params(axis="y", labelleft=False)
    return figure, axes


def first_column(ax: Axes) -> bool:
    """Whether a panel starts a row of its figure (where the row's y label goes)."""
    spec = ax.get_subplotspec()
    assert spec is not None, "every panel of a figure here comes from a grid of subplots"
    return spec.colspan.start == 0


def lowest_in_columns(axes: np.ndarray | Sequence[Axes]) -> list[Axes]:
    """The panels with no panel under them in their column of the figure (where x labels go)."""
    lowest: dict[int, Any] = {}
    for ax in np.ravel(np.asarray(axes, dtype=object)):
        spec = ax.get_subplotspec()
        column = spec.colspan.start
        if column not in lowest or spec.rowspan.start > lowest[column].get_subplotspec().rowspan.start:
            lowest[column] = ax
    return list(lowest.values())


def figure_columns(axes: np.ndarray) -> int:
    """The panels side by side in the figure of ``axes``."""
    return max(ax.get_subplotspec().colspan.stop for ax in axes.flat)


def set_row_labels(axes: np.ndarray, words: list[str]) -> None:
    """Row r's y label on every panel of row r of items that starts a row of the figure."""
    for r, text in enumerate(words):
        for ax in axes[r]:
            if first_column(ax):
                ax.set_ylabel(text)


def compact_number(value: float, _position: object = None) -> str:
    """A tick label without a shared multiplier: an offset text such as ×10⁻² sits in a corner of the
    axes where it collides with neighbouring labels, so every label carries its own magnitude."""
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)) + 1e-12)
    if -3 <= exponent <= 4:
        return f"{value:g}"
    mantissa = value / 10.0**exponent
    head = "" if math.isclose(mantissa, 1.0) else f"{mantissa:.3g}" + r"\times"
    return f"${head}10^{{{exponent}}}$"


def linear_ticks(ax: Axes, axis: str = "x", integer: bool = False) -> None:
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(nbins=4, integer=integer))
    target.set_major_formatter(FuncFormatter(compact_number))


def log_axis(ax: Axes, bottom: float, top: float) -> None:
    ax.set_yscale("log")
    # Spans of ten decades would otherwise carry eighty minor ticks: clutter in print, and slow to lay out.
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())
    # Up to the next decade, so that the top of the data always has a labelled tick above it.
    ax.set_ylim(bottom, 10.0 ** math.ceil(math.log10(max(top, bottom * 10)) + 1e-9))


def decade_below(value: float) -> float:
    return 10.0 ** (math.floor(math.log10(value)) - 1)


# On a log axis exact zeros are drawn on a dotted line below every value: between two decades, so that it
# never sits on a tick and reads as that tick's value, and with no decade (no tick) between it and the bottom.
ZERO_BELOW_DECADE = 0.6  # decades below the decade under the smallest positive value
BOTTOM_BELOW_ZERO = 0.35  # decades from the zeros' line to the bottom of the axis


def zero_line_at(smallest: float) -> float:
    """Where a log axis whose smallest positive value is ``smallest`` draws exact zeros."""
    return decade_below(smallest) / 10.0**ZERO_BELOW_DECADE


def bottom_below(zero_line: float) -> float:
    """The bottom of a log axis that draws exact zeros at ``zero_line``."""
    return zero_line / 10.0**BOTTOM_BELOW_ZERO


def mark_boundary(ax: Axes, x: float, text: str = " phase 2") -> None:
    ax.axvline(x, zorder=1, **BOUNDARY_LINE)
    ax.annotate(text, xy=(x, 1.0), xycoords=("data", "axes fraction"), ha="left", va="top", color="0.3")


def title(figure: Figure, text: str) -> None:
    """The figure's title, wrapped to its width (a single panel is narrow; its title may not be)."""
    characters = int(figure.get_figwidth() * 72 / (0.56 * STYLE["figure.titlesize"]))
    figure.suptitle(textwrap.fill(text, width=characters))


def legend(figure: Figure, series: list, reading: list, heading: str = "") -> None:
    """One legend below the panels: the series in the first column, how to read the lines in the next;
    ``heading``, what every series of the figure shares (an extension arm), above them."""
    columns = 3 if figure.get_figwidth() >= FIGURE_WIDTH else 2
    rows = max(len(series), math.ceil(len(reading) / (columns - 1)))
    blocks = [block for block in [series] + [reading[i * rows:(i + 1) * rows] for i in range(columns - 1)] if block]
    # Entries fill the legend column by column: blanks keep each block in a column of its own.
    handles = [h for block in blocks for h in block + [Line2D([], [], linestyle="none", label=" ")
                                                        for _ in range(rows - len(block))]]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(blocks), frameon=False,
                  title=heading or None, title_fontsize=STYLE["legend.fontsize"])


def reading_handles(running: bool, band: str | None = None, zeros: bool = False, fewer: bool = False) -> list:
    """Legend entries that say how to read the lines (the caption says more)."""
    handles: list[Artist] = [Line2D([], [], color="0.3", label="one seed", **RUN_LINE),
               Line2D([], [], color="0.3", label="median over seeds", **MEDIAN_LINE)]
    if fewer:
        handles.append(Line2D([], [], color="0.3", label="median of the seeds that got so far (k/n: of how many)",
                              **MEDIAN_LINE, **FEWER_SEEDS))
    if running:
        handles.append(Line2D([], [], color="0.3", label="running trial (to its last epoch)",
                              **{**RUNNING_LINE, "marker": RUNNING_END["marker"], "markersize": 2.5, "markevery": [-1]}))
    if band:
        handles.append(Patch(facecolor=BAND["color"], label=band))
    if zeros:
        handles.append(Line2D([], [], label="exactly 0 (dotted line)", **FLOOR_LINE))
    return handles


def save(figure: Figure, folder: Path, name: str) -> list[Path]:
    paths = [replace_atomically(folder / f"{name}.png", lambda out: figure.savefig(out, format="png", dpi=DPI))]
    # The first save placed everything; laying out again for the PDF would only repeat that work.
    figure.set_layout_engine("none")
    paths.append(replace_atomically(folder / f"{name}.pdf", lambda out: figure.savefig(out, format="pdf")))
    return paths
