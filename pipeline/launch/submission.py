"""Submitting trials of a results folder as one submitit job array (SLURM) or as local processes.

Every submission is appended to ``OUT/submissions.jsonl`` (job ids and the trial indices of each task),
which is how ``status``, ``resubmit`` and ``cancel`` find the grid's tasks in the queue later.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import submitit

from ..experiments import packable
from ..manifest import read_manifest, trials_of_manifest, utc_now
from ..settings import ConfigError
from .profiles import Profile
from .records import append_record
from .task import ArrayTask, pack_units
# Preemptions requeue without limit; time-outs are requeued this often (a long trial spans several).
MAX_TIMEOUT_REQUEUES = 20


def chunks(indices: list[int], size: int) -> list[list[int]]:
    size = max(1, int(size))
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def task_indices(trials, indices: list[int], trials_per_task: int, pack_seeds: bool) -> list[list[int]]:
    """The trial indices of each task. With seed packing, trials equal but for the seed share a task (and
    one packed training); the other trials are chunked as they come."""
    if not pack_seeds:
        return chunks(indices, trials_per_task)
    units = pack_units([trials[i] for i in indices], trials_per_task)
    alone = [unit[0].index for unit in units if len(unit) == 1]
    packed = [[t.index for t in unit] for unit in units if len(unit) > 1]
    return chunks(alone, trials_per_task) + packed


# A packed training of k seeds is given the time of ceil(k / PACKED_SEEDS_PER_TRIAL_TIME) single trials:
# packing is several times faster per seed, and a task that runs out of time is requeued and resumes.
PACKED_SEEDS_PER_TRIAL_TIME = 4


def _time_limit(profile: Profile, trials: list, pack_seeds: bool = False) -> int:
    """Minutes for a task that runs ``trials`` one after the other, or packed when they are one pack."""
    if pack_seeds and len(trials) > 1 and packable(trials):
        return -(-len(trials) // PACKED_SEEDS_PER_TRIAL_TIME) * profile.time_limit(trials[0].experiment)
    return sum(profile.time_limit(t.experiment) for t in trials)


def _slurm_executor(out_dir: Path, profile: Profile, name: str, time_min: int) -> submitit.SlurmExecutor:
    if shutil.which("sbatch") is None:
        raise ConfigError(f"cluster profile {profile.name!r} needs SLURM, but sbatch is not on this machine; "
                          "accepted here: --cluster local (or make slurm-up and --cluster testcluster)")
    executor = submitit.SlurmExecutor(folder=out_dir / "submitit" / "%A", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    parameters = dict(job_name=name, time=time_min, cpus_per_task=profile.cpus_per_task, mem=f"{profile.mem_gb}GB",
                      array_parallelism=profile.array_parallelism, signal_delay_s=profile.signal_delay_s,
                      setup=list(profile.setup), **profile.gpu_request())
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key):
            parameters[key] = getattr(profile, key)
    if profile.additional:
        parameters["additional_parameters"] = dict(profile.additional)
    executor.update_parameters(**parameters)
    return executor


def submit(out_dir: Path, indices: list[int], profile: Profile, trials_per_task: int = 1,
           workers: int | None = None, pack_seeds: bool = False, log=print) -> dict:
    """Submit the manifest's trials ``indices``; returns the submission record."""
    out_dir = Path(out_dir).resolve()
    manifest = read_manifest(out_dir)
    trials = trials_of_manifest(manifest)
    if not indices:
        raise ConfigError("nothing to submit: no trial selected")
    record = {"submitted_at": utc_now(), "hostname": socket.gethostname(), "profile": profile.name,
              "executor": profile.executor, "tasks": []}
    # Locally, workers take units round-robin, so plain trials need no chunking; packs still group seeds.
    unit_size = trials_per_task if profile.executor == "slurm" or pack_seeds else 1
    units = task_indices(trials, indices, unit_size, pack_seeds)
    if profile.executor == "local":
        workers = workers or profile.local_workers()
        workers = min(workers, len(units))
        # One process per worker, each taking every workers-th unit: at most `workers` trainings at a time.
        shares = [[i for unit in units[w::workers] for i in unit] for w in range(workers)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        time_min = max(_time_limit(profile, [trials[i] for i in share], pack_seeds) for share in shares)
        executor = submitit.LocalExecutor(folder=out_dir / "submitit" / "local")
        executor.update_parameters(timeout_min=time_min)
        jobs = [executor.submit(ArrayTask(out_dir, share, threads, pack_seeds, trials_per_task))
                for share in shares]
        record["tasks"] = [{"job_id": job.job_id, "indices": share} for job, share in zip(jobs, shares)]
        log(f"started {len(jobs)} local worker process(es) for {len(indices)} trials "
            f"({threads} thread(s) each); logs in {out_dir / 'submitit' / 'local'}")
    else:
        time_min = max(_time_limit(profile, [trials[i] for i in unit], pack_seeds) for unit in units)
        executor = _slurm_executor(out_dir, profile, f"{manifest['grid']}", time_min)
        with executor.batch():
            jobs = [executor.submit(ArrayTask(out_dir, unit, profile.cpus_per_task, pack_seeds, trials_per_task))
                    for unit in units]
        record["tasks"] = [{"job_id": job.job_id, "indices": unit} for job, unit in zip(jobs, units)]
        array_id = jobs[0].job_id.split("_")[0]
        log(f"submitted job array {array_id} with {len(jobs)} tasks ({len(indices)} trials, "
            f"{trials_per_task} per task, at most {profile.array_parallelism} at once) on profile {profile.name}")
    record["folder"] = str(executor.folder)
    append_record(out_dir, record)
    record["jobs"] = jobs
    return record
