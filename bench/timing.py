"""Timing helpers shared by the benchmark rows."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def best_of(function, repeats: int, device: torch.device) -> float:
    """Fastest of several timed calls after one warm-up: the least disturbed by other load."""
    function()
    return min(timed(function, device) for _ in range(repeats))
