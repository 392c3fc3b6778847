"""The local backend: a submission's tasks as worker processes on this machine, through submitit's local
executor (``pipeline.launch.local_controller``), followed by their process identity.

Local tasks are followed by their process identity (host, boot, PID namespace, PID and start time), never by a
PID alone, so a recycled PID neither keeps a trial "queued" nor is ever signalled; a record without that
identity (an older format) or from where its process cannot be seen says "unknown".
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.folder import ResultsFolder
from pipeline.launch import layout, sealed
from pipeline.launch.backends.base import Backend, Cancellation, Say, cpu_count
from pipeline.launch.backends.proof import runs_on_folder
from pipeline.launch.layout import MAX_TIMEOUT_REQUEUES, ArrayPlan, Plan, Task
from pipeline.launch.local_gpus import share_out, visible_gpus
from pipeline.leases.ownership import Owner, process_start_ticks, read_owner, task_lease_path
from pipeline.schedulers.base import QueueView
from pipeline.settings import quoted
from pipeline.stopping import CANCEL_SIGNAL
from pipeline.trialfile.cost import trial_flops


def balanced(units: list[list[int]], workers: int, cost: Callable[[int], float]) -> list[list[list[int]]]:
    """Units of trials shared among ``workers`` local processes (at most that many trainings at a time) so
    that they finish together: the costliest unit first, each to the least loaded worker (by the analytic
    cost); each worker then runs its units in grid order."""
    loads = [0.0] * workers
    shares: list[list[list[int]]] = [[] for _ in range(workers)]
    for unit in sorted(units, key=lambda u: -sum(cost(i) for i in u)):
        worker = loads.index(min(loads))
        loads[worker] += sum(cost(i) for i in unit)
        shares[worker].append(unit)
    return [sorted(share) for share in shares if share]


def local_process_alive(out_dir: Path, record: dict, task: dict) -> bool | None:
    """Whether a local task's controller is still the process that was started: True or False where its
    identity (host, boot, PID namespace, start time) proves it, None where it cannot be told (a record
    without that identity whose PID exists, or a process started where this one cannot see). A process
    whose identity matches but which does not run this folder's tasks (``proof``: a record written by hand
    naming someone else's process) is not the one started."""
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
    return task["start_ticks"] == ticks and runs_on_folder(int(pid), out_dir)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def signal_if_ours(pid: int, ticks: int | None, out_dir: Path) -> bool:
    """Send the cancel signal to a process of this host only if it is the one we know (same start time) and
    its own command line shows it runs this pipeline on this folder (``proof``): what the folder says of a
    process (a lease, a record) may have been written by anyone who can write the folder."""
    if ticks is None or process_start_ticks(pid) != ticks or not runs_on_folder(pid, out_dir):
        return False
    try:
        os.kill(pid, CANCEL_SIGNAL)
        return True
    except (ProcessLookupError, PermissionError):  # gone meanwhile, or another user's run of this folder
        return False


def _given(gpus: list[str | None]) -> list[str]:
    """The GPUs ``share_out`` gave the workers (none, where there was no GPU to give)."""
    return [g for g in gpus if g is not None]


@contextlib.contextmanager
def detached_from_terminal() -> Iterator[None]:
    """Local workers outlive the command that starts them: they must not die with the terminal's Ctrl-C
    (which reaches the whole foreground process group) or its hang-up, nor hold its output open (a
    ``submit | tee`` would wait for them). Children inherit ignored signals and open descriptors, so both
    are set for the moment of the start; the workers stop on ``pipeline cancel`` (SIGUSR1) instead, and
    write their logs to files."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGHUP)}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        for fd, copy in zip((0, 1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class LocalBackend(Backend):
    name = "local"
    waits = True
    runs_here = True

    def tasks(self, units: list[layout.Unit], trials: dict, trials_per_task: int | None, pack_seeds: bool,
              workers: int | None, device: str) -> tuple[list[ArrayPlan], int, list[str]]:
        # Workers take units round-robin: plain trials need no chunking; packs still group seeds.
        count = min(workers or self.profile.local_workers(), len(units))
        by_index = {u.indices[0]: u for u in units}
        shares = balanced([u.indices for u in units], count, lambda i: trial_flops(trials[i].settings))
        tasks = [Task([by_index[unit[0]] for unit in share]) for share in shares]
        threads = max(1, cpu_count() // count)
        time_min = max(math.ceil(task.reserve_s / 60) for task in tasks)
        return [ArrayPlan(time_min, tasks, len(tasks))], threads, []

    def describe(self, out_dir: Path, plan: Plan, trials: dict) -> list[str]:
        gpus = share_out(visible_gpus(), len(plan.tasks), self.profile.gpus)
        return [f"local worker processes: {len(plan.tasks)}, {plan.threads} thread(s) each",
                f"GPUs (CUDA_VISIBLE_DEVICES) of the workers: {', '.join(_given(gpus))}" if _given(gpus)
                else "no GPU visible here: the workers train on the CPU"]

    def plan_lines(self, plan: Plan, trials: dict) -> list[str]:
        return ["on a GPU cluster: add --cluster t4 (or a40, or your site's profile) for its GPU-hours and the "
                "job arrays a submission would make"]

    def launch(self, out_dir: Path, plan: Plan, base: dict, records: list[dict], say: Say,
               sinks: tuple[str, ...] = ()) -> list[Any]:
        # deferred: submitit (the controller and the task are submitit's), kept out of planning and status
        from pipeline.launch.local_controller import LocalExecutor
        from pipeline.launch.task import ArrayTask  # deferred: submitit, as above

        profile = self.profile
        (array,) = plan.arrays
        folder = ResultsFolder(out_dir).local_jobs
        executor = LocalExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)
        executor.update_parameters(timeout_min=array.time_min, signal_delay_s=profile.signal_delay_s)
        gpus = share_out(visible_gpus(), len(array.tasks), profile.gpus)
        with detached_from_terminal(), sealed.sealing(sealed.new_key()):
            jobs = [executor.submit(ArrayTask(out_dir, task.units_indices, plan.threads, profile.gpus > 0,
                                              cuda_devices, sinks))
                    for task, cuda_devices in zip(array.tasks, gpus)]
        tasks = [{**task.record(job.job_id), "start_ticks": process_start_ticks(int(job.job_id)),
                  "cuda_visible_devices": cuda_devices} for job, task, cuda_devices in zip(jobs, array.tasks, gpus)]
        records.append({**base, "tasks": tasks, "time_min": array.time_min, "folder": str(executor.folder)})
        on_gpus = f" on GPU {', '.join(_given(gpus))}" if _given(gpus) else ""
        say(f"started {len(jobs)} local worker process(es){on_gpus} for {plan.trials} trials "
            f"({plan.threads} thread(s) each); logs in {quoted(folder)}")
        return jobs

    def task_state(self, out_dir: Path, record: dict, task: dict, queue: QueueView) -> tuple[bool | None, str]:
        alive = local_process_alive(out_dir, record, task)
        if alive is None:
            return None, (f"task {task['job_id']} was started on {record.get('hostname', '?')} where its process "
                          "cannot be told from another (a record without its start time, another machine or PID "
                          "namespace)")
        return (True, "starting") if alive else (False, "")

    def gather_cancellation(self, out_dir: Path, record: dict, queue: QueueView, me: Owner,
                            found: Cancellation) -> None:
        for task in record["tasks"]:
            job_id = task["job_id"]
            if local_process_alive(out_dir, record, task) is True:  # only a process proven to be the one started
                found.processes.update({child: process_start_ticks(child) for child in children(int(job_id))})
                found.job_ids.append(job_id)
            owner = read_owner(task_lease_path(out_dir, job_id))  # a task whose controller was killed
            if owner is not None and owner.same_processes(me) and runs_on_folder(owner.pid, out_dir):
                found.processes[owner.pid] = owner.start_ticks
                if job_id not in found.job_ids and owner.state(queue) == "alive":
                    found.job_ids.append(job_id)
