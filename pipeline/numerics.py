"""Numerical hygiene that the measurements depend on (SCIENCE.md section 5).

dist_E of an equivariant point is round-off (about 1e-7 relative in float32). TF32 matmuls or
convolutions on Ampere and newer GPUs (the A40) round to 10 mantissa bits and would bury it, so every
entry point calls :func:`configure` before any tensor work.
"""

from __future__ import annotations

import torch

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


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when it is there; 'cuda' without a GPU fails here rather than mid-trial."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; accepted: auto, cpu")
    return torch.device(name)
