"""The NVIDIA driver against the CUDA that torch was built for: checked where a task starts on a GPU node.

A driver serves CUDA up to a level (``cuDriverGetVersion``: 12.2 for a 535 driver, 13.0 for 580). torch
runs on a driver whose level has the same major version as its build or a later one (CUDA's minor-version
compatibility within a major version), never on an older major version: there ``torch.cuda.is_available()``
is simply False, and a task would say "no CUDA device is visible" on a node full of GPUs. This module names
the real cause and its fix in one line.

The builds the project offers (``constraints.txt``; ``constraints-cuda12.txt`` with ``make env CUDA=12``) and
the drivers they need (NVIDIA's CUDA release notes, table "CUDA Toolkit and Minimum Required Driver Version
for CUDA Minor Version Compatibility", Linux x86_64):

    CUDA 13.x builds: driver >= 580.65.06     the default torch from PyPI (2.14.1, CUDA 13.0)
    CUDA 12.x builds: driver >= 525.60.13     torch 2.14.1+cu126, for clusters whose drivers serve CUDA 12

Torch-free: the level is read from ``libcuda`` (``cuDriverGetVersion``), else from ``nvidia-smi``'s header.
"""

from __future__ import annotations

import ctypes
import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

DRIVER_FILE = Path("/proc/driver/nvidia/version")

@functools.lru_cache(maxsize=1)
def gpu_driver_version() -> str:
    """The NVIDIA kernel driver's version, from the kernel's own file (no subprocess), else nvidia-smi."""
    try:
        for word in DRIVER_FILE.read_text().split():
            if word[:1].isdigit() and word.count(".") >= 1:
                return word
    except OSError:
        pass
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
        return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# CUDA major version of a build -> the least Linux driver that runs every build of that major version.
MINIMUM_DRIVER = {13: "580.65.06", 12: "525.60.13"}
# How to get the build that a driver of a given CUDA major version runs.
BUILD_FOR = {12: "make env CUDA=12, or conda env create -f environment-cuda12.yml",
             13: "make env, or conda env create -f environment.yml"}


def parse_version(text: str | None) -> tuple[int, int] | None:
    """"13.0" -> (13, 0); "12.2" -> (12, 2); None or junk -> None."""
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


@functools.lru_cache(maxsize=1)
def driver_cuda_level() -> tuple[int, int] | None:
    """The highest CUDA version the installed driver serves, or None where there is no NVIDIA driver."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if library.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return version.value // 1000, (version.value % 1000) // 10
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"CUDA Version:\s*(\d+\.\d+)", header)
    return parse_version(found.group(1)) if found else None


@dataclass(frozen=True)
class DriverCheck:
    """The driver's CUDA level against the build's: ``ok`` False where torch cannot use the GPU for it."""

    ok: bool
    line: str


def check(build: str | None, level: tuple[int, int] | None, driver: str = "") -> DriverCheck:
    """The driver's CUDA ``level`` (and its version, ``driver``, for the words) against torch's CUDA ``build``
    ("13.0"; None or "" for a CPU-only torch)."""
    built = parse_version(build)
    named = f"driver {driver}" if driver else "the NVIDIA driver"
    if built is None:
        return DriverCheck(True, "torch is a CPU-only build: no driver needed")
    if level is None:
        return DriverCheck(True, f"no NVIDIA driver found here (torch built for CUDA {build})")
    served = f"{level[0]}.{level[1]}"
    if level[0] < built[0]:
        fix = BUILD_FOR.get(level[0])
        return DriverCheck(False, f"{named} serves CUDA {served} and this torch is built for CUDA {build}, which needs "
                                  f"a driver >= {MINIMUM_DRIVER.get(built[0], f'one for CUDA {built[0]}')}: "
                                  + (f"install the project's CUDA {level[0]} build ({fix}), or ask your site for a "
                                     "newer driver" if fix else "ask your site for a newer driver"))
    if level < built:
        return DriverCheck(True, f"{named} serves CUDA {served}, this torch is built for CUDA {build}: runs by CUDA's "
                                 "minor-version compatibility")
    return DriverCheck(True, f"{named} serves CUDA {served}; torch is built for CUDA {build}")


def check_here() -> DriverCheck:
    """:func:`check` for this machine: torch's build, the driver's level and version."""
    import torch  # deferred: torch, which this module (read by the launch layer's checks) does without

    return check(torch.version.cuda, driver_cuda_level(), gpu_driver_version())
