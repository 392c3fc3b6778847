"""``pipeline plan``: what a grid will run and store, before anything is submitted."""

from __future__ import annotations

from .config import TrialConfig
from .cost import format_bytes, format_flops, snapshot_bytes, snapshot_epochs, trial_flops
from .grid import Grid


def _storage(trials: list[TrialConfig], weights_every: int | None = None) -> int:
    return sum(snapshot_bytes(t) * len(snapshot_epochs(t, weights_every)) for t in trials)


def describe(grid: Grid, throughput_flops: float | None = None) -> str:
    trials = grid.trials()
    lines = [f"grid {grid.name} ({grid.source}): {len(trials)} trials"]
    if grid.description:
        lines.append(f"  {grid.description}")
    lines.append(f"  {'index':>5}  {'trial_id':<22} {'compute':>12}  {'snapshots':>9}  {'weights':>9}")
    for index, trial in enumerate(trials):
        snapshots = snapshot_epochs(trial)
        lines.append(f"  {index:>5}  {trial.trial_id:<22} {format_flops(trial_flops(trial)):>12}  "
                     f"{len(snapshots):>9}  {format_bytes(snapshot_bytes(trial) * len(snapshots)):>9}")
    total_flops = sum(trial_flops(t) for t in trials)
    policies = sorted({t.weights_every for t in trials})
    example = trials[0]
    lines += [
        "",
        f"weights policy: weights_every={','.join(map(str, policies))} -> epochs "
        f"{_epochs_text(snapshot_epochs(example))} for {example.trial_id}; "
        f"{format_bytes(_storage(trials))} of weight snapshots in all",
        f"per-epoch snapshots (weights_every=1) would need {format_bytes(_storage(trials, 1))}",
        f"compute: {format_flops(total_flops)} in all, {format_flops(total_flops / len(trials))} per trial on average",
    ]
    if throughput_flops:
        hours = total_flops / throughput_flops / 3600
        lines.append(f"at {throughput_flops / 1e9:.0f} GFLOP/s: about {hours:.1f} device-hours")
    return "\n".join(lines)


def _epochs_text(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 8 else f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}"
