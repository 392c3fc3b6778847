"""Submitting trials of a results folder: one submitit job array on SLURM, or local worker processes.

Everything a submission decides and records happens under the folder's guard
(``pipeline.ownership.guard_folder``): which trials still need running, the manifest, the launch and the
line in ``OUT/submissions.jsonl``. Two concurrent submissions into one folder therefore never both launch
a trial. A submission that SLURM rejects leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import submitit

from .. import experiments
from ..cost import trial_flops
from ..manifest import MANIFEST, read_manifest, trials_of_manifest, utc_now
from ..ownership import Owner, process_start_ticks
from ..settings import ConfigError, quoted
from .local_controller import LocalExecutor
from .local_gpus import share_out, visible_gpus
from .profiles import Profile
from .records import launching
from .task import ArrayTask, pack_units

# Preemptions requeue without limit; time-outs are requeued this often (a long trial spans several), on
# SLURM and locally alike.
MAX_TIMEOUT_REQUEUES = 20
# A packed training of k seeds is given the time of ceil(k / PACKED_SEEDS_PER_TRIAL_TIME) single trials:
# packing is several times faster per seed, and a task that runs out of time is requeued and resumes.
PACKED_SEEDS_PER_TRIAL_TIME = 4


def chunks(indices: list[int], size: int) -> list[list[int]]:
    size = max(1, int(size))
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def task_indices(trials: dict, indices: list[int], trials_per_task: int, pack_seeds: bool) -> list[list[int]]:
    """The trial indices of each task. With seed packing, trials equal but for the seed share a task (and
    one packed training); the other trials are chunked as they come."""
    if not pack_seeds:
        return chunks(indices, trials_per_task)
    units = pack_units([trials[i] for i in indices], trials_per_task)
    alone = [unit[0].index for unit in units if len(unit) == 1]
    packed = [[t.index for t in unit] for unit in units if len(unit) > 1]
    return chunks(alone, trials_per_task) + packed


def _balanced(units: list[list[int]], workers: int, cost) -> list[list[int]]:
    """Units of trials shared among ``workers`` local processes (at most that many trainings at a time) so
    that they finish together: the costliest unit first, each to the least loaded worker (by the analytic
    cost); each worker then runs its trials in grid order."""
    loads = [0.0] * workers
    shares: list[list[int]] = [[] for _ in range(workers)]
    for unit in sorted(units, key=lambda u: -sum(cost(i) for i in u)):
        worker = loads.index(min(loads))
        loads[worker] += sum(cost(i) for i in unit)
        shares[worker] += unit
    return [sorted(share) for share in shares if share]


def _time_limit(profile: Profile, trials: list, pack_seeds: bool = False) -> int:
    """Minutes for a task that runs ``trials`` one after the other, or packed when they are one pack."""
    if pack_seeds and len(trials) > 1 and experiments.packable(trials):
        return -(-len(trials) // PACKED_SEEDS_PER_TRIAL_TIME) * profile.time_limit(trials[0].experiment)
    return sum(profile.time_limit(t.experiment) for t in trials)


def _slurm_parameters(profile: Profile, name: str, time_min: int) -> dict:
    """The submitit SlurmExecutor parameters of an array on this profile."""
    parameters = dict(job_name=name, time=time_min, cpus_per_task=profile.cpus_per_task, mem=f"{profile.mem_gb}GB",
                      array_parallelism=profile.array_parallelism, signal_delay_s=profile.signal_delay_s,
                      setup=list(profile.setup), **profile.gpu_request())
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            parameters[key] = getattr(profile, key)
    if profile.additional:
        parameters["additional_parameters"] = dict(profile.additional)
    return parameters


def sbatch_script(out_dir: Path, profile: Profile, name: str, time_min: int, tasks: int) -> str:
    """The sbatch script submitit would submit for an array of ``tasks`` tasks (needs no SLURM here)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(out_dir).resolve() / "submitit" / "%A"
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=tasks,
                               **_slurm_parameters(profile, name, time_min))


def _sbatch_message(error: Exception, captured: str) -> str:
    """SLURM's own words for a rejected submission, on one line."""
    text = f"{error}\n{captured}"
    lines = [line.strip() for line in text.splitlines() if "sbatch: error:" in line]
    if not lines:
        lines = [line.strip() for line in text.splitlines() if line.strip()][:2]
    return " ".join(dict.fromkeys(lines))


@dataclass
class Plan:
    """What one submission launches: the tasks (trial indices each) and their time limit."""

    profile: Profile
    tasks: list[list[int]]
    time_min: int
    threads: int
    pack_seeds: bool
    trials_per_task: int
    name: str


def plan_submission(out_dir: Path, indices: list[int], profile: Profile, trials_per_task: int = 1,
                    workers: int | None = None, pack_seeds: bool = False, trials: list | None = None,
                    name: str | None = None) -> Plan:
    """The tasks that would run ``indices`` of the folder's manifest (or of ``trials``, for a dry run of a
    grid not yet written)."""
    if trials is None:
        manifest = read_manifest(out_dir)
        trials, name = trials_of_manifest(manifest), str(manifest.get("grid", "grid"))
    trials = {t.index: t for t in trials}
    if not indices:
        raise ConfigError("nothing to submit: no trial selected")
    # Locally, workers take units round-robin, so plain trials need no chunking; packs still group seeds.
    unit_size = trials_per_task if profile.executor == "slurm" or pack_seeds else 1
    units = task_indices(trials, indices, unit_size, pack_seeds)
    if profile.executor == "local":
        count = min(workers or profile.local_workers(), len(units))
        tasks = _balanced(units, count, lambda i: trial_flops(trials[i].settings))
        threads = max(1, (os.cpu_count() or 1) // count)
    else:
        tasks, threads = units, profile.cpus_per_task
    time_min = max(_time_limit(profile, [trials[i] for i in task], pack_seeds) for task in tasks)
    return Plan(profile, tasks, time_min, threads, pack_seeds, trials_per_task, name or "grid")


def describe_plan(out_dir: Path, plan: Plan) -> str:
    """What ``submit --dry-run`` prints: the tasks, and for SLURM the array's sbatch script."""
    profile = plan.profile
    lines = [f"dry run on profile {profile.name} ({profile.executor}): {sum(map(len, plan.tasks))} trials in "
             f"{len(plan.tasks)} task(s), time limit {plan.time_min} min per task; nothing was submitted"]
    if profile.executor == "local":
        lines.append(f"local worker processes: {len(plan.tasks)}, {plan.threads} thread(s) each")
        gpus = share_out(visible_gpus(), len(plan.tasks), profile.gpus)
        lines.append(f"GPUs (CUDA_VISIBLE_DEVICES) of the workers: {', '.join(gpus)}" if gpus and gpus[0] is not None
                     else "no GPU visible here: the workers train on the CPU")
        return "\n".join(lines)
    lines += [f"array: {len(plan.tasks)} tasks, at most {profile.array_parallelism} at once; "
              f"GPU request: {profile.gpu_request() or 'none'}", "", "sbatch script:", "",
              sbatch_script(out_dir, profile, plan.name, plan.time_min, len(plan.tasks))]
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


def submit(out_dir: Path, plan: Plan, log=print) -> dict:
    """Launch a planned submission and record it; returns the record (with the submitit jobs). The launch
    is recorded before it starts and completed after (``records.launching``); nothing is printed before."""
    out_dir = Path(out_dir).resolve()
    profile = plan.profile
    me = Owner.this_process()
    record = {"kind": "submission", "submitted_at": utc_now(), "hostname": me.host, "boot_id": me.boot_id,
              "pid_ns": me.pid_ns, "profile": profile.name, "profile_path": str(profile.path),
              "executor": profile.executor, "tasks": []}
    if profile.executor != "local" and shutil.which("sbatch") is None:
        raise ConfigError(f"cluster profile {profile.name!r} needs SLURM, but sbatch is not on this machine; "
                          "accepted here: --cluster local, --dry-run (or make slurm-up and --cluster testcluster)")
    with _interrupts_deferred(), launching(out_dir, record, plan.tasks):
        if profile.executor == "local":
            jobs, message = _launch_local(out_dir, plan, record)
        else:
            jobs, message = _launch_slurm(out_dir, plan, record)
    log(message)
    record["jobs"] = jobs
    return record


def _launch_local(out_dir: Path, plan: Plan, record: dict) -> tuple[list, str]:
    profile = plan.profile
    executor = LocalExecutor(folder=out_dir / "submitit" / "local", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=plan.time_min, signal_delay_s=profile.signal_delay_s)
    gpus = share_out(visible_gpus(), len(plan.tasks), profile.gpus)
    with _detached_from_terminal():
        jobs = [executor.submit(ArrayTask(out_dir, task, plan.threads, plan.pack_seeds, plan.trials_per_task,
                                          profile.gpus > 0, cuda_devices))
                for task, cuda_devices in zip(plan.tasks, gpus)]
    record["tasks"] = [{"job_id": job.job_id, "indices": task, "start_ticks": process_start_ticks(int(job.job_id)),
                        "cuda_visible_devices": cuda_devices}
                       for job, task, cuda_devices in zip(jobs, plan.tasks, gpus)]
    record["folder"] = str(executor.folder)
    on_gpus = f" on GPU {', '.join(gpus)}" if gpus and gpus[0] is not None else ""
    return jobs, (f"started {len(jobs)} local worker process(es){on_gpus} for {sum(map(len, plan.tasks))} trials "
                  f"({plan.threads} thread(s) each); logs in {quoted(out_dir / 'submitit' / 'local')}")


def _launch_slurm(out_dir: Path, plan: Plan, record: dict) -> tuple[list, str]:
    profile = plan.profile
    executor = submitit.SlurmExecutor(folder=out_dir / "submitit" / "%A", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(**_slurm_parameters(profile, plan.name, plan.time_min))
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), executor.batch():
            jobs = [executor.submit(ArrayTask(out_dir, task, plan.threads, plan.pack_seeds, plan.trials_per_task,
                                              profile.gpus > 0))
                    for task in plan.tasks]
    except Exception as error:
        raise ConfigError(f"sbatch rejected the array on profile {profile.name}: "
                          f"{_sbatch_message(error, captured.getvalue())}") from None
    record["tasks"] = [{"job_id": job.job_id, "indices": task} for job, task in zip(jobs, plan.tasks)]
    record["folder"] = str(executor.folder)
    array_id = jobs[0].job_id.split("_")[0]
    return jobs, (f"submitted job array {array_id} with {len(jobs)} tasks ({sum(map(len, plan.tasks))} trials, "
                  f"{plan.trials_per_task} per task, at most {profile.array_parallelism} at once) on profile "
                  f"{profile.name}")


@contextlib.contextmanager
def manifest_restored_on_failure(out_dir: Path):
    """Undo a manifest written for a submission that then failed, so that the corrected submission is not
    blocked by a grid that never ran."""
    path = Path(out_dir) / MANIFEST
    before = path.read_bytes() if path.exists() else None
    try:
        yield
    except BaseException:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise
