"""What SLURM says about jobs, read without ever mistaking silence for an answer.

``squeue`` on a busy controller times out, and a login node may have no SLURM at all: every reader here
returns None when it could not read the queue, and callers treat that as *unknown*, never as *empty*. The
scheduler interface over them is ``pipeline.schedulers.slurm``.
"""

from __future__ import annotations

import shutil
import subprocess

# States in which a task still holds (or may soon hold) its node.
ACTIVE_STATES = ("RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STOPPED")
QUEUE_TIMEOUT_S = 30


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=QUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def read_slurm_queue() -> dict[str, str] | None:
    """Job id ("123_4") -> state for every job SLURM holds, arrays expanded; None if squeue did not answer."""
    output = _run(["squeue", "-h", "-r", "-o", "%i|%T"])
    if output is None:
        return None
    states = {}
    for line in output.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if sep:
            states[job_id] = state
    return states


def read_partitions() -> dict[str, list[str]] | None:
    """Partition (the default one marked "*", as sinfo marks it) -> the generic resources of its nodes
    ("gpu:t4:4(S:0)", "(null)"); None if sinfo did not answer."""
    output = _run(["sinfo", "-h", "-o", "%P|%G"])
    if output is None:
        return None
    partitions: dict[str, list[str]] = {}
    for line in output.splitlines():
        name, sep, gres = line.strip().partition("|")
        if sep:
            resources = [g for g in gres.split(",") if g and g != "(null)"]
            partitions.setdefault(name, []).extend(resources)
    return partitions


def read_accounting(job_ids: list[str]) -> dict[str, str]:
    """How finished tasks ended, when slurmdbd answers (it may not: never rely on it alone)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    output = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(arrays), "-o", "JobID,State"])
    return {line.split("|")[0]: line.split("|")[1].split()[0] for line in (output or "").splitlines() if "|" in line}
