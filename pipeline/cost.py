"""Analytic compute and storage of trials, for ``plan`` and the benchmarks.

FLOPs count multiply-adds of the linear layers and convolutions as 2 each (activations, norms and
projections are lower order). A backward pass costs twice its forward, so one training row costs
3x its forward; the per-epoch evaluation on the plain data costs one forward per sample.
"""

from __future__ import annotations

from .config import CNNTrial, GroupsTrial, TrialConfig
from .training import Augmentation

DTYPE_BYTES = {"float32": 4, "float64": 8}


def forward_flops_per_sample(trial: TrialConfig) -> int:
    if isinstance(trial, GroupsTrial):
        N, C = trial.n**2, trial.channels
        return 2 * (C * N * N + C * C * N * N + C * C * N + C * 10)
    widths = (1, *trial.channel_widths)
    sizes = (trial.image_size, trial.image_size // 2, trial.image_size // 4)
    convs = sum(2 * widths[i] * widths[i + 1] * 9 * sizes[i] ** 2 for i in range(3))
    return convs + 2 * 10 * widths[3] * sizes[2] ** 2


def group_order(trial: GroupsTrial) -> int:
    return {"rot": 4, "trans": trial.n**2, "trans1d": trial.n, "rototrans": 4 * trial.n**2}[trial.group]


def passes_per_epoch(trial: TrialConfig, phase: int = 1) -> int:
    """Training rows per epoch, as a multiple of the number of samples."""
    if isinstance(trial, GroupsTrial):
        if trial.mode != "aug":
            return 1
        augmentation = Augmentation.parse(trial.augment)
        return group_order(trial) if augmentation.kind == "orbit" else augmentation.passes
    return 4 if phase == 2 and trial.phase2_mode == "aug" else 1


def epoch_flops(trial: TrialConfig, phase: int = 1) -> int:
    forward = forward_flops_per_sample(trial) * trial.n_samples
    return 3 * forward * passes_per_epoch(trial, phase) + forward


def trial_flops(trial: TrialConfig) -> int:
    if isinstance(trial, GroupsTrial):
        return trial.epochs * epoch_flops(trial) + forward_flops_per_sample(trial) * trial.n_samples
    return trial.phase1_epochs * epoch_flops(trial, 1) + trial.phase2_epochs * epoch_flops(trial, 2)


def snapshot_bytes(trial: TrialConfig) -> int:
    if isinstance(trial, GroupsTrial):
        N, C = trial.n**2, trial.channels
        values = C * N * N + C * C * N * N + C * C * N
    else:
        widths = (1, *trial.channel_widths)
        values = sum(9 * widths[i] * widths[i + 1] for i in range(3)) + 10 * widths[3] * (trial.image_size // 4) ** 2
    return values * DTYPE_BYTES[trial.dtype]


def snapshot_epochs(trial: TrialConfig, weights_every: int | None = None) -> list[int]:
    """The epochs whose weights are stored: multiples of weights_every, the start, phase ends."""
    every = trial.weights_every if weights_every is None else weights_every
    boundaries = {0, trial.total_epochs}
    if isinstance(trial, CNNTrial):
        boundaries.add(trial.phase1_epochs)
    return [e for e in range(trial.total_epochs + 1) if e in boundaries or (every > 0 and e % every == 0)]


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


