"""Analytic compute and storage of trials, for ``plan`` and the benchmarks (no torch needed).

FLOPs count multiply-adds of the linear layers and convolutions as 2 each (activations, norms and
projections are lower order); each experiment counts its own forward pass and training rows
(``Experiment.trial_flops``). Storage is that of the weight snapshots a trial's policy keeps.
"""

from __future__ import annotations

from pipeline import experiments
from pipeline.settings import CommonSettings

DTYPE_BYTES = {"float32": 4, "float64": 8}


def trial_flops(settings: CommonSettings) -> int:
    return experiments.of(settings).trial_flops(settings)


def snapshot_bytes(settings: CommonSettings, weights_every: int | None = None) -> int:
    """Bytes of all the weight snapshots a trial keeps (a phase's snapshots hold its own model)."""
    experiment = experiments.of(settings)
    values = sum(experiment.snapshot_values(settings, experiment.phase_of(settings, epoch))
                 for epoch in snapshot_epochs(settings, weights_every))
    return values * DTYPE_BYTES[settings.dtype]


def snapshot_epochs(settings: CommonSettings, weights_every: int | None = None) -> list[int]:
    """The epochs whose weights are stored: multiples of weights_every, the start, the end of each phase."""
    experiment = experiments.of(settings)
    every = settings.weights_every if weights_every is None else weights_every
    total = experiment.total_epochs(settings)
    boundaries = {0, total, *experiment.phase_ends(settings)}
    return [e for e in range(total + 1) if e in boundaries or (every > 0 and e % every == 0)]


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n} B"


def format_flops(n: float) -> str:
    for unit in ("FLOP", "kFLOP", "MFLOP", "GFLOP", "TFLOP", "PFLOP", "EFLOP"):
        if n < 1000 or unit == "EFLOP":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n}"
