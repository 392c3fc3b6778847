"""The SLURM backend: a submission's tasks as submitit job arrays, one per cost class, followed through the
queue (``slurm_queue``: never mistaking silence for an answer) and stopped with ``scancel``."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import SchedulerError
from pipeline.folder import ResultsFolder
from pipeline.launch import layout, sealed
from pipeline.launch.backends.base import Backend, Cancellation, Say
from pipeline.launch.layout import MAX_TIMEOUT_REQUEUES, ArrayPlan, Plan
from pipeline.launch.profiles import Profile
from pipeline.leases.ownership import Owner
from pipeline.names import check_script_text
from pipeline.schedulers import slurm_queue
from pipeline.schedulers.base import QueueView
from pipeline.settings import ConfigError
from pipeline.stopping import CANCEL_SIGNAL

# How long cancel waits for SLURM tasks to save their last epoch before it kills what is left.
CANCEL_GRACE_S = float(os.environ.get("PIPELINE_CANCEL_GRACE_S", 120))
# Tasks in these states run the training process: they are asked to save and stop; the others just go.
RUNNING_STATES = ("RUNNING", "COMPLETING", "CONFIGURING")


@contextlib.contextmanager
def _submitit_files_removed_on_refusal(folder: Path) -> Iterator[None]:
    """Remove what submitit wrote for the arrays of a submission that sbatch refused (their pickled tasks and
    sbatch scripts, at the top of its folder; arrays submitted before the refusal are cancelled), so that a
    refused submission leaves the folder as it was. Only new files at the top are touched: arrays keep their
    own folders below it."""
    existed = folder.exists()
    before = set(os.listdir(folder)) if existed else set()
    try:
        yield
    except SchedulerError:
        if folder.exists():
            for name in set(os.listdir(folder)) - before:
                leftover = folder / name
                if leftover.is_file() and not leftover.is_symlink():
                    leftover.unlink(missing_ok=True)
            if not existed:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def slurm_parameters(profile: Profile, name: str, array: ArrayPlan) -> dict:
    """The submitit SlurmExecutor parameters of an array on this profile. The job name comes from a grid's
    name (or a manifest's): a line break in it would end its ``#SBATCH`` line and start a shell command."""
    check_script_text(name, "the job name (the grid's name)")
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
    """The sbatch script submitit would submit for one array (needs no SLURM here). submitit makes it in a
    private function; the dry run shows exactly what it would submit, so it calls that one."""
    from submitit.slurm.slurm import _make_sbatch_string  # deferred: submitit, kept out of planning and status

    folder = array_folder(out_dir)
    return _make_sbatch_string(command=sealed.command(shlex.quote(sys.executable), folder), folder=folder,
                               map_count=len(array.tasks), **slurm_parameters(profile, name, array))


def array_folder(out_dir: Path, array_id: str | None = None) -> Path:
    """submitit's folder of an array in the results folder, whose path the sbatch script carries (its log
    files, its command): the results folder's path must hold no line break."""
    out = Path(out_dir).resolve()
    check_script_text(str(out), "the results folder")
    folder = ResultsFolder(out)
    return folder.array_jobs() if array_id is None else folder.array_jobs(array_id)


def sealed_executor(folder: Path) -> Any:
    """submitit's SlurmExecutor whose tasks run ``pipeline.launch.sealed``: they unpickle only what their
    own submission sealed."""
    import submitit  # deferred: submitit, kept out of planning and status

    class SealedSlurmExecutor(submitit.SlurmExecutor):
        @property
        def _submitit_command_str(self) -> str:
            return sealed.command(self.python, self.folder)

    return SealedSlurmExecutor(folder=folder, max_num_timeout=MAX_TIMEOUT_REQUEUES)


def sbatch_message(error: Exception, captured: str) -> str:
    """SLURM's own words for a rejected submission, on one line."""
    text = f"{error}\n{captured}"
    lines = [line.strip() for line in text.splitlines() if "sbatch: error:" in line]
    if not lines:
        lines = [line.strip() for line in text.splitlines() if line.strip()][:2]
    return " ".join(dict.fromkeys(lines))


def scancel(arguments: list[str]) -> None:
    result = subprocess.run(["scancel", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise SchedulerError(f"scancel failed: {' '.join(result.stderr.split())}")


def cancel_arrays(array_ids: list[str]) -> str:
    """Undo the arrays of a submission that SLURM then refused in part: the folder stays as it was."""
    if not array_ids:
        return ""
    result = subprocess.run(["scancel", *array_ids], capture_output=True, text=True)
    if result.returncode != 0:
        return f" (the arrays already submitted, {' '.join(array_ids)}, could not be cancelled: scancel them)"
    return f" (the array(s) already submitted, {' '.join(array_ids)}, were cancelled)"


def last_log_line(folder: str, job_id: str) -> str:
    """The last line of a task's stderr, where submitit keeps it (``JobPaths``), but srun's own word on how
    the task exited ("srun: error: node: task 0: Exited with exit code 2"), which says nothing of why."""
    from submitit.core.utils import JobPaths  # deferred: submitit, kept out of planning and status

    try:
        lines = JobPaths(folder, job_id=job_id, task_id=0).stderr.read_text().strip().splitlines()
    except OSError:
        return ""
    lines = [line for line in lines if not line.startswith("srun: ")] or lines
    return lines[-1][:200] if lines else ""


def check_partition(profile: Profile, partitions: dict[str, list[str]] | None) -> None:
    """Before anything is queued: the profile's partition exists on this SLURM and, where the profile requests
    GPUs, has some (``partitions``: name -> its nodes' generic resources, from ``sinfo``; None where sinfo did
    not answer, and sbatch is left to judge). A GPU profile on a cluster without GPUs is refused in one line
    here, rather than by sbatch's words or, worse, after waiting in the queue."""
    if partitions is None:
        return
    default = next((name for name in partitions if name.endswith("*")), None)
    wanted = profile.partition or (default or "").rstrip("*")
    found = partitions.get(wanted, partitions.get(f"{wanted}*"))
    if found is None:
        names = ", ".join(name.rstrip("*") for name in partitions)
        raise ConfigError(f"profile {profile.name} asks for partition {wanted!r}, but this SLURM has {names} (sinfo): "
                          f"set partition in {profile.path or profile.name}, or use this cluster's profile")
    if profile.gpus > 0:
        gpus = [g for g in found if "gpu" in g.lower()]
        kind = profile.gpu_type.lower()
        if not gpus or (kind and not any(kind in g.lower() for g in gpus)):
            has = ", ".join(sorted(set(found))) or "none"
            want = f"{profile.gpus} x {profile.gpu_type or 'GPU'}"
            raise ConfigError(f"profile {profile.name} requests {want} per task, but partition {wanted!r} of this SLURM "
                              f"has no such GPU (sinfo generic resources: {has}): use a profile without GPUs here "
                              "(e.g. --cluster testcluster), or submit on the GPU cluster")


class SlurmBackend(Backend):
    name = "slurm"
    waits = False

    def tasks(self, units: list[layout.Unit], trials: dict, trials_per_task: int | None, pack_seeds: bool,
              workers: int | None, device: str) -> tuple[list[ArrayPlan], int, list[str]]:
        profile = self.profile
        tasks = layout.tasks_of(units, trials_per_task, pack_seeds, 60.0 * profile.min_task_min,
                                60.0 * profile.max_time_min)
        arrays = layout.arrays_of(tasks, profile.max_time_min, profile.array_parallelism)
        return arrays, profile.cpus_per_task, layout.over_limit_warnings(arrays, trials, device)

    def describe(self, out_dir: Path, plan: Plan, trials: dict) -> list[str]:
        profile = self.profile
        lines = ["arrays (the longest first; at most " f"{profile.array_parallelism} tasks of the grid at once):",
                 *layout.describe_arrays(plan.arrays, trials, profile.gpus > 0), *plan.warnings,
                 f"GPU request: {profile.gpu_request_words()}", "", "sbatch script of array 1:", "",
                 sbatch_script(out_dir, profile, plan.job_name(plan.arrays[0]), plan.arrays[0])]
        for number, array in enumerate(plan.arrays[1:], 2):
            differing = [line for line in sbatch_script(out_dir, profile, plan.job_name(array), array).splitlines()
                         if line.startswith(("#SBATCH --array", "#SBATCH --job-name", "#SBATCH --time"))]
            lines.append(f"array {number}: the same script but " + " ".join(differing))
        return lines

    def plan_lines(self, plan: Plan, trials: dict) -> list[str]:
        profile = self.profile
        return [f"arrays that `submit --cluster {profile.name}` would make ({len(plan.tasks)} tasks, at most "
                f"{profile.array_parallelism} at once):", *layout.describe_arrays(plan.arrays, trials, profile.gpus > 0),
                *plan.warnings]

    def check_available(self) -> None:
        if shutil.which("sbatch") is None:
            raise ConfigError(f"cluster profile {self.profile.name!r} needs SLURM, but sbatch is not on this machine; "
                              "accepted here: --cluster local, --dry-run (or make slurm-up and --cluster testcluster)")
        check_partition(self.profile, slurm_queue.read_partitions())


    def launch(self, out_dir: Path, plan: Plan, base: dict, records: list[dict], say: Say,
               sinks: tuple[str, ...] = ()) -> list[Any]:
        """One job array per cost class. If SLURM refuses a later array, the arrays already submitted are
        cancelled, and the refusal (a SchedulerError) takes the submission's ``launching`` line back: the folder
        stays as it was."""
        executor = sealed_executor(array_folder(out_dir))
        jobs: list = []
        # The key reaches the tasks through sbatch's copy of the environment.
        with _submitit_files_removed_on_refusal(ResultsFolder(out_dir).submitit), sealed.sealing(sealed.new_key()):
            self._launch_arrays(executor, out_dir, plan, base, records, say, sinks, jobs)
        if len(records) > 1:
            say(f"{len(records)} arrays, {plan.trials} trials: `pipeline status` follows them all, `pipeline cancel` "
                "stops them all")
        return jobs

    def _launch_arrays(self, executor: Any, out_dir: Path, plan: Plan, base: dict, records: list[dict], say: Say,
                       sinks: tuple[str, ...], jobs: list) -> None:
        from pipeline.launch.task import ArrayTask  # deferred: submitit (the task is submitit's)

        profile = self.profile
        folder = ResultsFolder(out_dir)
        for number, array in enumerate(plan.arrays, 1):
            executor.update_parameters(**slurm_parameters(profile, plan.job_name(array), array))
            captured = io.StringIO()
            try:
                with contextlib.redirect_stderr(captured), executor.batch():
                    launched = [executor.submit(ArrayTask(out_dir, task.units_indices, plan.threads, profile.gpus > 0,
                                                          sinks=sinks))
                                for task in array.tasks]
            except Exception as error:
                undone = cancel_arrays([r["array_id"] for r in records])
                which = f"array {number} of {len(plan.arrays)} (--time={array.time_min})" if len(plan.arrays) > 1 \
                    else "the array"
                raise SchedulerError(f"sbatch rejected {which} on profile {profile.name}: "
                                  f"{sbatch_message(error, captured.getvalue())}{undone}") from None
            array_id = launched[0].job_id.split("_")[0]
            jobs += launched
            records.append({**base, "tasks": [task.record(job.job_id) for job, task in zip(launched, array.tasks)],
                            "array_id": array_id, "time_min": array.time_min,
                            "folder": str(folder.array_jobs(array_id))})
            per_task = sorted({len(task.indices) for task in array.tasks})
            sizes = str(per_task[0]) if len(per_task) == 1 else f"{per_task[0]}-{per_task[-1]}"
            trials = sum(len(t.indices) for t in array.tasks)
            say(f"submitted job array {array_id} with {len(launched)} tasks ({trials} trials, {sizes} per task, "
                f"--time={array.time_min}, at most {array.parallelism} at once) on profile {profile.name}")

    def task_state(self, out_dir: Path, record: dict, task: dict, queue: QueueView) -> tuple[bool | None, str]:
        job_id = task["job_id"]
        states = queue.states()
        if states is None:
            return None, f"squeue did not answer: job {job_id} may still be queued or running"
        state = states.get(job_id)
        return (state is not None), (state or "").lower()

    def ended_how(self, job_ids: list[str]) -> dict[str, str]:
        return slurm_queue.read_accounting(job_ids)

    def gather_cancellation(self, out_dir: Path, record: dict, queue: QueueView, me: Owner,
                            found: Cancellation) -> None:
        states = queue.states()
        if states is None:
            raise SchedulerError("squeue did not answer, so which tasks of this grid are queued is unknown; "
                              "nothing was cancelled: retry when SLURM answers")
        for task in record["tasks"]:
            if task["job_id"] in states:
                found.live[task["job_id"]] = states[task["job_id"]]
        found.job_ids += [job for job in found.live if job not in found.job_ids]

    def cancel(self, found: Cancellation, log: Say) -> None:
        """Cancel the waiting tasks at once (so that none starts meanwhile); send the running ones the cancel
        signal, which reaches the training process on whichever node (it saves its last epoch, says
        ``cancelled`` in its file and ends); kill whatever is still there after CANCEL_GRACE_S."""
        live = found.live
        if not live:
            return
        running = [job for job, state in live.items() if state in RUNNING_STATES]
        waiting = [job for job in live if job not in running]
        if waiting:
            scancel(waiting)
        if not running:
            return
        scancel([f"--signal={CANCEL_SIGNAL.name.removeprefix('SIG')}", *running])
        log(f"asked {len(running)} running SLURM task(s) to save their last epoch and stop")
        deadline = time.time() + CANCEL_GRACE_S
        left = running
        while left and time.time() < deadline:
            time.sleep(1.0)
            states = self.scheduler.read_queue()
            if states is not None:
                left = [job for job in left if job in states]
        if left:
            log(f"{len(left)} task(s) did not stop within {CANCEL_GRACE_S:.0f} s of the signal: cancelling them outright")
            scancel(left)
