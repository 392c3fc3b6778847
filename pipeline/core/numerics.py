"""Numerical hygiene that the measurements depend on (docs/science.md §6).

dist_E of an equivariant point is round-off (about 1e-7 relative in float32). TF32 matmuls or
convolutions on Ampere and newer GPUs (the A40) round to 10 mantissa bits and would bury it, so every
entry point calls :func:`configure` before any tensor work.
"""

from __future__ import annotations

import os

import torch

from pipeline.core import driver as nvidia_driver
from pipeline.settings import ConfigError

# Set in the tasks of a profile that requests GPUs: a trial there runs on CUDA or not at all.
REQUIRE_CUDA_VARIABLE = "PIPELINE_REQUIRE_CUDA"

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def configure(deterministic: bool = True) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def tf32_disabled() -> bool:
    return (
        not torch.backends.cuda.matmul.allow_tf32
        and not torch.backends.cudnn.allow_tf32
        and torch.get_float32_matmul_precision() == "highest"
    )


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; accepted: {', '.join(DTYPES)}")
    return DTYPES[name]


class DeviceUnavailable(ConfigError):
    """The trial cannot run where it was sent: said in one line, before any work."""


def cuda_required() -> bool:
    return os.environ.get(REQUIRE_CUDA_VARIABLE, "") == "1"


def check_cuda(why: str) -> None:
    """Raise DeviceUnavailable, saying why, unless a CUDA device can be used here."""
    if torch.version.cuda is None:
        raise DeviceUnavailable(f"{why}, but torch {torch.__version__} is a CPU-only build: install the versions "
                                "of constraints.txt (see the README's cluster section)")
    if not torch.cuda.is_available():
        driver = nvidia_driver.check_here()
        if not driver.ok:  # torch hides a driver too old for its build behind "no device": name it, and the fix
            raise DeviceUnavailable(f"{why}, but {driver.line}")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise DeviceUnavailable(f"{why}, but no CUDA device is visible here (CUDA_VISIBLE_DEVICES="
                                f"{visible if visible is not None else 'unset'}; is the NVIDIA driver loaded?)")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when it is there (and must, on a profile that requests GPUs); 'cuda' without a GPU
    fails here, before any work, rather than mid-trial or silently on the CPU."""
    if name.split(":")[0] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    if cuda_required():
        if name == "cpu":
            raise DeviceUnavailable("device=cpu, but this task's cluster profile requests GPUs: set device=auto or "
                                    "cuda, or submit with a CPU profile")
        check_cuda("this task's cluster profile requests GPUs")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        check_cuda(f"device {name!r} was requested")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"device {name!r} was requested, but only {torch.cuda.device_count()} CUDA "
                                    f"device(s) are visible; accepted: cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)
