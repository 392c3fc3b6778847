"""The GPUs of this machine, shared out among the worker processes of a local submission.

Submitit's local executor gives every worker ``CUDA_VISIBLE_DEVICES`` built from its ``gpus_per_node``
(0 unless set), and an empty list hides every GPU: on an H200, `make gpu-check` saw a GPU profile's local
workers fail with "no CUDA device is visible", and a ``device = "auto"`` trial would have trained on the
CPU beside an idle GPU. So a local submission lists the GPUs it can see itself, and each worker sets its
own share as it starts (:class:`pipeline.launch.task.ArrayTask`), before anything initialises CUDA.

Torch-free, like the rest of the launch layer: the list comes from ``CUDA_VISIBLE_DEVICES`` when it is
set, else from ``nvidia-smi -L``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping


def visible_gpus(environ: Mapping[str, str] | None = None, nvidia_smi: str | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs)."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        gpus = []
        for entry in (e.strip() for e in listed.split(",")):
            if not entry or entry.startswith("-"):  # CUDA ignores an invalid entry and all that follow it
                break
            gpus.append(entry)
        return gpus
    smi = nvidia_smi or shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []  # a driver that does not answer has no GPU to give
    return re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)


def share_out(gpus: list[str], workers: int, per_worker: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each of ``workers`` processes: ``per_worker`` GPUs each (at least one),
    round-robin, so that workers share GPUs only when there are more workers than GPUs. None (leave the
    environment alone) when there is no GPU to give."""
    if not gpus:
        return [None] * workers
    per_worker = min(max(1, per_worker), len(gpus))
    return [",".join(gpus[(w * per_worker + j) % len(gpus)] for j in range(per_worker)) for w in range(workers)]
