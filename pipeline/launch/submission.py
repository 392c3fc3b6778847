"""Submitting trials of a results folder: one submitit job array on SLURM, or local worker processes.

Everything a submission decides and records happens under the folder's guard
(``pipeline.ownership.guard_folder``): which trials still need running, the manifest, the launch and the
line in ``OUT/submissions.jsonl``. Two concurrent submissions into one folder therefore never both launch
a trial. A submission that SLURM rejects leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import submitit

from ..cost import trial_flops
from ..folder import ResultsFolder
from ..manifest import read_manifest, trials_of_manifest, utc_now
from ..ownership import Owner, process_start_ticks
from ..settings import ConfigError, quoted
from .local_controller import LocalExecutor
from .local_gpus import share_out, visible_gpus
from .profiles import Profile
from . import layout
from .layout import MAX_TIMEOUT_REQUEUES, ArrayPlan, Task, Unit
from .records import launching
from .task import ArrayTask

def _balanced(units: list[list[int]], workers: int, cost) -> list[list[list[int]]]:
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


def _slurm_parameters(profile: Profile, name: str, array: ArrayPlan) -> dict:
    """The submitit SlurmExecutor parameters of an array on this profile."""
    parameters = dict(job_name=name, time=array.time_min, cpus_per_task=profile.cpus_per_task,
                      mem=f"{profile.mem_gb}GB", array_parallelism=array.parallelism,
                      signal_delay_s=profile.signal_delay_s,
                      setup=list(profile.setup), **profile.gpu_request())
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            parameters[key] = getattr(profile, key)
    if profile.additional:
        parameters["additional_parameters"] = dict(profile.additional)
    return parameters


def sbatch_script(out_dir: Path, profile: Profile, name: str, array: ArrayPlan) -> str:
    """The sbatch script submitit would submit for one array (needs no SLURM here)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = ResultsFolder(Path(out_dir).resolve()).array_jobs()
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=len(array.tasks),
                               **_slurm_parameters(profile, name, array))


def _sbatch_message(error: Exception, captured: str) -> str:
    """SLURM's own words for a rejected submission, on one line."""
    text = f"{error}\n{captured}"
    lines = [line.strip() for line in text.splitlines() if "sbatch: error:" in line]
    if not lines:
        lines = [line.strip() for line in text.splitlines() if line.strip()][:2]
    return " ".join(dict.fromkeys(lines))


@dataclass
class Plan:
    """What one submission launches: job arrays (on SLURM; locally one, the worker processes) whose tasks
    run units of trials, with the time limit of each array and how it was estimated."""

    profile: Profile
    arrays: list[ArrayPlan]
    threads: int
    name: str
    estimates: list[str]  # how each experiment's time was estimated, one line each
    warnings: list[str]

    @property
    def tasks(self) -> list[list[int]]:
        return [task.indices for array in self.arrays for task in array.tasks]

    @property
    def trials(self) -> int:
        return sum(map(len, self.tasks))

    def job_name(self, array: ArrayPlan) -> str:
        return self.name if len(self.arrays) == 1 else f"{self.name}-{array.time_min}m"


def plan_submission(out_dir: Path, indices: list[int], profile: Profile, trials_per_task: int | None = None,
                    workers: int | None = None, pack_seeds: bool = False, trials: list | None = None,
                    name: str | None = None) -> Plan:
    """The arrays and tasks that would run ``indices`` of the folder's manifest (or of ``trials``, for a
    dry run or a plan of a grid not yet written). ``trials_per_task``: a fixed number of trials per task
    (the pack size, with ``pack_seeds``); None: tasks by cost (``pipeline.launch.layout``)."""
    if trials is None:
        manifest = read_manifest(out_dir)
        trials, name = trials_of_manifest(manifest), str(manifest.get("grid", "grid"))
    trials = {t.index: t for t in trials}
    if not indices:
        raise ConfigError("nothing to submit: no trial selected")
    costing = layout.Costing.of(profile)
    units = [costing.unit(unit) for unit in layout.units_of(trials, indices, pack_seeds, trials_per_task)]
    used = list(dict.fromkeys(trials[i].experiment for i in indices))
    packed = {trials[u.indices[0]].experiment: True for u in units if u.packed}
    estimates = costing.describe(used, packed)
    if profile.executor == "local":
        # Workers take units round-robin: plain trials need no chunking; packs still group seeds.
        count = min(workers or profile.local_workers(), len(units))
        by_index = {u.indices[0]: u for u in units}
        shares = _balanced([u.indices for u in units], count, lambda i: trial_flops(trials[i].settings))
        tasks = [Task([by_index[unit[0]] for unit in share]) for share in shares]
        threads = max(1, (os.cpu_count() or 1) // count)
        time_min = max(math.ceil(task.reserve_s / 60) for task in tasks)
        return Plan(profile, [ArrayPlan(time_min, tasks, len(tasks))], threads, name or "grid", estimates, [])
    tasks = layout.tasks_of(units, trials_per_task if not pack_seeds or trials_per_task is None else trials_per_task,
                            pack_seeds, 60.0 * profile.min_task_min, 60.0 * profile.max_time_min)
    arrays = layout.arrays_of(tasks, profile.max_time_min, profile.array_parallelism)
    warnings = layout.over_limit_warnings(arrays, trials, costing.device)
    return Plan(profile, arrays, profile.cpus_per_task, name or "grid", estimates, warnings)


def describe_arrays(plan: Plan, trials: dict) -> list[str]:
    """The array split, one line per array: tasks, time limit, estimate, parallelism, cells."""
    lines = []
    for number, array in enumerate(plan.arrays, 1):
        cells = list(dict.fromkeys(layout.cell_of(trials[i]) for task in array.tasks for i in task.indices))
        shown = ", ".join(cells[:6]) + (f", ... ({len(cells)} cells)" if len(cells) > 6 else "")
        per_task = sorted({len(task.indices) for task in array.tasks})
        sizes = f"{per_task[0]}" if len(per_task) == 1 else f"{per_task[0]}-{per_task[-1]}"
        longest = max(task.seconds for task in array.tasks) / 60
        hours = f"{array.gpu_hours:.1f} {'GPU' if plan.profile.gpus > 0 else 'task'}-hours"
        lines.append(f"  array {number}: {len(array.tasks)} task(s) of {sizes} trial(s), --time={array.time_min} "
                     f"(longest task estimated at {longest:.0f} min), at most {array.parallelism} at once, "
                     f"{hours}: {shown}")
    return lines


def describe_plan(out_dir: Path, plan: Plan, trials: list) -> str:
    """What ``submit --dry-run`` prints: the tasks, and for SLURM the arrays and their sbatch scripts."""
    profile = plan.profile
    by_index = {t.index: t for t in trials}
    limits = ", ".join(f"{a.time_min}" for a in plan.arrays)
    lines = [f"dry run on profile {profile.name} ({profile.executor}): {plan.trials} trials in {len(plan.tasks)} "
             f"task(s), {len(plan.arrays)} array(s), time limits {limits} min; nothing was submitted",
             f"interpreter: {sys.executable} (Python {sys.version.split()[0]}): the tasks run it, so it must exist "
             "at this path on the nodes (after the profile's setup lines)",
             "estimated time per trial:", *(f"  {line}" for line in plan.estimates)]
    if profile.executor == "local":
        lines.append(f"local worker processes: {len(plan.tasks)}, {plan.threads} thread(s) each")
        gpus = share_out(visible_gpus(), len(plan.tasks), profile.gpus)
        lines.append(f"GPUs (CUDA_VISIBLE_DEVICES) of the workers: {', '.join(gpus)}" if gpus and gpus[0] is not None
                     else "no GPU visible here: the workers train on the CPU")
        return "\n".join(lines)
    lines += ["arrays (the longest first; at most " f"{profile.array_parallelism} tasks of the grid at once):",
              *describe_arrays(plan, by_index), *plan.warnings,
              f"GPU request: {profile.gpu_request() or 'none'}", "", "sbatch script of array 1:", "",
              sbatch_script(out_dir, profile, plan.job_name(plan.arrays[0]), plan.arrays[0])]
    for number, array in enumerate(plan.arrays[1:], 2):
        differing = [line for line in sbatch_script(out_dir, profile, plan.job_name(array), array).splitlines()
                     if line.startswith(("#SBATCH --array", "#SBATCH --job-name", "#SBATCH --time"))]
        lines.append(f"array {number}: the same script but " + " ".join(differing))
    return "\n".join(lines)


@contextlib.contextmanager
def _detached_from_terminal():
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


def _units(task: Task) -> list[list[int]]:
    return [list(unit.indices) for unit in task.units]


def _task_record(job, task: Task) -> dict:
    entry = {"job_id": job.job_id, "indices": task.indices}
    if any(len(unit.indices) > 1 for unit in task.units):
        entry["units"] = _units(task)  # seeds trained together
    return entry


@contextlib.contextmanager
def _interrupts_deferred():
    """Between the launch and its record, Ctrl-C (and a hang-up or a polite kill) waits: the record is
    written first, then the signal takes effect."""
    caught: list[int] = []
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def submit(out_dir: Path, plan: Plan, log=print, tensorboard: bool = False) -> dict:
    """Launch a planned submission and record it: one line of ``submissions.jsonl`` per job array (locally,
    one for the workers). The launch is recorded before it starts and completed after
    (``records.launching``), and nothing is said (``log``) before the record is written. Returns
    ``{"records": [...], "jobs": [every submitit job]}``."""
    out_dir = Path(out_dir).resolve()
    profile = plan.profile
    me = Owner.this_process()
    base = {"kind": "submission", "submitted_at": utc_now(), "hostname": me.host, "boot_id": me.boot_id,
            "pid_ns": me.pid_ns, "profile": profile.name, "profile_path": str(profile.path),
            "executor": profile.executor}
    if profile.executor != "local" and shutil.which("sbatch") is None:
        raise ConfigError(f"cluster profile {profile.name!r} needs SLURM, but sbatch is not on this machine; "
                          "accepted here: --cluster local, --dry-run (or make slurm-up and --cluster testcluster)")
    said: list[str] = []
    every_task = [task.indices for array in plan.arrays for task in array.tasks]
    with _interrupts_deferred(), launching(out_dir, base, every_task) as records:
        launch = _launch_local if profile.executor == "local" else _launch_slurm
        jobs = launch(out_dir, plan, base, records, said.append, tensorboard)
    for line in said:
        log(line)
    return {"records": records, "jobs": jobs}


def _launch_local(out_dir: Path, plan: Plan, base: dict, records: list, say, tensorboard: bool) -> list:
    profile = plan.profile
    (array,) = plan.arrays
    executor = LocalExecutor(folder=ResultsFolder(out_dir).local_jobs, max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=array.time_min, signal_delay_s=profile.signal_delay_s)
    gpus = share_out(visible_gpus(), len(array.tasks), profile.gpus)
    with _detached_from_terminal():
        jobs = [executor.submit(ArrayTask(out_dir, _units(task), plan.threads, profile.gpus > 0, cuda_devices,
                                          tensorboard))
                for task, cuda_devices in zip(array.tasks, gpus)]
    tasks = [{**_task_record(job, task), "start_ticks": process_start_ticks(int(job.job_id)),
              "cuda_visible_devices": cuda_devices} for job, task, cuda_devices in zip(jobs, array.tasks, gpus)]
    records.append({**base, "tasks": tasks, "time_min": array.time_min, "folder": str(executor.folder)})
    on_gpus = f" on GPU {', '.join(gpus)}" if gpus and gpus[0] is not None else ""
    say(f"started {len(jobs)} local worker process(es){on_gpus} for {plan.trials} trials "
        f"({plan.threads} thread(s) each); logs in {quoted(ResultsFolder(out_dir).local_jobs)}")
    return jobs


def _launch_slurm(out_dir: Path, plan: Plan, base: dict, records: list, say, tensorboard: bool) -> list:
    """One job array per cost class. If SLURM refuses a later array, the arrays already submitted are
    cancelled, and the refusal (a ConfigError) takes the submission's ``launching`` line back: the folder
    stays as it was."""
    profile = plan.profile
    executor = submitit.SlurmExecutor(folder=ResultsFolder(out_dir).array_jobs(), max_num_timeout=MAX_TIMEOUT_REQUEUES)
    jobs: list = []
    for number, array in enumerate(plan.arrays, 1):
        executor.update_parameters(**_slurm_parameters(profile, plan.job_name(array), array))
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured), executor.batch():
                launched = [executor.submit(ArrayTask(out_dir, _units(task), plan.threads, profile.gpus > 0,
                                                      tensorboard=tensorboard))
                            for task in array.tasks]
        except Exception as error:
            undone = _cancel_arrays([r["array_id"] for r in records])
            which = f"array {number} of {len(plan.arrays)} (--time={array.time_min})" if len(plan.arrays) > 1 \
                else "the array"
            raise ConfigError(f"sbatch rejected {which} on profile {profile.name}: "
                              f"{_sbatch_message(error, captured.getvalue())}{undone}") from None
        array_id = launched[0].job_id.split("_")[0]
        jobs += launched
        records.append({**base, "tasks": [_task_record(job, task) for job, task in zip(launched, array.tasks)],
                        "array_id": array_id, "time_min": array.time_min,
                        "folder": str(ResultsFolder(out_dir).array_jobs(array_id))})
        per_task = sorted({len(task.indices) for task in array.tasks})
        sizes = str(per_task[0]) if len(per_task) == 1 else f"{per_task[0]}-{per_task[-1]}"
        say(f"submitted job array {array_id} with {len(launched)} tasks ({sum(len(t.indices) for t in array.tasks)} "
            f"trials, {sizes} per task, --time={array.time_min}, at most {array.parallelism} at once) on profile "
            f"{profile.name}")
    if len(records) > 1:
        say(f"{len(records)} arrays, {plan.trials} trials: `pipeline status` follows them all, `pipeline cancel` "
            "stops them all")
    return jobs


def _cancel_arrays(array_ids: list[str]) -> str:
    """Undo the arrays of a submission that SLURM then refused in part: the folder stays as it was."""
    if not array_ids:
        return ""
    import subprocess

    result = subprocess.run(["scancel", *array_ids], capture_output=True, text=True)
    if result.returncode != 0:
        return f" (the arrays already submitted, {' '.join(array_ids)}, could not be cancelled: scancel them)"
    return f" (the array(s) already submitted, {' '.join(array_ids)}, were cancelled)"


@contextlib.contextmanager
def manifest_restored_on_failure(out_dir: Path):
    """Undo a manifest written for a submission that then failed, so that the corrected submission is not
    blocked by a grid that never ran."""
    path = ResultsFolder.of(out_dir).manifest
    before = path.read_bytes() if path.exists() else None
    try:
        yield
    except BaseException:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise
