"""How long a trial trains on a device: the one table of measured rates and published peaks, and the
estimates that ``plan`` prints and the launcher's time limits are made of (no torch needed).

A trial's time is its analytic compute (``pipeline.trialfile.cost``) over a sustained rate, plus a fixed cost per
epoch (the row's measurements, the HDF5 append, host copies), which dominates small trials on a fast GPU:

    seconds = FLOPs / rate + epochs * epoch_overhead

Where the rate comes from, best first, and what each is called in what ``plan`` and ``submit`` print:

- ``measured``: measured on this GPU type (or, for a CPU, on this machine): the table ``MEASURED`` below,
  each number with where it came from, or ``results/bench/gpu_rates.csv``, which ``make gpu-check``
  writes on the GPU it runs on (a row there overrides the table for its GPU type); for a CPU,
  ``results/bench/bench.csv`` from ``make bench``.
- ``scaled``: measured on another GPU type and scaled by the ratio of their float32 peaks
  (``FP32_PEAK_TFLOPS``): a lower bound on the time where small batches do not fill the slower card.
- ``assumed``: nothing measured for this experiment: a stated fraction of the device's float32 peak
  (``ASSUMED_FRACTION_OF_PEAK``), or for a CPU a stated guess.

The launcher widens a time limit the more indirect its estimate: ``MARGIN``.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline import experiments
from pipeline.settings import CommonSettings
from pipeline.trialfile.cost import trial_flops

BENCH_DIR = Path(__file__).resolve().parents[2] / "results" / "bench"
BENCH_TABLE = BENCH_DIR / "bench.csv"  # make bench, on this machine
GPU_RATES = BENCH_DIR / "gpu_rates.csv"  # make gpu-check, on the GPU it ran on

# Published float32 (non-tensor-core) peaks, TFLOP/s, from the vendors' data sheets. TF32 stays off in
# this pipeline (pipeline.core.numerics), so these are the peaks its matmuls can reach.
FP32_PEAK_TFLOPS = {
    "T4": (8.1, "NVIDIA T4 data sheet"),
    "A40": (37.4, "NVIDIA A40 data sheet"),
    "A100": (19.5, "NVIDIA A100 data sheet"),
    "H100": (67.0, "NVIDIA H100 data sheet (SXM)"),
    "H200": (67.0, "NVIDIA H200 data sheet (SXM; 60 for H200 NVL)"),
}


@dataclass(frozen=True)
class Rate:
    """A sustained training rate: per trial, or per seed of a pack when ``packed``."""

    gflops: float
    epoch_overhead_s: float
    source: str


# (GPU type, experiment, packed) -> what was measured, and where. One place for every measured number.
# The source of all three: `make gpu-check` on one NVIDIA H200, torch 2.11 + CUDA 13.0, 2026-11-28, whose
# output is in the closing note of issue 10 and summarised in the README ("On a GPU").
H200_CHECK = "make gpu-check on an H200, 2026-11-28"
MEASURED: dict[tuple[str, str, bool], Rate] = {
    # Exact-orbit Aug of rototrans (95.9 PFLOP in 42.2 min a trial) and trans (24.0 PFLOP in 10.4 min):
    # 38 TFLOP/s once the device is full. The overhead is bench row 1b: a paper-size Nom trial epoch took
    # 0.182 s against its 0.059 s gradient step. Together they give every other cell of paper-groups its
    # measured 0.13-1.34 min per trial to within 15 %.
    ("H200", "groups", False): Rate(38_000.0, 0.12, H200_CHECK),
    # paper-cnn: 180 seeds (28.2 PFLOP) in 1.49 H200-hours, 10 seeds packed per task.
    ("H200", "cnn", True): Rate(5_260.0, 0.0, f"{H200_CHECK}, 10 seeds packed"),
    # Unpacked seeds: packing gained 3.83x per seed in phase 1 and 1.63x in phase 2 at k = 8 (bench row 4),
    # about 3x over a paper trial, whose FLOPs are mostly phase 1's.
    ("H200", "cnn", False): Rate(5_260.0 / 3.0, 0.0, f"{H200_CHECK}, packed rate over the packing gain (3x)"),
}
ASSUMED_FRACTION_OF_PEAK = 0.10  # an experiment never measured on any GPU (small networks fill little of one)
DEFAULT_CPU_GFLOPS = 50.0  # a few CPU cores, before `make bench` has measured this machine
MARGIN = {"measured": 1.5, "scaled": 2.0, "assumed": 3.0}


@dataclass(frozen=True)
class Speed:
    """How fast one experiment's trials train on one device, and how that is known."""

    device: str  # a GPU type ("T4") or "cpu"
    rate: Rate
    basis: str  # "measured", "scaled" or "assumed"
    words: str  # where the number comes from, read after the basis: "scaled from H200 (...) by ..."

    @property
    def margin(self) -> float:
        return MARGIN[self.basis]


def gpu_key(gpu_type: str) -> str:
    """A profile's ``gpu_type`` or a device's name as the table names it: "t4" -> "T4", "a100-80gb" and
    "NVIDIA A100-SXM4-80GB" -> "A100", "NVIDIA H200" -> "H200"."""
    text = gpu_type.strip().upper()
    for known in sorted(FP32_PEAK_TFLOPS, key=len, reverse=True):
        if re.search(rf"(^|[^A-Z0-9]){known}", text):
            return known
    return text


def local_gpu_rates(path: Path | None = None) -> dict[tuple[str, str, bool], Rate]:
    """Rates that ``make gpu-check`` measured here (results/bench/gpu_rates.csv), by GPU type."""
    path = GPU_RATES if path is None else path
    if not path.exists():
        return {}
    rates = {}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            try:
                key = (gpu_key(row["gpu"]), row["experiment"], row["packed"] == "1")
                rates[key] = Rate(float(row["gflops"]), float(row["epoch_overhead_s"]),
                                  f"`make gpu-check` on {row['gpu']}, {row['measured_at']} ({path.name})")
            except (KeyError, ValueError):
                continue  # a row of another format is not a measurement to trust
    return rates


def bench_rates(table: Path = BENCH_TABLE) -> dict[str, dict]:
    """From the latest ``make bench`` on this machine: per experiment, the training throughput in GFLOP/s,
    where it was measured, and (for a roofline measurement) its fraction of the device's float32 peak."""
    if not table.exists():
        return {}
    measured: dict[str, dict] = {}
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


def _bench_date(table: Path) -> str:
    return dt.datetime.fromtimestamp(table.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d")


def speed(device: str, experiment: str, packed: bool = False, table: dict | None = None,
          bench: dict | None = None) -> Speed:
    """The best-founded rate of ``experiment`` on ``device`` (a GPU type, or "cpu")."""
    if device == "cpu":
        bench = bench_rates() if bench is None else bench
        found = bench.get(experiment)
        if found is not None:
            when = _bench_date(BENCH_TABLE) if BENCH_TABLE.exists() else "?"
            return Speed("cpu", Rate(found["gflops"], 0.0, f"make bench on this machine, {when}"), "measured",
                         f"by `make bench` on this machine, {when}")
        return Speed("cpu", Rate(DEFAULT_CPU_GFLOPS, 0.0, "a guess"), "assumed",
                     "as a guess for a few CPU cores (`make bench` measures this machine)")
    table = {**MEASURED, **local_gpu_rates()} if table is None else table
    rate = table.get((device, experiment, packed))
    if rate is not None:
        return Speed(device, rate, "measured", f"on {device} ({rate.source})")
    peak = FP32_PEAK_TFLOPS.get(device)
    measured_elsewhere = [(gpu, rate) for (gpu, name, was_packed), rate in table.items()
                          if name == experiment and was_packed == packed and gpu in FP32_PEAK_TFLOPS]
    if peak is not None and measured_elsewhere:
        gpu, rate = max(measured_elsewhere, key=lambda item: FP32_PEAK_TFLOPS[item[0]][0])
        ratio = peak[0] / FP32_PEAK_TFLOPS[gpu][0]
        scaled = Rate(rate.gflops * ratio, rate.epoch_overhead_s, f"{rate.source}, scaled by float32 peak")
        return Speed(device, scaled, "scaled",
                     f"from {gpu} ({rate.source}) by float32 peak, {peak[0]:g} / {FP32_PEAK_TFLOPS[gpu][0]:g} "
                     "TFLOP/s (vendor data sheets)")
    if peak is None:
        # An unknown card: assume the slowest known one rather than promise what it may not do.
        slowest = min(FP32_PEAK_TFLOPS, key=lambda k: FP32_PEAK_TFLOPS[k][0])
        fallback = speed(slowest, experiment, packed, table, bench)
        return Speed(device, fallback.rate, fallback.basis if fallback.basis == "assumed" else "scaled",
                     f"as a {slowest} (GPU type {device!r} is not in pipeline/launch/throughput.py): "
                     f"{fallback.basis} {fallback.words}")
    gflops = peak[0] * 1e3 * ASSUMED_FRACTION_OF_PEAK
    return Speed(device, Rate(gflops, 0.0, "assumed"), "assumed",
                 f"as {ASSUMED_FRACTION_OF_PEAK:.0%} of {device}'s float32 peak, {peak[0]:g} TFLOP/s ({peak[1]}): "
                 "never measured on a GPU")


def trial_seconds(settings: CommonSettings, rate: Rate) -> float:
    """Estimated wall time of one trial (one seed of a pack, when the rate is a packed one)."""
    epochs = experiments.of(settings).total_epochs(settings)
    return trial_flops(settings) / (rate.gflops * 1e9) + epochs * rate.epoch_overhead_s


def fit_rate(points: list[tuple[float, int, float]]) -> tuple[float, float]:
    """(GFLOP/s, seconds of overhead per epoch) that best explain measured trials (FLOPs, epochs,
    seconds): least squares of seconds = FLOPs / rate + epochs * overhead, both kept positive."""
    sxx = sum(f * f for f, _, _ in points)
    sxy = sum(f * e for f, e, _ in points)
    syy = sum(e * e for _, e, _ in points)
    bx = sum(f * s for f, _, s in points)
    by = sum(e * s for _, e, s in points)
    det = sxx * syy - sxy * sxy
    inverse_rate, overhead = ((bx * syy - by * sxy) / det, (sxx * by - sxy * bx) / det) if det else (0.0, 0.0)
    if inverse_rate <= 0 or overhead < 0:
        overhead = 0.0
        inverse_rate = bx / sxx if sxx else 0.0
    return (1e-9 / inverse_rate if inverse_rate > 0 else float("inf")), overhead
