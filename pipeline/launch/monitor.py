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

Whether a task will still run its trials is its backend's to say (``pipeline.launch.backends``: local
processes by their identity, SLURM tasks by the queue); a lease held by a live process says so first.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import schedulers
from pipeline.folder import ResultsFolder
from pipeline.launch.backends import backend_of_record
from pipeline.launch.backends.base import Backend, Cancellation
from pipeline.launch.backends.local import signal_if_ours
from pipeline.launch.backends.proof import runs_on_folder
from pipeline.launch.backends.slurm import last_log_line
from pipeline.launch.records import append_record, cancelled_jobs, read_submissions
from pipeline.leases.ownership import Owner, UnreadableLease, read_owner, task_lease_path, trial_lease_path
from pipeline.run import curve_sinks
from pipeline.schedulers.base import QueueView
from pipeline.trialfile import files
from pipeline.trialfile.files import inspect, trial_paths
from pipeline.trialfile.manifest import entries, labels_of, read_manifest, utc_now

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


def _lease_state(owner: Owner | UnreadableLease, out_dir: Path, queue: QueueView) -> str:
    """A lease's verdict (``Owner.state``) as status may tell it: a live process of this machine that does
    not run this pipeline on this folder (``proof``: a lease someone else wrote, naming any process) proves
    nothing, either way."""
    verdict = owner.state(queue)
    me = Owner.this_process()
    if verdict == "alive" and owner.same_processes(me) and owner.pid != me.pid \
            and not runs_on_folder(owner.pid, out_dir):
        return "unproven"
    return verdict


def _task_state(out_dir: Path, record: dict, task: dict, queue: QueueView) -> tuple[bool | None, str]:
    """(True, False or None for unknown; words, or for unknown why) for one task: will it still run its
    trials?"""
    job_id = task["job_id"]
    if record.get("unconfirmed"):
        return None, (f"a submission at {record.get('submitted_at', '?')} was interrupted before its job ids were "
                      "recorded: its tasks may be queued or running")
    owner = read_owner(task_lease_path(out_dir, job_id))
    if owner is not None and _lease_state(owner, out_dir, queue) == "alive":
        return True, "running"
    return backend_of_record(record).task_state(out_dir, record, task, queue)


def _progress(attrs: dict) -> str:
    return f"{attrs.get('epochs_done', -1)}/{attrs.get('total_epochs', '?')} epochs"


@dataclass
class _Seen:
    """What status found of one trial: its task (and whether that task will still run it), its file, its lease."""

    job_id: str
    record: dict
    live: bool | None  # its task will still run it; None: cannot be told
    words: str  # the task's state in words, or why it cannot be told
    was_cancelled: bool
    file: files.FileState | None
    owner: Owner | UnreadableLease | None
    held: str | None  # the lease's verdict (``_lease_state``), None without a lease

    @property
    def attrs(self) -> dict:
        return self.file.attrs if self.file is not None else {}

    def file_is(self, *statuses: str) -> bool:
        return self.file is not None and self.file.status in statuses


Verdict = tuple[str, str, bool]  # state, detail, in the queue


def _while_held(seen: _Seen) -> Verdict | None:
    """Complete, or held by a lease: running, or unknown where its owner cannot be proven alive or dead."""
    attrs, owner = seen.attrs, seen.owner
    if seen.file_is("complete"):
        gaps = curve_sinks.gaps_words(files.read_curve_gaps(attrs.get(files.CURVE_GAPS_ATTR, "")))
        return "complete", f"{_progress(attrs)} on {attrs.get('device', '?')}" + (f"; {gaps}" if gaps else ""), False
    if seen.held == "alive" and owner is not None:
        progress = _progress(attrs) if seen.file is not None else "starting"
        return "running", f"{progress} on {attrs.get('device', '?')}, by {owner.describe()}", True
    if seen.held == "unproven" and owner is not None:
        return "unknown", (f"held by {owner.describe()}, which cannot be proven alive or dead from here; a run that "
                           "needs it watches it for the stale period first"), True
    return None


def _while_queued(seen: _Seen) -> Verdict | None:
    """A live task will still run it, unless that task already ran its attempt and it stopped."""
    handled = bool(seen.job_id) and str(seen.attrs.get("job", "")) == seen.job_id  # this task already ran its attempt
    if not seen.live or seen.was_cancelled or (handled and seen.file_is("failed", "cancelled", "inconsistent")):
        return None
    words = seen.words
    where = ("waiting in the queue" if words == "pending" else
             "its task is running other trials first" if words in ("running", "starting") else words)
    resume = (f"; resumes after epoch {seen.attrs.get('epochs_done')}"
              if seen.file_is("running", "failed", "cancelled") else "")
    return "queued", f"job {seen.job_id}: {where}{resume}", True


def _stopped(seen: _Seen) -> Verdict | None:
    """Nothing runs it: inconsistent, cancelled, unknown (its task cannot be told), failed by its file or lease."""
    file, owner, job_id = seen.file, seen.owner, seen.job_id
    if file is not None and file.status == "inconsistent":
        return "inconsistent", file.problem, False
    if seen.was_cancelled or seen.file_is("cancelled"):
        at = f" at {_progress(seen.attrs)}" if file is not None else " before it started"
        return "cancelled", f"cancelled{at}" + (f" (job {job_id})" if job_id else ""), False
    if seen.live is None:
        return "unknown", seen.words, False
    if seen.file_is("failed"):
        return "failed", str(seen.attrs.get("last_error", "failed")), False
    if file is not None and file.status == "damaged":
        return "failed", f"damaged file ({file.problem})", False
    if file is not None and owner is not None and owner.stopped:
        # It stopped on an error its file could not record (a full disk, an I/O error): its lease says which.
        return "failed", f"stopped at {_progress(seen.attrs)}: {owner.stopped}", False
    return None


def _gone(seen: _Seen, out_dir: Path, accounting: Callable[[], dict[str, str]]) -> Verdict:
    """Its task ended without completing it: stopped part way, never started, or never submitted."""
    job_id = seen.job_id
    if seen.file is not None:
        how = accounting().get(job_id, "")
        last = last_log_line(_task_folder(out_dir, seen.record), job_id) if job_id else ""
        return "failed", (f"stopped at {_progress(seen.attrs)}, not queued (killed, timed out or its task ended)"
                          + (f"; sacct: {how}" if how else "") + (f"; log: {last}" if last else "")), False
    if job_id:
        last = last_log_line(_task_folder(out_dir, seen.record), job_id)
        return "missing", f"not started; task {job_id} is gone" + (f"; log: {last}" if last else ""), False
    return "missing", "never submitted", False


def _tasks_by_index(submissions: list[dict]) -> dict[int, tuple[dict, dict]]:
    """Each trial's latest task: (its submission record, the task)."""
    task_of: dict[int, tuple[dict, dict]] = {}
    for record in submissions:
        for task in record["tasks"]:
            for index in task["indices"]:
                task_of[index] = (record, task)
    return task_of


def gather(out_dir: Path, warn: Callable[[str], None] | None = None) -> list[TrialState]:
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    submissions = read_submissions(out_dir, warn)
    task_of = _tasks_by_index(submissions)
    cancelled = cancelled_jobs(out_dir, warn)
    # Read once, and only if a task or a lease needs it: a run-trial inside a SLURM job of another node holds
    # a lease that only the queue can vouch for, even in a folder without SLURM submissions.
    queue = schedulers.view()
    task_states: dict[tuple, tuple[bool | None, str]] = {}
    accounting: dict[str, str] | None = None

    def accounting_once() -> dict[str, str]:
        nonlocal accounting
        if accounting is None:
            accounting = _accounting(submissions)
        return accounting

    states = []
    for entry in entries(manifest):
        index, trial_id = entry["index"], entry["trial_id"]
        labels = labels_of(entry)
        record, task = task_of.get(index, ({}, {}))
        job_id = task.get("job_id", "")
        key = (record.get("id", ""), job_id)
        if task and key not in task_states:
            task_states[key] = _task_state(out_dir, record, task, queue)
        live, words = task_states.get(key, (False, ""))
        path, _ = trial_paths(out_dir, trial_id)
        owner = read_owner(trial_lease_path(out_dir, trial_id))
        seen = _Seen(job_id, record, live, words, job_id in cancelled, inspect(path) if path.exists() else None,
                     owner, _lease_state(owner, out_dir, queue) if owner is not None else None)
        state, detail, in_queue = (_while_held(seen) or _while_queued(seen) or _stopped(seen)
                                   or _gone(seen, out_dir, accounting_once))
        states.append(TrialState(index, trial_id, labels["cell"], labels["mode"], state, detail, in_queue, job_id))
    return states


def _task_folder(out_dir: Path, record: dict) -> str:
    """Where a record's tasks keep their logs, if that is inside the results folder (a record naming any
    other file would have status print a line of it)."""
    folder = record.get("folder", "")
    if not folder:
        return ""
    real, root = os.path.realpath(folder), os.path.realpath(out_dir)
    return folder if os.path.commonpath([real, root]) == root else ""


def _accounting(submissions: list[dict]) -> dict[str, str]:
    """How the finished tasks of every submission ended, where their backends keep an account."""
    found: dict[str, str] = {}
    for record in submissions:
        job_ids = [t["job_id"] for t in record["tasks"] if t["job_id"]]
        if job_ids:
            found.update(backend_of_record(record).ended_how(job_ids))
    return found


def format_status(states: list[TrialState], only_unfinished: bool = False) -> str:
    shown = [s for s in states if not (only_unfinished and s.state == "complete")]
    width = max([22] + [len(s.trial_id) for s in shown])
    header = f"{'index':>5}  {'trial':<{width}} {'state':<12} detail"
    lines = [f"all {len(states)} trials complete"] if not shown else [header]
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


def cancel(out_dir: Path, log: Callable[[str], None] = print) -> list[str]:
    """Stop the grid: ask its running tasks (local processes, and SLURM tasks through ``scancel --signal``)
    to save their last epoch and stop, and cancel the rest. Returns the job ids cancelled; records them
    first, so that status says "cancelled"."""
    out_dir = Path(out_dir)
    read_manifest(out_dir)  # a folder without a grid is an error, as for status
    submissions = read_submissions(out_dir)
    queue = schedulers.view()
    me = Owner.this_process()
    found, unconfirmed = Cancellation(), []
    backends: dict[str, Backend] = {}
    for record in submissions:
        if record.get("unconfirmed"):
            unconfirmed.append(record)
            continue
        backend = backends.setdefault(schedulers.of_record(record), backend_of_record(record))
        backend.gather_cancellation(out_dir, record, queue, me, found)
    # Whatever trains a trial of this folder here is part of the grid, a run-trial included.
    for lease in ResultsFolder.of(out_dir).trial_leases():
        owner = read_owner(lease)
        if owner is not None and owner.same_processes(me) and owner.pid != me.pid:
            found.processes[owner.pid] = owner.start_ticks
    if found.job_ids:
        append_record(out_dir, {"kind": "cancel", "cancelled_at": utc_now(), "hostname": me.host,
                                "job_ids": found.job_ids})
    signalled = sum(signal_if_ours(pid, ticks, out_dir) for pid, ticks in found.processes.items())
    if signalled:
        log(f"asked {signalled} local training process(es) to save their last epoch and stop")
    for backend in backends.values():
        backend.cancel(found, log)
    for record in unconfirmed:
        log(f"a submission at {record.get('submitted_at', '?')} was interrupted before its job ids were recorded: "
            "any of its tasks that started are not known here (look for them with squeue)")
    cancelled = found.job_ids
    log(f"cancelled {len(cancelled)} task(s): {' '.join(cancelled) if cancelled else 'none were queued or running'}")
    return cancelled


def wait_for(out_dir: Path, poll_s: float = 2.0) -> None:
    """Block until nothing of the grid is queued or running, showing trials complete."""
    from tqdm import tqdm  # deferred: tqdm, only while waiting

    states = gather(out_dir)
    with tqdm(total=len(states), desc="trials complete", unit="trial", dynamic_ncols=True) as bar:
        while True:
            states = gather(out_dir)
            bar.n = sum(s.state == "complete" for s in states)
            bar.refresh()
            if not any(s.in_queue or s.state == "unknown" for s in states):
                break
            time.sleep(poll_s)
