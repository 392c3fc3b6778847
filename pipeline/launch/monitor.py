"""The state of every trial of a results folder, from what can be proven: trial files, leases, the queue.

States:

- ``complete``: the file says so and its rows, epochs and attributes agree.
- ``inconsistent``: the file says complete but its data does not back it up (what differs is shown).
- ``running``: a live process holds the trial's lease (who, where, epochs done, device).
- ``queued``: a task that will (re)run it is waiting in SLURM's queue, or is running but has not reached it.
- ``failed``: it stopped with an error, or stopped without one and nothing will resume it (killed, timed out).
- ``cancelled``: ``pipeline cancel`` stopped it or its task.
- ``missing``: never started, and nothing will start it.
- ``unknown``: what happens to it depends on a queue that could not be read (squeue did not answer). Never
  read as empty: ``resubmit`` refuses while any trial is unknown.

Local tasks are followed by their process identity (host, boot, PID and start time), never by a PID
alone, so a recycled PID neither keeps a trial "queued" nor is ever signalled.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from submitit.core.utils import JobPaths

from .. import queue
from ..execute import CANCEL_SIGNAL
from ..files import inspect, trial_paths
from ..manifest import labels_of, read_manifest, utc_now
from ..ownership import LEASE_SUFFIX, Owner, process_start_ticks, read_owner, task_lease_path, trial_lease_path
from ..settings import ConfigError
from .records import append_record, cancelled_jobs, read_submissions

ORDER = ("complete", "running", "queued", "failed", "cancelled", "missing", "inconsistent", "unknown")


@dataclass
class TrialState:
    index: int
    trial_id: str
    cell: str  # the setting the trial's panel is about: a group, a CNN variant
    mode: str
    state: str
    detail: str
    in_queue: bool  # a live task will still run it (or runs it now)
    job_id: str = ""


def local_process_alive(record: dict, task: dict) -> bool:
    """Whether a local task's controller is still the process that was started (host, boot, start time)."""
    pid = str(task.get("job_id", ""))
    if record.get("hostname") != socket.gethostname() or not pid.isdigit():
        return False
    if record.get("boot_id") and record["boot_id"] != Owner.this_process().boot_id:
        return False
    ticks = process_start_ticks(int(pid))
    # Records written before start times were kept cannot prove identity: alive only if the PID exists.
    return ticks is not None and task.get("start_ticks", ticks) == ticks


def _task_state(out_dir: Path, record: dict, task: dict, slurm: dict | None) -> tuple[bool | None, str]:
    """(True/False/None for unknown, words) for one task: will it still run its trials?"""
    job_id = task["job_id"]
    owner = read_owner(task_lease_path(out_dir, job_id))
    if owner is not None and owner.state(slurm) == "alive":
        return True, "running"
    if record.get("executor") == "local":
        return (True, "starting") if local_process_alive(record, task) else (False, "")
    if slurm is None:
        return None, ""
    state = slurm.get(job_id)
    return (state is not None), (state or "").lower()


def _last_log_line(folder: str, job_id: str) -> str:
    try:
        lines = JobPaths(folder, job_id=job_id, task_id=0).stderr.read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def _progress(attrs: dict) -> str:
    return f"{attrs.get('epochs_done', -1)}/{attrs.get('total_epochs', '?')} epochs"


def gather(out_dir: Path, warn=None) -> list[TrialState]:
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    submissions = read_submissions(out_dir, warn)
    task_of: dict[int, tuple[dict, dict]] = {}
    for record in submissions:
        for task in record["tasks"]:
            for index in task["indices"]:
                task_of[index] = (record, task)
    cancelled = cancelled_jobs(out_dir, warn)
    slurm = queue.read_slurm_queue() if any(r.get("executor") == "slurm" for r in submissions) else {}
    task_states: dict[str, tuple[bool | None, str]] = {}
    accounting = None

    states = []
    for entry in manifest["trials"]:
        index, trial_id = entry["index"], entry["trial_id"]
        labels = labels_of(entry)
        record, task = task_of.get(index, ({}, {}))
        job_id = task.get("job_id", "")
        if job_id and job_id not in task_states:
            task_states[job_id] = _task_state(out_dir, record, task, slurm)
        live, words = task_states.get(job_id, (False, ""))
        was_cancelled = job_id in cancelled
        path, _ = trial_paths(out_dir, trial_id)
        file = inspect(path) if path.exists() else None
        attrs = file.attrs if file is not None else {}
        owner = read_owner(trial_lease_path(out_dir, trial_id))
        handled = bool(job_id) and str(attrs.get("job", "")) == job_id  # this task already ran its attempt

        def result(state: str, detail: str, in_queue: bool = False) -> TrialState:
            return TrialState(index, trial_id, labels["cell"], labels["mode"], state, detail, in_queue, job_id)

        if file is not None and file.status == "complete":
            states.append(result("complete", f"{_progress(attrs)} on {attrs.get('device', '?')}"))
        elif file is not None and file.status == "inconsistent":
            states.append(result("inconsistent", file.problem))
        elif owner is not None and owner.state(slurm) == "alive":
            progress = _progress(attrs) if file is not None else "starting"
            states.append(result("running", f"{progress} on {attrs.get('device', '?')}, by {owner.describe()}",
                                 in_queue=True))
        elif live and not was_cancelled and not (handled and file.status in ("failed", "cancelled")):
            where = ("waiting in the queue" if words == "pending" else
                     "its task is running other trials first" if words in ("running", "starting") else words)
            resume = f"; resumes after epoch {attrs.get('epochs_done')}" if file is not None and file.status != "damaged" else ""
            states.append(result("queued", f"job {job_id}: {where}{resume}", in_queue=True))
        elif was_cancelled or (file is not None and file.status == "cancelled"):
            at = f" at {_progress(attrs)}" if file is not None else " before it started"
            states.append(result("cancelled", f"cancelled{at}" + (f" (job {job_id})" if job_id else "")))
        elif live is None:
            states.append(result("unknown", f"squeue did not answer: job {job_id} may still be queued or running"))
        elif file is not None and file.status == "failed":
            states.append(result("failed", str(attrs.get("last_error", "failed"))))
        elif file is not None and file.status == "damaged":
            states.append(result("failed", f"damaged file ({file.problem})"))
        elif file is not None:
            if accounting is None:
                accounting = queue.read_accounting([t["job_id"] for r in submissions if r.get("executor") == "slurm"
                                                    for t in r["tasks"]])
            how = accounting.get(job_id, "")
            last = _last_log_line(record.get("folder", ""), job_id) if job_id else ""
            states.append(result("failed", f"stopped at {_progress(attrs)}, not queued (killed, timed out or its task "
                                           "ended)" + (f"; sacct: {how}" if how else "") + (f"; log: {last}" if last else "")))
        elif job_id:
            last = _last_log_line(record.get("folder", ""), job_id)
            states.append(result("missing", f"not started; task {job_id} is gone" + (f"; log: {last}" if last else "")))
        else:
            states.append(result("missing", "never submitted"))
    return states


def format_status(states: list[TrialState], only_unfinished: bool = False) -> str:
    shown = [s for s in states if not (only_unfinished and s.state == "complete")]
    width = max([22] + [len(s.trial_id) for s in shown])
    lines = [f"all {len(states)} trials complete"] if not shown else [f"{'index':>5}  {'trial':<{width}} {'state':<12} detail"]
    for s in shown:
        lines.append(f"{s.index:>5}  {s.trial_id:<{width}} {s.state:<12} {s.detail}")
    counts = Counter((s.cell, s.mode, s.state) for s in states)
    cells = list(dict.fromkeys((s.cell, s.mode) for s in states))  # manifest order
    lines += ["", f"{'cell':<14} {'mode':<5} " + " ".join(f"{o:>{len(o)}}" for o in ORDER)]
    for cell, mode in cells:
        lines.append(f"{cell:<14} {mode:<5} " + " ".join(f"{counts[(cell, mode, o)]:>{len(o)}}" for o in ORDER))
    totals = Counter(s.state for s in states)
    lines.append(f"{'total':<14} {'':<5} " + " ".join(f"{totals[o]:>{len(o)}}" for o in ORDER))
    return "\n".join(lines)


def needing_resubmission(states: list[TrialState], include_diverged: bool = False) -> list[TrialState]:
    """Trials that nothing will complete: missing, failed (not those that diverged, which would diverge
    again, unless asked), cancelled."""
    return [s for s in states if s.state in ("failed", "missing", "cancelled") and not s.in_queue
            and (include_diverged or not s.detail.startswith("Diverged"))]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _signal_if_ours(pid: int, ticks: int | None) -> bool:
    """Send the cancel signal to a process of this host only if it is the one we know (same start time)."""
    if ticks is None or process_start_ticks(pid) != ticks:
        return False
    try:
        os.kill(pid, CANCEL_SIGNAL)
        return True
    except ProcessLookupError:
        return False


def cancel(out_dir: Path, log=print) -> list[str]:
    """Stop the grid: cancel its SLURM tasks, and ask its local training processes to save their last epoch
    and stop. Returns the job ids cancelled; records them so that status says "cancelled"."""
    out_dir = Path(out_dir)
    read_manifest(out_dir)  # a folder without a grid is an error, as for status
    submissions = read_submissions(out_dir)
    slurm = queue.read_slurm_queue() if any(r.get("executor") == "slurm" for r in submissions) else {}
    me = Owner.this_process()
    cancelled, slurm_live = [], []
    targets: dict[int, int | None] = {}  # local processes to stop: pid -> start time (their identity)
    for record in submissions:
        for task in record["tasks"]:
            job_id = task["job_id"]
            if record.get("executor") == "slurm":
                if slurm is None:
                    raise ConfigError("squeue did not answer, so which tasks of this grid are queued is unknown; "
                                      "nothing was cancelled: retry when SLURM answers")
                if job_id in slurm:
                    slurm_live.append(job_id)
                continue
            if local_process_alive(record, task):
                targets.update({child: process_start_ticks(child) for child in _children(int(job_id))})
                cancelled.append(job_id)
            owner = read_owner(task_lease_path(out_dir, job_id))  # a task whose controller was killed
            if owner is not None and owner.host == me.host and owner.boot_id == me.boot_id:
                targets[owner.pid] = owner.start_ticks
                if job_id not in cancelled and owner.state(slurm) == "alive":
                    cancelled.append(job_id)
    # Whatever trains a trial of this folder on this host is part of the grid, a run-trial included.
    for lease in (out_dir / "trials").glob(f"*{LEASE_SUFFIX}"):
        owner = read_owner(lease)
        if owner is not None and owner.host == me.host and owner.boot_id == me.boot_id and owner.pid != me.pid:
            targets[owner.pid] = owner.start_ticks
    signalled = sum(_signal_if_ours(pid, ticks) for pid, ticks in targets.items())
    if slurm_live:
        arrays = sorted({j.split("_")[0] for j in slurm_live})
        result = subprocess.run(["scancel", *arrays], capture_output=True, text=True)
        if result.returncode != 0:
            raise ConfigError(f"scancel failed: {' '.join(result.stderr.split())}")
        cancelled += slurm_live
    if cancelled:
        append_record(out_dir, {"kind": "cancel", "cancelled_at": utc_now(), "hostname": me.host,
                                "job_ids": cancelled})
    if signalled:
        log(f"asked {signalled} local training process(es) to save their last epoch and stop")
    log(f"cancelled {len(cancelled)} task(s): {' '.join(cancelled) if cancelled else 'none were queued or running'}")
    return cancelled


def wait_for(out_dir: Path, poll_s: float = 2.0) -> None:
    """Block until nothing of the grid is queued or running, showing trials complete."""
    from tqdm import tqdm

    states = gather(out_dir)
    with tqdm(total=len(states), desc="trials complete", unit="trial", dynamic_ncols=True) as bar:
        while True:
            states = gather(out_dir)
            bar.n = sum(s.state == "complete" for s in states)
            bar.refresh()
            if not any(s.in_queue or s.state == "unknown" for s in states):
                break
            time.sleep(poll_s)
