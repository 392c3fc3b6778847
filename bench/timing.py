"""Timing helpers shared by the benchmark rows."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def best_of(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Fastest of several timed calls after one warm-up: the least disturbed by other load."""
    function()
    return min(timed(function, device) for _ in range(repeats))
