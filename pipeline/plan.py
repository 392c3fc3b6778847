"""``pipeline plan``: what a grid will run and store, before anything is submitted."""

from __future__ import annotations

import csv
from pathlib import Path

from .config import TrialConfig
from .cost import format_bytes, format_flops, passes_per_epoch, snapshot_bytes, snapshot_epochs, trial_flops
from .grid import Grid


def _storage(trials: list[TrialConfig], weights_every: int | None = None) -> int:
    return sum(snapshot_bytes(t) * len(snapshot_epochs(t, weights_every)) for t in trials)


BENCH_TABLE = Path(__file__).resolve().parent.parent / "results" / "bench" / "bench.csv"
# Published float32 peaks (vendor data sheets), used to scale a measured fraction of peak to other cards.
FP32_PEAK_TFLOPS = {"T4": 8.1, "A40": 37.4}


def measured_throughput(table: Path = BENCH_TABLE) -> dict | None:
    """From the latest `make bench`: the Experiment G roofline (GFLOP/s, fraction of matmul peak) and the
    CNN's best per-seed training throughput (images/s, packed or not)."""
    if not table.exists():
        return None
    measured = {}
    with open(table) as handle:
        for row in csv.DictReader(handle):
            measured["device"] = row["device"]
            if row["row"].startswith("1 roofline"):
                measured.update(gflops=float(row["value"]), fraction=float(row["ratio"]))
            is_cnn_phase1 = row["row"].startswith("4 cnn packing") and row["case"].startswith("phase 1")
            if is_cnn_phase1 and float(row["value"]) > measured.get("cnn_images_per_s", 0.0):
                measured.update(cnn_images_per_s=float(row["value"]), cnn_case=row["case"])
    return measured or None


def _estimates(trials: list[TrialConfig], measured: dict | None) -> list[str]:
    if measured is None:
        return ["wall time: run `make bench` once to print estimates from this machine's measured throughput"]
    lines = []
    groups = [t for t in trials if t.experiment == "groups"]
    cnn = [t for t in trials if t.experiment == "cnn"]
    if groups and "gflops" in measured:
        flops = sum(trial_flops(t) for t in groups)
        lines += [f"Experiment G at the {measured['gflops']:.0f} GFLOP/s that `make bench` measured on "
                  f"{measured['device']} ({measured['fraction']:.0%} of its float32 matmul peak): about "
                  f"{flops / (measured['gflops'] * 1e9) / 3600:.1f} hours here"]
        for card, peak in FP32_PEAK_TFLOPS.items():
            rate = peak * 1e12 * measured["fraction"]
            lines.append(f"  {card} ({peak} TFLOP/s float32 peak, at the same fraction of peak): about "
                         f"{flops / rate / 3600:.1f} GPU-hours, {flops / len(groups) / rate / 60:.1f} minutes per trial")
    if cnn and "cnn_images_per_s" in measured:
        # A trial's work in training images: every phase-1 and phase-2 row, plus one evaluation per epoch.
        images = sum(cnn_training_images(t) for t in cnn)
        lines.append(f"Experiment C at {measured['cnn_images_per_s']:.0f} training images/s per seed "
                     f"({measured['cnn_case']}, measured on {measured['device']}): about "
                     f"{images / measured['cnn_images_per_s'] / 3600:.1f} hours here; GPU figures come from "
                     "`make gpu-check` on the GPU itself (small batches do not scale with peak FLOP/s)")
    return lines


def cnn_training_images(trial: TrialConfig) -> float:
    """Training-image equivalents of a CNN trial (an evaluation image counts a third: forward only)."""
    per_epoch_eval = trial.n_samples / 3
    phase1 = trial.phase1_epochs * (trial.n_samples + per_epoch_eval)
    phase2 = trial.phase2_epochs * (trial.n_samples * passes_per_epoch(trial, 2) + per_epoch_eval)
    return phase1 + phase2


def describe(grid: Grid, measured: dict | None = None) -> str:
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
    lines += _estimates(trials, measured)
    return "\n".join(lines)


def _epochs_text(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 8 else f"{epochs[0]}, {epochs[1]}, ..., {epochs[-1]}"
