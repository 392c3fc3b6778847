"""Submitting trials of a results folder as one submitit job array (SLURM) or as local processes.

Every submission is appended to ``OUT/submissions.jsonl`` (job ids and the trial indices of each task),
which is how ``status``, ``resubmit`` and ``cancel`` find the grid's tasks in the queue later.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import submitit

from ..config import ConfigError
from ..store import utc_now
from ..trial import read_manifest, trials_of_manifest
from .profiles import Profile
from .task import TrialPackTask

SUBMISSIONS = "submissions.jsonl"
# Preemptions requeue without limit; time-outs are requeued this often (a long trial spans several).
MAX_TIMEOUT_REQUEUES = 20


def packs_of(indices: list[int], trials_per_task: int) -> list[list[int]]:
    size = max(1, int(trials_per_task))
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _time_limit(profile: Profile, experiments: list[str]) -> int:
    return sum(profile.time_limit(e) for e in experiments)


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
           workers: int | None = None, log=print) -> dict:
    """Submit the manifest's trials ``indices``; returns the submission record."""
    out_dir = Path(out_dir).resolve()
    manifest = read_manifest(out_dir)
    trials = trials_of_manifest(manifest)
    if not indices:
        raise ConfigError("nothing to submit: no trial selected")
    record = {"submitted_at": utc_now(), "hostname": socket.gethostname(), "profile": profile.name,
              "executor": profile.executor, "tasks": []}
    if profile.executor == "local":
        workers = workers or profile.local_workers()
        workers = min(workers, len(indices))
        # One process per worker, each taking every workers-th trial: at most `workers` trials at a time.
        shares = [indices[w::workers] for w in range(workers)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        time_min = max(_time_limit(profile, [trials[i].experiment for i in share]) for share in shares)
        executor = submitit.LocalExecutor(folder=out_dir / "submitit" / "local")
        executor.update_parameters(timeout_min=time_min)
        jobs = [executor.submit(TrialPackTask(out_dir, share, threads)) for share in shares]
        record["tasks"] = [{"job_id": job.job_id, "indices": share} for job, share in zip(jobs, shares)]
        log(f"started {len(jobs)} local worker process(es) for {len(indices)} trials "
            f"({threads} thread(s) each); logs in {out_dir / 'submitit' / 'local'}")
    else:
        packs = packs_of(indices, trials_per_task)
        time_min = max(_time_limit(profile, [trials[i].experiment for i in pack]) for pack in packs)
        executor = _slurm_executor(out_dir, profile, f"{manifest['grid']}", time_min)
        with executor.batch():
            jobs = [executor.submit(TrialPackTask(out_dir, pack, profile.cpus_per_task)) for pack in packs]
        record["tasks"] = [{"job_id": job.job_id, "indices": pack} for job, pack in zip(jobs, packs)]
        array_id = jobs[0].job_id.split("_")[0]
        log(f"submitted job array {array_id} with {len(jobs)} tasks ({len(indices)} trials, "
            f"{trials_per_task} per task, at most {profile.array_parallelism} at once) on profile {profile.name}")
    record["folder"] = str(executor.folder)
    with open(out_dir / SUBMISSIONS, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    record["jobs"] = jobs
    return record


def read_submissions(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / SUBMISSIONS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(out_dir: Path, poll_s: float = 2.0, log=print) -> None:
    """Block until no task of the grid is queued or running, showing trials complete."""
    from tqdm import tqdm

    from .monitor import gather

    states = gather(out_dir)
    with tqdm(total=len(states), desc="trials complete", unit="trial", dynamic_ncols=True) as bar:
        while True:
            states = gather(out_dir)
            bar.n = sum(s.state == "complete" for s in states)
            bar.refresh()
            if not any(s.in_queue for s in states):
                break
            time.sleep(poll_s)
