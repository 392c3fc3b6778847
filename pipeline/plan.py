"""``pipeline plan``: what a grid will run and store, and about how long it takes, before anything runs.

Wall time is the analytic compute of each trial (``pipeline.cost``) over a throughput in FLOP/s: the
one ``make bench`` measured on this machine for the experiment when there is one, else a stated default.
"""

from __future__ import annotations

import csv
from pathlib import Path

from . import experiments
from .cost import format_bytes, format_flops, snapshot_bytes, snapshot_epochs, trial_flops
from .experiments import Trial

BENCH_TABLE = Path(__file__).resolve().parent.parent / "results" / "bench" / "bench.csv"
# Published float32 peaks (vendor data sheets), used to scale a measured fraction of peak to other cards.
FP32_PEAK_TFLOPS = {"T4": 8.1, "A40": 37.4}
# Before `make bench` has run: a conservative rate for a few CPU cores, so that plan always says something.
DEFAULT_GFLOPS = 50.0


def _storage(trials: list[Trial], weights_every: int | None = None) -> int:
    return sum(snapshot_bytes(t.settings, weights_every) for t in trials)


def measured_throughput(table: Path = BENCH_TABLE) -> dict[str, dict]:
    """From the latest ``make bench``: per experiment, the training throughput in GFLOP/s, where it was
    measured, and (for a roofline measurement) its fraction of the device's float32 matmul peak."""
    if not table.exists():
        return {}
    measured = {}
    with open(table) as handle:
        for row in csv.DictReader(handle):
            name, gflops = row.get("experiment", ""), row.get("gflops", "")
            if not name or not gflops:
                continue
            best = measured.get(name)
            if best is None or float(gflops) > best["gflops"]:
                fraction = float(row["ratio"]) if row["row"].startswith("1 roofline") else None
                measured[name] = {"gflops": float(gflops), "device": row["device"], "case": row["case"],
                                  "fraction": fraction}
    return measured


def _estimates(trials: list[Trial], measured: dict[str, dict]) -> list[str]:
    lines = []
    for name in experiments.REGISTRY:
        chosen = [t for t in trials if t.experiment == name]
        if not chosen:
            continue
        flops = sum(trial_flops(t.settings) for t in chosen)
        rate = measured.get(name)
        if rate is None:
            lines.append(f"{name}: about {flops / (DEFAULT_GFLOPS * 1e9) / 3600:.1f} hours at a default "
                         f"{DEFAULT_GFLOPS:.0f} GFLOP/s (a guess for a few CPU cores: run `make bench` for this "
                         "machine's measured rate)")
            continue
        lines.append(f"{name}: about {flops / (rate['gflops'] * 1e9) / 3600:.1f} hours here, at the "
                     f"{rate['gflops']:.0f} GFLOP/s that `make bench` measured on {rate['device']} ({rate['case']})")
        if rate["fraction"] is None:
            lines.append("  GPU figures come from `make gpu-check` on the GPU itself (small batches do not scale "
                         "with peak FLOP/s)")
            continue
        for card, peak in FP32_PEAK_TFLOPS.items():
            card_rate = peak * 1e12 * rate["fraction"]
            lines.append(f"  {card} ({peak} TFLOP/s float32 peak, at the same {rate['fraction']:.0%} of peak): about "
                         f"{flops / card_rate / 3600:.1f} GPU-hours, {flops / len(chosen) / card_rate / 60:.1f} "
                         "minutes per trial")
    return lines


def describe(grid, measured: dict[str, dict] | None = None) -> str:
    trials = grid.trials()
    lines = [f"grid {grid.name} ({grid.source}): {len(trials)} trials"]
    if grid.description:
        lines.append(f"  {grid.description}")
    width = max(22, *(len(t.trial_id) for t in trials))
    lines.append(f"  {'index':>5}  {'trial_id':<{width}} {'compute':>12}  {'snapshots':>9}  {'weights':>9}")
    for trial in trials:
        snapshots = snapshot_epochs(trial.settings)
        lines.append(f"  {trial.index:>5}  {trial.trial_id:<{width}} {format_flops(trial_flops(trial.settings)):>12}  "
                     f"{len(snapshots):>9}  {format_bytes(snapshot_bytes(trial.settings)):>9}")
    total_flops = sum(trial_flops(t.settings) for t in trials)
    policies = sorted({t.settings.weights_every for t in trials})
    example = trials[0]
    lines += [
        "",
        f"weights policy: weights_every={','.join(map(str, policies))} -> epochs "
        f"{_epochs_text(snapshot_epochs(example.settings))} for {example.trial_id}; "
        f"{format_bytes(_storage(trials))} of weight snapshots in all",
        f"per-epoch snapshots (weights_every=1) would need {format_bytes(_storage(trials, 1))}",
        f"compute: {format_flops(total_flops)} in all, {format_flops(total_flops / len(trials))} per trial on average",
    ]
    lines += _estimates(trials, measured if measured is not None else measured_throughput())
    return "\n".join(lines)


def _epochs_text(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 8 else f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}"
