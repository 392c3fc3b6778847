"""What a trial ran with, recorded in its file: interpreter, libraries, driver, device, data, code.

Every trial file carries these attributes (``pipeline.trialfile.store`` writes them at the start of every attempt,
so a resumed trial says where its last attempt ran):

    python_version      "3.11.7 (CPython)"
    torch_version       "2.14.1+cu130"; cuda_version "13.0" (the CUDA torch was built with, "" for none),
    cudnn_version       "91002" ("" without cuDNN)
    gpu_driver_version  the NVIDIA kernel driver, e.g. "580.65.06" ("" where there is none)
    driver_cuda_version the highest CUDA the driver serves, e.g. "13.0" ("" where there is none;
                        ``pipeline.core.driver``)
    device_model        the GPU's name for CUDA trials, else the CPU's model
    packages            every installed distribution, "name==version" one per line, sorted
    data_files          JSON: file name -> sha256 of each data file the trial read (the vendored digits or
                        the official IDX files)
    git_commit          "<sha>" or "<sha>-dirty" (``pipeline.trialfile.manifest``)
    git_diff_sha256     sha256 of ``git diff HEAD`` of a dirty tree ("" for a clean one)
    git_diff            that diff's text (untracked files are not in it; cut at ``MAX_DIFF_BYTES``)

Everything is computed once per process and cached: packed trials and every epoch share it, and a
100-trial task reads the package list once. Reading it costs no GPU work and no network.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.driver import driver_cuda_level, gpu_driver_version
from pipeline.trialfile.manifest import git_commit

if TYPE_CHECKING:
    import torch

REPOSITORY = Path(__file__).resolve().parents[2]
MAX_DIFF_BYTES = 1_000_000


@functools.lru_cache(maxsize=1)
def python_version() -> str:
    return f"{platform.python_version()} ({platform.python_implementation()})"


@functools.lru_cache(maxsize=1)
def packages() -> str:
    found = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name:
            found[name.lower()] = f"{name}=={distribution.version}"
    return "\n".join(found[name] for name in sorted(found))


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.cache
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()  # a file replaced in place is hashed again
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def data_files(files: Iterable[str | Path]) -> str:
    """JSON of file name -> sha256 for the data files a trial read."""
    return json.dumps({Path(f).name: file_sha256(Path(f)) for f in files}, sort_keys=True)


@functools.lru_cache(maxsize=1)
def git_diff() -> tuple[str, str]:
    """(sha256, text) of the uncommitted changes to tracked files; ("", "") for a clean tree or no git."""
    try:
        result = subprocess.run(["git", "diff", "HEAD", "--no-color", "--no-ext-diff"], cwd=REPOSITORY,
                                capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "", ""
    if result.returncode != 0 or not result.stdout:
        return "", ""
    text = result.stdout.decode("utf-8", errors="replace")
    digest = hashlib.sha256(result.stdout).hexdigest()
    if len(result.stdout) > MAX_DIFF_BYTES:
        text = text[:MAX_DIFF_BYTES] + f"\n[... cut at {MAX_DIFF_BYTES} bytes of {len(result.stdout)}; the sha256 is of all]"
    return digest, text


def torch_build() -> dict[str, str]:
    import torch  # deferred: torch, read only when a trial (which has it loaded) records its provenance

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"torch_version": str(torch.__version__), "cuda_version": torch.version.cuda or "",
            "cudnn_version": str(cudnn or "")}


def device_model(device: torch.device | str) -> str:
    if getattr(device, "type", str(device)) == "cuda":
        import torch  # deferred: torch, as in torch_build

        return torch.cuda.get_device_name(device)
    return cpu_model()


def run_attrs(device: torch.device | str, files: Iterable[str | Path] = ()) -> dict[str, str]:
    """The provenance attributes of a trial file for a trial on ``device`` that read ``files``."""
    diff_sha, diff = git_diff()
    level = driver_cuda_level()
    return {"python_version": python_version(), **torch_build(), "gpu_driver_version": gpu_driver_version(),
            "driver_cuda_version": f"{level[0]}.{level[1]}" if level else "",
            "device_model": device_model(device), "packages": packages(), "data_files": data_files(files),
            "git_commit": git_commit(), "git_diff_sha256": diff_sha, "git_diff": diff}
