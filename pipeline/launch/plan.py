"""``pipeline plan``: what a grid will run and store, how long it takes and what it costs, before anything runs.

By default a summary by cell (the trials that differ only in their seed): trials, compute per trial, the
estimated time per trial and the hours on the chosen profile's device, the weight snapshots; totals; and,
for a SLURM profile, the job arrays that ``submit`` would make (``pipeline.launch.layout``: the same
decision, from the same code). ``--trials`` lists every trial instead. Estimates come from
``pipeline.launch.throughput`` and say what they rest on (measured, scaled by float32 peak, or assumed).
"""

from __future__ import annotations

from pipeline.experiments import Trial
from pipeline.launch import throughput
from pipeline.launch.backends import backend_of
from pipeline.launch.grid import Grid
from pipeline.launch.layout import Plan, cell_of
from pipeline.launch.profiles import Profile
from pipeline.launch.submission import plan_submission
from pipeline.trialfile.cost import format_bytes, format_flops, snapshot_bytes, snapshot_epochs, trial_flops


def _storage(trials: list[Trial], weights_every: int | None = None) -> int:
    return sum(snapshot_bytes(t.settings, weights_every) for t in trials)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes >= 90:
        return f"{minutes / 60:.1f} h"
    return f"{minutes:.2g} min" if minutes < 10 else f"{minutes:.0f} min"


def _hours(hours: float) -> str:
    return f"{hours:.1f}" if hours >= 10 else f"{hours:.2g}"


def describe(grid: Grid, profile: Profile, per_task: int | None = None, pack_seeds: bool | None = None,
             list_trials: bool = False) -> str:
    """The plan of ``grid`` on ``profile`` (a loaded cluster profile)."""
    trials = grid.trials()
    if per_task is None and grid.launch.get("trials_per_task") is not None:
        per_task = int(grid.launch["trials_per_task"])
    if pack_seeds is None:
        pack_seeds = bool(grid.launch.get("pack_seeds", False))
    plan = plan_submission(None, [t.index for t in trials], profile, per_task, None, pack_seeds, trials=trials,
                           name=grid.name)
    seconds = _estimated_seconds(plan)
    on_gpu = profile.gpus > 0
    hours_word = f"{'GPU' if on_gpu else 'CPU'}-hours"
    lines = _header(grid, trials, profile, plan)
    lines += (_trial_rows if list_trials else _cell_rows)(trials, seconds, hours_word)
    policies = sorted({t.settings.weights_every for t in trials})
    example = trials[0]
    lines += [
        "",
        f"weights policy: weights_every={','.join(map(str, policies))} -> epochs "
        f"{_epochs_text(snapshot_epochs(example.settings))} for {example.trial_id}; per-epoch snapshots "
        f"(weights_every=1) would need {format_bytes(_storage(trials, 1))}",
        f"{hours_word} are training time on one {'GPU' if on_gpu else 'CPU task'} each, start-up not counted",
    ]
    lines += backend_of(profile).plan_lines(plan, {t.index: t for t in trials})
    if not list_trials:
        lines.append("--trials lists every trial")
    return "\n".join(lines)


def _estimated_seconds(plan: Plan) -> dict[int, float]:
    """Trial index -> its estimated wall time (a packed seed's share of its pack)."""
    seconds = {}
    for array in plan.arrays:
        for task in array.tasks:
            for unit in task.units:
                for index in unit.indices:
                    seconds[index] = unit.seconds / len(unit.indices)
    return seconds


def _header(grid: Grid, trials: list[Trial], profile: Profile, plan: Plan) -> list[str]:
    """The grid, its shape, and how its time was estimated on the profile."""
    on_gpu = profile.gpus > 0
    where = (f"{profile.gpus} x {throughput.gpu_key(profile.gpu_type) or 'GPU'} per task" if on_gpu else "CPU")
    cells = list(dict.fromkeys(cell_of(t) for t in trials))
    lines = [f"grid {grid.name} ({grid.source}): {len(trials)} trials in {len(cells)} cells"]
    if grid.description:
        lines.append(f"  {grid.description}")
    lines.append(f"  {grid.shape(trials)}" + (f", with --set {' '.join(f'{k}={v}' for k, v in grid.overrides.items())}"
                                              if grid.overrides else ""))
    return lines + [f"estimates on profile {profile.name} ({profile.executor}, {where}):",
                    *(f"  {line}" for line in plan.estimates), ""]


def _trial_rows(trials: list[Trial], seconds: dict[int, float], hours_word: str) -> list[str]:
    """``plan --trials``: one row per trial, then the total."""
    width = max(22, *(len(t.trial_id) for t in trials))
    lines = [f"{'index':>5}  {'trial_id':<{width}} {'compute':>12} {'time':>9}  {'snapshots':>9}  {'weights':>9}"]
    for trial in trials:
        snapshots = snapshot_epochs(trial.settings)
        lines.append(f"{trial.index:>5}  {trial.trial_id:<{width}} {format_flops(trial_flops(trial.settings)):>12} "
                     f"{_duration(seconds[trial.index]):>9}  {len(snapshots):>9}  "
                     f"{format_bytes(snapshot_bytes(trial.settings)):>9}")
    total_flops, total_hours = _totals(trials, seconds)
    lines.append(f"total: {len(trials)} trials, {format_flops(total_flops)}, {_hours(total_hours)} {hours_word}, "
                 f"{format_bytes(_storage(trials))} of snapshots")
    return lines


def _totals(trials: list[Trial], seconds: dict[int, float]) -> tuple[float, float]:
    """A plan's compute (FLOPs) and hours, over its trials."""
    return sum(trial_flops(t.settings) for t in trials), sum(seconds.values()) / 3600


def _cell_rows(trials: list[Trial], seconds: dict[int, float], hours_word: str) -> list[str]:
    """``plan``: one row per cell, then the total."""
    cells = list(dict.fromkeys(cell_of(t) for t in trials))
    width = max(22, *(len(c) for c in cells))
    lines = [f"{'cell':<{width}} {'trials':>6} {'compute/trial':>14} {'time/trial':>11} {hours_word:>10} "
             f"{'snapshots':>10}"]
    for cell in cells:
        members = [t for t in trials if cell_of(t) == cell]
        flops = max(trial_flops(t.settings) for t in members)
        longest = max(seconds[t.index] for t in members)
        hours = sum(seconds[t.index] for t in members) / 3600
        lines.append(f"{cell:<{width}} {len(members):>6} {format_flops(flops):>14} {_duration(longest):>11} "
                     f"{_hours(hours):>10} {format_bytes(_storage(members)):>10}")
    total_flops, total_hours = _totals(trials, seconds)
    lines.append(f"{'total':<{width}} {len(trials):>6} {format_flops(total_flops):>14} {'':>11} "
                 f"{_hours(total_hours):>10} {format_bytes(_storage(trials)):>10}")
    return lines


def _epochs_text(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 8 else f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}"
