"""The paper's figures from the tidy tables: PNG (300 dpi) and PDF under stable names.

Figures show complete trials only: a thin translucent line per seed and a thick line for the median
over seeds at each epoch (for x-y plots, the median of x and the median of y at each epoch). Colours
and line styles are fixed per mode, the same in every figure. Log-scale axes draw exact zeros (Equi in
exact arithmetic) on a dotted "exactly 0" floor a decade below the smallest positive value.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot), so nothing
here touches global matplotlib state or leaks open figures.

File names (``<name>.png`` and ``<name>.pdf``), each made only when its experiment has complete trials:

- ``groups_dist_vs_travelled``: Experiment G, dist_E (all layers) against distance travelled, a panel per group.
- ``groups_dist_vs_travelled_log``: the same with a logarithmic dist_E axis.
- ``groups_dist_vs_travelled_<layer>`` (A0, A1, A2): one layer, logarithmic dist_E axis.
- ``groups_training_curves``: loss and accuracy against epoch, a column per group.
- ``cnn_dist_vs_epoch``: Experiment C, dist_E (all layers) against epoch, a column per configuration;
  top row the whole run with the phase boundary marked, bottom row phase 2 alone.
- ``cnn_phase2_steps``: dist_E after every optimizer step of phase 2 (full-batch GD: one step per epoch,
  so all phase-2 steps; SGD: the steps of the first phase-2 epoch).
- ``cnn_training_curves``: loss and accuracy against epoch, phase boundary marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator, NullLocator

from pipeline.experiments.cnn import VARIANTS as CONFIGS
from pipeline.experiments.groups import GROUP_NAMES
from pipeline.settings import MODES

from .atomic import replace_atomically
from .loading import TOTAL

# Okabe-Ito colours stay distinct for colour-blind readers; line styles keep modes apart in greyscale.
MODE_COLOURS = {"equi": "#0072B2", "aug": "#D55E00", "nom": "#009E73"}
MODE_LINESTYLES = {"equi": "-", "aug": "--", "nom": "-."}
MODE_NAMES = {"equi": "Equi", "aug": "Aug", "nom": "Nom"}
GROUP_TITLES = {"rot": r"rot: C$_4$", "trans": r"trans: $\mathbb{Z}_n^2$",
                "trans1d": r"trans1d: $\mathbb{Z}_n$ along x", "rototrans": r"rototrans: C$_4$ and $\mathbb{Z}_n^2$"}
CONFIG_TITLES = {"cross": "cross\ncompatible, unitary", "skew": "skew\nincompatible support",
                 "nonunitary": "nonunitary\nnon-orthogonal basis"}

# Sizes are those of the saved figure: 7 inches is a full text width, so nothing is scaled down in print.
FIGURE_WIDTH = 7.0
NARROW_WIDTH = 4.5  # a single panel: a column-and-a-half figure rather than one stretched panel
ROW_HEIGHT = 2.3
DPI = 300
STYLE = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "figure.titlesize": 9, "figure.labelsize": 8,
    "axes.spines.top": False, "axes.spines.right": False,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text for journals' checks and editors
}
RUN_LINE = {"linewidth": 0.6, "alpha": 0.35}
MEDIAN_LINE = {"linewidth": 2.0}
FLOOR_LINE = {"color": "0.45", "linestyle": ":", "linewidth": 0.8}
BOUNDARY_LINE = {"color": "0.3", "linestyle": (0, (4, 2)), "linewidth": 0.8}

DIST_E_LABEL = r"dist$_E$ = $\|A - \Pi_E A\|_F$"
TRAVELLED_LABEL = r"distance travelled $\|A - A^0\|_F$"


@dataclass
class FigureInfo:
    name: str
    panels: int
    caption: str
    paths: list[Path] = field(default_factory=list)


def _complete_rows(epochs: pd.DataFrame, trials: pd.DataFrame, experiment: str) -> pd.DataFrame:
    complete = trials.loc[(trials["status"] == "complete") & (trials["experiment"] == experiment), "trial_id"]
    return epochs[epochs["trial_id"].isin(set(complete))]


def _grid(count: int, rows_per_item: int = 1) -> tuple[Figure, list[list]]:
    """A figure with ``count`` columns of ``rows_per_item`` panels; four single panels wrap to 2 x 2."""
    if rows_per_item == 1 and count == 4:
        rows, columns = 2, 2
    else:
        rows, columns = rows_per_item, count
    width = FIGURE_WIDTH if columns > 1 else NARROW_WIDTH
    figure = Figure(figsize=(width, ROW_HEIGHT * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _log_floor(values: pd.Series) -> float:
    positive = values[values > 0]
    if positive.empty:
        return 1e-10
    return 10.0 ** (math.floor(math.log10(positive.min())) - 1)


def _floored(values: np.ndarray, floor: float | None) -> np.ndarray:
    return values if floor is None else np.where(values > 0, values, floor)


def _draw_runs(ax, rows: pd.DataFrame, x: str, y: str, floor: float | None = None, x_offset: float = 0) -> None:
    """Thin line per trial and thick median over trials at each epoch, per mode."""
    for mode in MODES:
        runs = rows[rows["mode"] == mode]
        if runs.empty:
            continue
        colour = MODE_COLOURS[mode]
        for _, run in runs.groupby("trial_id", sort=False):
            run = run.sort_values("epoch")
            ax.plot(run[x].to_numpy() - x_offset, _floored(run[y].to_numpy(), floor), color=colour, **RUN_LINE)
        y_wide = runs.pivot_table(index="epoch", columns="trial_id", values=y, aggfunc="first")
        median_y = y_wide.median(axis=1).to_numpy()
        if x == "epoch":
            median_x = y_wide.index.to_numpy()
        else:
            median_x = runs.pivot_table(index="epoch", columns="trial_id", values=x, aggfunc="first").median(axis=1)
            median_x = median_x.to_numpy()
        ax.plot(median_x - x_offset, _floored(median_y, floor), color=colour, linestyle=MODE_LINESTYLES[mode],
                zorder=3, **MEDIAN_LINE)
    if floor is not None:
        _log_axis(ax, floor)


def _log_axis(ax, floor: float) -> None:
    ax.set_yscale("log")
    # Spans of ten decades would otherwise carry eighty minor ticks: clutter in print, and slow to lay out.
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.axhline(floor, zorder=1, **FLOOR_LINE)
    # Up to the next decade, so that the top of the data always has a labelled tick above it.
    top = max(ax.dataLim.y1, floor) if np.isfinite(ax.dataLim.y1) else floor
    ax.set_ylim(floor / 3, 10.0 ** math.ceil(math.log10(top) + 1e-9))


def _mark_phase_boundary(ax, epoch: int) -> None:
    ax.axvline(epoch, zorder=1, **BOUNDARY_LINE)
    ax.annotate(" phase 2", xy=(epoch, 1.0), xycoords=("data", "axes fraction"), ha="left", va="top", color="0.3")


def _legend(figure: Figure, modes, mode_names: dict, log_floor: bool) -> None:
    handles = [Line2D([], [], color=MODE_COLOURS[m], linestyle=MODE_LINESTYLES[m], label=mode_names[m], **MEDIAN_LINE)
               for m in MODES if m in set(modes)]
    handles += [Line2D([], [], color="0.3", label="one seed", **RUN_LINE),
                Line2D([], [], color="0.3", label="median over seeds", **MEDIAN_LINE)]
    if log_floor:
        handles.append(Line2D([], [], label="exactly 0 (drawn at the floor)", **FLOOR_LINE))
    if figure.get_figwidth() < FIGURE_WIDTH:
        columns = 2
    else:
        columns = len(handles) if len(handles) <= 5 else math.ceil(len(handles) / 2)
    figure.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False)


def _label(axes, xlabel: str | None, ylabels) -> None:
    """x labels on the bottom row, y labels on the left column: the panels of a row or column share them.

    (Figure-level ``supxlabel`` would be neater but collides with a legend outside the axes.)
    """
    for r, row in enumerate(axes):
        row[0].set_ylabel(ylabels if isinstance(ylabels, str) else ylabels[r])
    if xlabel:
        for ax in axes[-1]:
            ax.set_xlabel(xlabel)


def _ticks(ax, integer: bool = False) -> None:
    """Few x ticks, in scientific notation when small, so that narrow panels' labels never collide."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=integer))
    if not integer:
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4), useMathText=True)


def _group_mode_names(trials: pd.DataFrame) -> dict:
    augments = sorted(set(trials.loc[(trials["experiment"] == "groups") & (trials["mode"] == "aug"), "augment"]))
    return {**MODE_NAMES, "aug": f"Aug ({'/'.join(augments)})" if augments else "Aug"}


CNN_MODE_NAMES = {**MODE_NAMES, "aug": "Aug in phase 2 (C4 orbit)", "nom": "Nom in phase 2"}


# -- Experiment G -------------------------------------------------------------------------------------

def groups_dist_vs_travelled(epochs: pd.DataFrame, trials: pd.DataFrame, layer: str = TOTAL,
                             log: bool = False) -> Figure:
    rows = _complete_rows(epochs, trials, "groups")
    rows = rows[rows["layer"] == layer]
    groups = [g for g in GROUP_NAMES if g in set(rows["group"])]
    figure, axes = _grid(len(groups))
    floor = _log_floor(rows["dist_E"]) if log else None
    for ax, group in zip(np.ravel(axes), groups):
        _draw_runs(ax, rows[rows["group"] == group], "dist_init", "dist_E", floor)
        ax.set_title(GROUP_TITLES.get(group, group))
        ax.set_xlim(left=0)
        _ticks(ax)
        if not log:
            ax.set_ylim(bottom=0)
    which = "all layers" if layer == TOTAL else f"layer {layer}"
    _label(axes, TRAVELLED_LABEL, DIST_E_LABEL)
    figure.suptitle(f"Experiment G: distance from E against distance travelled, {which}"
                    + (", log scale" if log else ""))
    _legend(figure, rows["mode"], _group_mode_names(trials), log)
    return figure


def training_curves(epochs: pd.DataFrame, trials: pd.DataFrame, experiment: str) -> Figure:
    rows = _complete_rows(epochs, trials, experiment)
    rows = rows[rows["layer"] == TOTAL]
    column, order, titles = (("group", GROUP_NAMES, GROUP_TITLES) if experiment == "groups"
                             else ("config", tuple(CONFIGS), CONFIG_TITLES))
    settings = [s for s in order if s in set(rows[column])]
    figure, axes = _grid(len(settings), rows_per_item=2)
    for c, setting in enumerate(settings):
        panel = rows[rows[column] == setting]
        for r, metric in enumerate(("loss", "accuracy")):
            ax = axes[r][c]
            _draw_runs(ax, panel, "epoch", metric)
            _ticks(ax, integer=True)
            if experiment == "cnn":
                _mark_phase_boundary(ax, _phase1_epochs(trials, setting))
        axes[0][c].set_title(titles.get(setting, setting))
    _label(axes, "epoch", ["training loss", "training accuracy"])
    name = "Experiment G" if experiment == "groups" else "Experiment C"
    figure.suptitle(f"{name}: loss and accuracy on the training data")
    names = _group_mode_names(trials) if experiment == "groups" else CNN_MODE_NAMES
    _legend(figure, rows["mode"], names, log_floor=False)
    return figure


# -- Experiment C -------------------------------------------------------------------------------------

def _phase1_epochs(trials: pd.DataFrame, config: str) -> int:
    return int(trials.loc[(trials["experiment"] == "cnn") & (trials["config"] == config), "phase1_epochs"].max())


def cnn_dist_vs_epoch(epochs: pd.DataFrame, trials: pd.DataFrame) -> Figure:
    rows = _complete_rows(epochs, trials, "cnn")
    rows = rows[rows["layer"] == TOTAL]
    configs = [c for c in CONFIGS if c in set(rows["config"])]
    figure, axes = _grid(len(configs), rows_per_item=2)
    floor = _log_floor(rows["dist_E"])
    for c, config in enumerate(configs):
        panel = rows[rows["config"] == config]
        boundary = _phase1_epochs(trials, config)
        _draw_runs(axes[0][c], panel, "epoch", "dist_E", floor)
        _mark_phase_boundary(axes[0][c], boundary)
        _draw_runs(axes[1][c], panel[panel["epoch"] >= boundary], "epoch", "dist_E", floor, x_offset=boundary)
        axes[0][c].set_title(CONFIG_TITLES.get(config, config))
        axes[0][c].set_xlabel("epoch")
        axes[1][c].set_xlabel("epoch of phase 2")
        for ax in (axes[0][c], axes[1][c]):
            _ticks(ax, integer=True)
    _label(axes, None, [DIST_E_LABEL + "\nwhole run", DIST_E_LABEL + "\nphase 2"])
    figure.suptitle("Experiment C: distance from E of all layers against epoch, log scale")
    _legend(figure, rows["mode"], CNN_MODE_NAMES, log_floor=True)
    return figure


def _phase2_step_rows(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame,
                      config: str) -> tuple[pd.DataFrame, bool]:
    """Per trial of ``config``, dist_E (total) against step number, step 0 being the start of phase 2;
    and whether these are all phase-2 steps (full-batch GD) rather than the first epoch's (SGD)."""
    members = trials[(trials["experiment"] == "cnn") & (trials["config"] == config) & (trials["status"] == "complete")]
    optimizers = set(members["phase2_optimizer"])
    all_steps = optimizers == {"gd"}
    boundary = _phase1_epochs(trials, config)
    chosen = steps[(steps["trial_id"].isin(set(members["trial_id"]))) & (steps["layer"] == TOTAL)]
    if not all_steps:
        chosen = chosen[chosen["epoch"] == boundary + 1]
    chosen = chosen.assign(position=(chosen["step"] if all_steps else chosen["step_in_epoch"]) + 1)
    start = epochs[(epochs["trial_id"].isin(set(chosen["trial_id"]))) & (epochs["layer"] == TOTAL)
                   & (epochs["epoch"] == boundary)].assign(position=0)
    columns = ["trial_id", "mode", "position", "dist_E"]
    table = pd.concat([start[columns], chosen[columns]], ignore_index=True)
    # _draw_runs orders and aligns runs by "epoch": here that is the step number.
    return table.rename(columns={"position": "epoch"}), all_steps


def cnn_phase2_steps(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame) -> Figure:
    complete = set(trials.loc[trials["status"] == "complete", "trial_id"])
    configs = [c for c in CONFIGS if c in set(steps.loc[steps["trial_id"].isin(complete), "config"])]
    tables = {config: _phase2_step_rows(epochs, steps, trials, config) for config in configs}
    figure, axes = _grid(len(configs))
    floor = _log_floor(pd.concat([t["dist_E"] for t, _ in tables.values()]))
    notes = set()
    for ax, config in zip(np.ravel(axes), configs):
        table, all_steps = tables[config]
        notes.add("full-batch GD has one step per epoch: all phase-2 steps are shown" if all_steps
                  else "SGD: the steps of the first phase-2 epoch are shown")
        _draw_runs(ax, table, "epoch", "dist_E", floor)
        ax.set_title(CONFIG_TITLES.get(config, config))
        ax.set_xlabel("step of phase 2" if all_steps else "step in the first phase-2 epoch")
        _ticks(ax, integer=True)
    _label(axes, None, DIST_E_LABEL)
    figure.suptitle("Experiment C: distance from E after every optimizer step of phase 2, log scale\n"
                    + "; ".join(sorted(notes)) + "; step 0 is the start of phase 2")
    _legend(figure, pd.concat([t["mode"] for t, _ in tables.values()]), CNN_MODE_NAMES, log_floor=True)
    return figure


# -- all of them ----------------------------------------------------------------------------------------

def save(figure: Figure, folder: Path, name: str) -> list[Path]:
    paths = [replace_atomically(folder / f"{name}.png", lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))]
    # The first save placed everything; laying out again for the PDF would only repeat that work.
    figure.set_layout_engine("none")
    paths.append(replace_atomically(folder / f"{name}.pdf", lambda tmp: figure.savefig(tmp, format="pdf")))
    return paths


def make_figures(epochs: pd.DataFrame, steps: pd.DataFrame, trials: pd.DataFrame,
                 folder: Path) -> dict[str, FigureInfo]:
    """Build and save every figure the complete trials support; returns them by name."""
    complete = trials[trials["status"] == "complete"]
    counts = {e: int((complete["experiment"] == e).sum()) for e in ("groups", "cnn")}
    # name -> (builder, what it shows); the caption adds how to read the lines
    planned = {}
    if counts["groups"]:
        planned["groups_dist_vs_travelled"] = (
            lambda: groups_dist_vs_travelled(epochs, trials),
            "Experiment G: dist_E of all layers (y) against the distance travelled from A⁰ (x), one panel per group")
        planned["groups_dist_vs_travelled_log"] = (
            lambda: groups_dist_vs_travelled(epochs, trials, log=True),
            "the same with a logarithmic y axis; exact zeros on the dotted floor")
        layers = _complete_rows(epochs, trials, "groups")["layer"].unique()
        for layer in [layer for layer in layers if layer != TOTAL]:
            planned[f"groups_dist_vs_travelled_{layer}"] = (
                lambda layer=layer: groups_dist_vs_travelled(epochs, trials, layer=layer, log=True),
                f"Experiment G, layer {layer}: dist_E against distance travelled, log scale")
        planned["groups_training_curves"] = (lambda: training_curves(epochs, trials, "groups"),
                                             "Experiment G: training loss and accuracy against epoch")
    if counts["cnn"]:
        planned["cnn_dist_vs_epoch"] = (
            lambda: cnn_dist_vs_epoch(epochs, trials),
            "Experiment C: dist_E of all layers against epoch, log scale; top the whole run (phase boundary "
            "dashed), bottom phase 2")
        if steps["trial_id"].isin(set(complete["trial_id"])).any():
            planned["cnn_phase2_steps"] = (
                lambda: cnn_phase2_steps(epochs, steps, trials),
                "Experiment C: dist_E after every optimizer step of phase 2 (full-batch GD: one step per epoch, "
                "all phase-2 steps; SGD: the first phase-2 epoch)")
        planned["cnn_training_curves"] = (
            lambda: training_curves(epochs, trials, "cnn"),
            "Experiment C: training loss and accuracy against epoch, phase boundary dashed")

    made = {}
    with rc_context(STYLE):
        for name, (build, shows) in planned.items():
            figure = build()
            caption = (f"{shows}; thin lines single seeds, thick lines the median over seeds "
                       f"({counts['cnn' if name.startswith('cnn') else 'groups']} complete trials)")
            made[name] = FigureInfo(name, len(figure.axes), caption, save(figure, folder, name))
    return made
