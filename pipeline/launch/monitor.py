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

Local tasks are followed by their process identity (host, boot, PID namespace, PID and start time), never
by a PID alone, so a recycled PID neither keeps a trial "queued" nor is ever signalled; a record without
that identity (an older format) or from where its process cannot be seen says "unknown".
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from submitit.core.utils import JobPaths

from .. import queue
from ..files import inspect, trial_paths
from ..manifest import labels_of, read_manifest, utc_now
from ..folder import ResultsFolder
from ..ownership import Owner, process_start_ticks, read_owner, task_lease_path, trial_lease_path
from ..settings import ConfigError
from ..stopping import CANCEL_SIGNAL
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


def local_process_alive(record: dict, task: dict) -> bool | None:
    """Whether a local task's controller is still the process that was started: True or False where its
    identity (host, boot, PID namespace, start time) proves it, None where it cannot be told (a record
    without that identity whose PID exists, or a process started where this one cannot see)."""
    pid = str(task.get("job_id", ""))
    me = Owner.this_process()
    if not pid.isdigit():
        return False
    if record.get("hostname") != me.host:
        return None  # another machine's processes cannot be seen from here
    if record.get("boot_id") and record["boot_id"] != me.boot_id:
        return False  # the machine rebooted since
    if record.get("pid_ns") and record["pid_ns"] != me.pid_ns:
        return None  # another PID namespace (a container): its PIDs mean nothing here
    ticks = process_start_ticks(int(pid))
    if ticks is None:
        return False
    if not record.get("boot_id") or task.get("start_ticks") is None:
        return None  # an older record: a live process with its PID may be anyone's
    return task["start_ticks"] == ticks


def _task_state(out_dir: Path, record: dict, task: dict, slurm) -> tuple[bool | None, str]:
    """(True, False or None for unknown; words, or for unknown why) for one task: will it still run its
    trials?"""
    job_id = task["job_id"]
    if record.get("unconfirmed"):
        return None, (f"a submission at {record.get('submitted_at', '?')} was interrupted before its job ids were "
                      "recorded: its tasks may be queued or running")
    owner = read_owner(task_lease_path(out_dir, job_id))
    if owner is not None and owner.state(slurm) == "alive":
        return True, "running"
    if record.get("executor") == "local":
        alive = local_process_alive(record, task)
        if alive is None:
            return None, (f"task {job_id} was started on {record.get('hostname', '?')} where its process cannot be "
                          "told from another (a record without its start time, another machine or PID namespace)")
        return (True, "starting") if alive else (False, "")
    states = slurm.states()
    if states is None:
        return None, f"squeue did not answer: job {job_id} may still be queued or running"
    state = states.get(job_id)
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
    # Read once, and only if a task or a lease needs it: a run-trial inside a SLURM job of another node holds
    # a lease that only the queue can vouch for, even in a folder without SLURM submissions.
    slurm = queue.QueueView()
    task_states: dict[tuple, tuple[bool | None, str]] = {}
    accounting = None

    states = []
    for entry in manifest["trials"]:
        index, trial_id = entry["index"], entry["trial_id"]
        labels = labels_of(entry)
        record, task = task_of.get(index, ({}, {}))
        job_id = task.get("job_id", "")
        key = (record.get("id", ""), job_id)
        if task and key not in task_states:
            task_states[key] = _task_state(out_dir, record, task, slurm)
        live, words = task_states.get(key, (False, ""))
        was_cancelled = job_id in cancelled
        path, _ = trial_paths(out_dir, trial_id)
        file = inspect(path) if path.exists() else None
        attrs = file.attrs if file is not None else {}
        owner = read_owner(trial_lease_path(out_dir, trial_id))
        held = owner.state(slurm) if owner is not None else None
        handled = bool(job_id) and str(attrs.get("job", "")) == job_id  # this task already ran its attempt

        def result(state: str, detail: str, in_queue: bool = False) -> TrialState:
            return TrialState(index, trial_id, labels["cell"], labels["mode"], state, detail, in_queue, job_id)

        if file is not None and file.status == "complete":
            states.append(result("complete", f"{_progress(attrs)} on {attrs.get('device', '?')}"))
        elif held == "alive":
            progress = _progress(attrs) if file is not None else "starting"
            states.append(result("running", f"{progress} on {attrs.get('device', '?')}, by {owner.describe()}",
                                 in_queue=True))
        elif held == "unproven":
            states.append(result("unknown", f"held by {owner.describe()}, which cannot be proven alive or dead from "
                                            "here; a run that needs it watches it for the stale period first",
                                 in_queue=True))
        elif live and not was_cancelled and not (handled and file.status in ("failed", "cancelled", "inconsistent")):
            where = ("waiting in the queue" if words == "pending" else
                     "its task is running other trials first" if words in ("running", "starting") else words)
            resume = (f"; resumes after epoch {attrs.get('epochs_done')}" if file is not None and
                      file.status in ("running", "failed", "cancelled") else "")
            states.append(result("queued", f"job {job_id}: {where}{resume}", in_queue=True))
        elif file is not None and file.status == "inconsistent":
            states.append(result("inconsistent", file.problem))
        elif was_cancelled or (file is not None and file.status == "cancelled"):
            at = f" at {_progress(attrs)}" if file is not None else " before it started"
            states.append(result("cancelled", f"cancelled{at}" + (f" (job {job_id})" if job_id else "")))
        elif live is None:
            states.append(result("unknown", words))
        elif file is not None and file.status == "failed":
            states.append(result("failed", str(attrs.get("last_error", "failed"))))
        elif file is not None and file.status == "damaged":
            states.append(result("failed", f"damaged file ({file.problem})"))
        elif file is not None:
            if accounting is None:
                accounting = queue.read_accounting([t["job_id"] for r in submissions if r.get("executor") == "slurm"
                                                    for t in r["tasks"] if t["job_id"]])
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
    again, unless asked), cancelled, and inconsistent (a rerun sets the file aside and runs it again)."""
    return [s for s in states if s.state in ("failed", "missing", "cancelled", "inconsistent") and not s.in_queue
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


# How long cancel waits for SLURM tasks to save their last epoch before it kills what is left.
CANCEL_GRACE_S = float(os.environ.get("PIPELINE_CANCEL_GRACE_S", 120))
# Tasks in these states run the training process: they are asked to save and stop; the others just go.
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING")


def cancel(out_dir: Path, log=print) -> list[str]:
    """Stop the grid: ask its running tasks (local processes, and SLURM tasks through ``scancel --signal``)
    to save their last epoch and stop, and cancel the rest. Returns the job ids cancelled; records them
    first, so that status says "cancelled"."""
    out_dir = Path(out_dir)
    read_manifest(out_dir)  # a folder without a grid is an error, as for status
    submissions = read_submissions(out_dir)
    slurm = queue.QueueView()
    me = Owner.this_process()
    cancelled, slurm_live, unconfirmed = [], {}, []
    targets: dict[int, int | None] = {}  # local processes to stop: pid -> start time (their identity)
    for record in submissions:
        if record.get("unconfirmed"):
            unconfirmed.append(record)
            continue
        for task in record["tasks"]:
            job_id = task["job_id"]
            if record.get("executor") == "slurm":
                states = slurm.states()
                if states is None:
                    raise ConfigError("squeue did not answer, so which tasks of this grid are queued is unknown; "
                                      "nothing was cancelled: retry when SLURM answers")
                if job_id in states:
                    slurm_live[job_id] = states[job_id]
                continue
            if local_process_alive(record, task) is True:  # only a process proven to be the one started
                targets.update({child: process_start_ticks(child) for child in _children(int(job_id))})
                cancelled.append(job_id)
            owner = read_owner(task_lease_path(out_dir, job_id))  # a task whose controller was killed
            if owner is not None and owner.same_processes(me):
                targets[owner.pid] = owner.start_ticks
                if job_id not in cancelled and owner.state(slurm) == "alive":
                    cancelled.append(job_id)
    # Whatever trains a trial of this folder here is part of the grid, a run-trial included.
    for lease in ResultsFolder.of(out_dir).trial_leases():
        owner = read_owner(lease)
        if owner is not None and owner.same_processes(me) and owner.pid != me.pid:
            targets[owner.pid] = owner.start_ticks
    cancelled += list(slurm_live)
    if cancelled:
        append_record(out_dir, {"kind": "cancel", "cancelled_at": utc_now(), "hostname": me.host,
                                "job_ids": cancelled})
    signalled = sum(_signal_if_ours(pid, ticks) for pid, ticks in targets.items())
    if signalled:
        log(f"asked {signalled} local training process(es) to save their last epoch and stop")
    if slurm_live:
        _cancel_slurm(slurm_live, log)
    for record in unconfirmed:
        log(f"a submission at {record.get('submitted_at', '?')} was interrupted before its job ids were recorded: "
            "any of its tasks that started are not known here (look for them with squeue)")
    log(f"cancelled {len(cancelled)} task(s): {' '.join(cancelled) if cancelled else 'none were queued or running'}")
    return cancelled


def _scancel(arguments: list[str]) -> None:
    result = subprocess.run(["scancel", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"scancel failed: {' '.join(result.stderr.split())}")


def _cancel_slurm(live: dict[str, str], log) -> None:
    """Cancel the waiting tasks at once (so that none starts meanwhile); send the running ones the cancel
    signal, which reaches the training process on whichever node (it saves its last epoch, says
    ``cancelled`` in its file and ends); kill whatever is still there after CANCEL_GRACE_S."""
    running = [job for job, state in live.items() if state in RUNNING_STATES]
    waiting = [job for job in live if job not in running]
    if waiting:
        _scancel(waiting)
    if not running:
        return
    _scancel([f"--signal={CANCEL_SIGNAL.name.removeprefix('SIG')}", *running])
    log(f"asked {len(running)} running SLURM task(s) to save their last epoch and stop")
    deadline = time.time() + CANCEL_GRACE_S
    left = running
    while left and time.time() < deadline:
        time.sleep(1.0)
        states = queue.read_slurm_queue()
        if states is not None:
            left = [job for job in left if job in states]
    if left:
        log(f"{len(left)} task(s) did not stop within {CANCEL_GRACE_S:.0f} s of the signal: cancelling them outright")
        _scancel(left)


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
