"""The state of every trial of a results folder: trial files first, the queue second.

States: ``complete``; ``running`` (epochs done of total); ``pending`` (queued, not started);
``failed`` (the last line of its error; also a trial whose task left the queue before it finished);
``missing`` (never started and not queued). ``squeue`` tells what is queued or running; ``sacct``, when
it answers, adds how a task ended; local workers are followed by their process ids.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from submitit.core.utils import JobPaths

from ..files import read_status, trial_paths
from ..manifest import labels_of, read_manifest
from .records import read_submissions


@dataclass
class TrialState:
    index: int
    trial_id: str
    cell: str  # the setting the trial's panel is about: a group, a CNN variant
    mode: str
    state: str
    detail: str
    in_queue: bool
    job_id: str = ""


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def slurm_queue() -> dict[str, str]:
    """job id ("123_4") -> state, for every job SLURM still holds (arrays expanded)."""
    output = _run(["squeue", "-h", "-r", "-o", "%i|%T"])
    queue = {}
    for line in (output or "").splitlines():
        job_id, _, state = line.strip().partition("|")
        queue[job_id] = state
    return queue


def slurm_accounting(job_ids: list[str]) -> dict[str, str]:
    """How finished tasks ended, when slurmdbd answers (it may not: never rely on it alone)."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return {}
    output = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(arrays), "-o", "JobID,State"])
    return {line.split("|")[0]: line.split("|")[1].split()[0] for line in (output or "").splitlines() if "|" in line}


def _local_alive(pid: str, hostname: str) -> bool:
    if hostname != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except OSError:
        return False
    # A finished child that nobody waited for is a zombie: it exists but does no work.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _last_log_line(folder: str, job_id: str) -> str:
    try:
        lines = JobPaths(folder, job_id=job_id, task_id=0).stderr.read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def gather(out_dir: Path) -> list[TrialState]:
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    # The latest submission of a trial is the one that counts.
    task_of: dict[int, tuple[dict, str]] = {}
    for submission in read_submissions(out_dir):
        for task in submission["tasks"]:
            for index in task["indices"]:
                task_of[index] = (submission, task["job_id"])
    queue = slurm_queue() if any(s["executor"] == "slurm" for s, _ in task_of.values()) else {}
    accounting = None

    states = []
    for entry in manifest["trials"]:
        index, trial_id = entry["index"], entry["trial_id"]
        labels = labels_of(entry)
        cell, mode = labels["cell"], labels["mode"]
        submission, job_id = task_of.get(index, ({}, ""))
        if submission.get("executor") == "slurm":
            queued = queue.get(job_id)
        elif submission.get("executor") == "local":
            queued = "RUNNING" if _local_alive(job_id, submission.get("hostname", "")) else None
        else:
            queued = None
        path, _ = trial_paths(out_dir, trial_id)
        status = read_status(path) if path.exists() else None
        if status is not None and status["status"] == "complete":
            state, detail = "complete", f"{status.get('epochs_done')}/{status.get('total_epochs')} epochs"
        elif status is not None and status["status"] == "failed" and not queued:
            state, detail = "failed", str(status.get("last_error", "failed"))
        elif status is not None and status["status"] == "damaged" and not queued:
            state, detail = "failed", f"damaged file ({status['error']})"
        elif queued and (status is None or queued == "PENDING"):
            state, detail = "pending", f"queued as {job_id} ({queued.lower()})"
        elif status is not None and queued:
            state, detail = "running", f"{status.get('epochs_done')}/{status.get('total_epochs')} epochs ({job_id})"
        elif status is not None:
            if accounting is None:
                accounting = slurm_accounting([j for sub, j in task_of.values() if sub["executor"] == "slurm"])
            how = accounting.get(job_id, "") if submission.get("executor") == "slurm" else ""
            last = _last_log_line(submission.get("folder", ""), job_id) if job_id else ""
            state = "failed"
            detail = (f"stopped at {status.get('epochs_done')}/{status.get('total_epochs')} epochs, not queued"
                      + (f"; sacct: {how}" if how else "") + (f"; log: {last}" if last else ""))
        else:
            state, detail = "missing", "never started and not queued" if not job_id else f"not started; task {job_id} gone"
        states.append(TrialState(index, trial_id, cell, mode, state, detail, bool(queued), job_id))
    return states


ORDER = ("complete", "running", "pending", "failed", "missing")


def format_status(states: list[TrialState], only_unfinished: bool = False) -> str:
    shown = [s for s in states if not (only_unfinished and s.state == "complete")]
    lines = [f"all {len(states)} trials complete"] if not shown else [f"{'index':>5}  {'trial':<22} {'state':<9} detail"]
    for s in shown:
        lines.append(f"{s.index:>5}  {s.trial_id:<22} {s.state:<9} {s.detail}")
    counts = Counter((s.cell, s.mode, s.state) for s in states)
    cells = list(dict.fromkeys((s.cell, s.mode) for s in states))  # manifest order
    lines += ["", f"{'cell':<14} {'mode':<5} " + " ".join(f"{o:>9}" for o in ORDER)]
    for cell, mode in cells:
        lines.append(f"{cell:<14} {mode:<5} " + " ".join(f"{counts[(cell, mode, o)]:>9}" for o in ORDER))
    totals = Counter(s.state for s in states)
    lines.append(f"{'total':<14} {'':<5} " + " ".join(f"{totals[o]:>9}" for o in ORDER))
    return "\n".join(lines)


def needing_resubmission(states: list[TrialState]) -> list[TrialState]:
    return [s for s in states if s.state in ("failed", "missing") and not s.in_queue]


def cancel(out_dir: Path, log=print) -> list[str]:
    """Cancel every queued or running task of the grid; returns the job ids cancelled."""
    cancelled = []
    slurm_arrays = set()
    for submission in read_submissions(out_dir):
        for task in submission["tasks"]:
            if submission["executor"] == "slurm":
                slurm_arrays.add(task["job_id"].split("_")[0])
            elif _local_alive(task["job_id"], submission.get("hostname", "")):
                os.kill(int(task["job_id"]), signal.SIGTERM)
                cancelled.append(task["job_id"])
    queue = slurm_queue() if slurm_arrays else {}
    live = sorted({j.split("_")[0] for j in queue} & slurm_arrays)
    if live:
        subprocess.run(["scancel", *live], check=True)
        cancelled += live
    log(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled) if cancelled else 'none were queued or running'}")
    return cancelled


def wait_for(out_dir: Path, poll_s: float = 2.0) -> None:
    """Block until no task of the grid is queued or running, showing trials complete."""
    from tqdm import tqdm

    states = gather(out_dir)
    with tqdm(total=len(states), desc="trials complete", unit="trial", dynamic_ncols=True) as bar:
        while True:
            states = gather(out_dir)
            bar.n = sum(s.state == "complete" for s in states)
            bar.refresh()
            if not any(s.in_queue for s in states):
                break
            time.sleep(poll_s)
