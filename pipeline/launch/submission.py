"""Submitting trials of a results folder: through the backend of the cluster profile
(``pipeline.launch.backends``: job arrays on SLURM, worker processes on this machine).

Everything a submission decides and records happens under the folder's guard
(``pipeline.leases.ownership.guard_folder``): which trials still need running, the manifest, the launch and the
line in ``OUT/submissions.jsonl``. Two concurrent submissions into one folder therefore never both launch
a trial. A submission that SLURM rejects leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.folder import ResultsFolder
from pipeline.launch import layout
from pipeline.launch.backends import backend_of
from pipeline.launch.layout import Plan
from pipeline.launch.profiles import Profile
from pipeline.launch.records import launching
from pipeline.launch.stop_signals import LaunchStopped, deferred_during_launch
from pipeline.leases.ownership import Owner
from pipeline.settings import ConfigError
from pipeline.trialfile.manifest import read_manifest, trials_of_manifest, utc_now


@dataclass(frozen=True)
class LaunchOptions:
    """How a submission runs its trials, recorded with it (``options`` in ``submissions.jsonl``) so that
    ``resubmit`` runs them the same way: the curve sinks (``pipeline.run.curve_sinks``), the trials per task and
    seed packing, the local workers, and the grid's overrides (for the record: the manifest holds the
    trials they made)."""

    sinks: tuple[str, ...] = ()
    trials_per_task: int | None = None
    pack_seeds: bool = False
    workers: int | None = None
    overrides: tuple[tuple[str, str], ...] = ()

    def record(self) -> dict:
        return {"sinks": list(self.sinks), "trials_per_task": self.trials_per_task, "pack_seeds": self.pack_seeds,
                "workers": self.workers, "overrides": dict(self.overrides)}

    @classmethod
    def of_record(cls, record: dict) -> LaunchOptions | None:
        """The options a submission record holds; None for records written before they were recorded."""
        found = record.get("options")
        if not isinstance(found, dict):
            return None
        per_task = found.get("trials_per_task")
        workers = found.get("workers")
        return cls(tuple(str(s) for s in found.get("sinks", [])), int(per_task) if per_task else None,
                   bool(found.get("pack_seeds", False)), int(workers) if workers else None,
                   tuple(sorted((str(k), str(v)) for k, v in dict(found.get("overrides", {})).items())))

    def words(self) -> str:
        """As the command line would say it: "--tensorboard --trials-per-task 4 --pack-seeds" (the overrides made
        the folder's trials and are not repeated: a resubmission runs the trials of the manifest)."""
        parts = [f"--{name}" for name in self.sinks]
        if self.trials_per_task is not None:
            parts.append(f"--trials-per-task {self.trials_per_task}")
        if self.pack_seeds:
            parts.append("--pack-seeds")
        if self.workers is not None:
            parts.append(f"--workers {self.workers}")
        return " ".join(parts) or "no options"


def plan_submission(out_dir: Path | None, indices: list[int], profile: Profile, trials_per_task: int | None = None,
                    workers: int | None = None, pack_seeds: bool = False, trials: list | None = None,
                    name: str | None = None) -> Plan:
    """The arrays and tasks that would run ``indices`` of the folder's manifest (or of ``trials``, for a
    dry run or a plan of a grid not yet written). ``trials_per_task``: a fixed number of trials per task
    (the pack size, with ``pack_seeds``); None: tasks by cost (``pipeline.launch.layout``)."""
    if trials is None:
        if out_dir is None:
            raise ValueError("plan_submission needs a results folder or the trials")
        manifest = read_manifest(out_dir)
        trials, name = trials_of_manifest(manifest), str(manifest.get("grid", "grid"))
    by_index = {t.index: t for t in trials}
    if not indices:
        raise ConfigError("nothing to submit: no trial selected")
    costing = layout.Costing.of(profile)
    units = [costing.unit(unit) for unit in layout.units_of(by_index, indices, pack_seeds, trials_per_task)]
    used = list(dict.fromkeys(by_index[i].experiment for i in indices))
    packed = {by_index[u.indices[0]].experiment: True for u in units if u.packed}
    estimates = costing.describe(used, packed)
    arrays, threads, warnings = backend_of(profile).tasks(units, by_index, trials_per_task, pack_seeds, workers,
                                                          costing.device)
    return Plan(profile, arrays, threads, name or "grid", estimates, warnings)


def describe_arrays(plan: Plan, trials: dict) -> list[str]:
    """The array split, one line per array (``layout.describe_arrays``)."""
    return layout.describe_arrays(plan.arrays, trials, plan.profile.gpus > 0)


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
    return "\n".join(lines + backend_of(profile).describe(out_dir, plan, by_index))


def submit(out_dir: Path, plan: Plan, log: Callable[[str], None] = print, options: LaunchOptions | None = None) -> dict:
    """Launch a planned submission and record it: one line of ``submissions.jsonl`` per job array (locally,
    one for the workers), with the ``options`` it ran with. The launch is recorded before it starts and
    completed after (``records.launching``), and nothing is said (``log``) before the record is written.
    Returns ``{"records": [...], "jobs": [every submitit job]}``."""
    out_dir = Path(out_dir).resolve()
    profile = plan.profile
    options = options or LaunchOptions()
    me = Owner.this_process()
    base = {"kind": "submission", "submitted_at": utc_now(), "hostname": me.host, "boot_id": me.boot_id,
            "pid_ns": me.pid_ns, "profile": profile.name, "profile_path": str(profile.path),
            "executor": profile.executor, "options": options.record()}
    backend = backend_of(profile)
    backend.check_available()
    said: list[str] = []
    every_task = [task.indices for array in plan.arrays for task in array.tasks]
    try:
        # Ctrl-C (or a polite kill) waits for the record, then stops the command (``stop_signals``).
        with deferred_during_launch(), launching(out_dir, base, every_task) as records:
            jobs = backend.launch(out_dir, plan, base, records, said.append, options.sinks)
    except LaunchStopped as stopped:
        stopped.said, stopped.out_dir = said, out_dir
        raise
    for line in said:
        log(line)
    return {"records": records, "jobs": jobs}


@contextlib.contextmanager
def manifest_restored_on_failure(out_dir: Path) -> Iterator[None]:
    """Undo a manifest written for a submission that then failed before launching anything, so that the
    corrected submission is not blocked by a grid that never ran. Once a launch has begun (its line is in
    the submission log), the manifest stays whatever happens next: the launched tasks read it."""
    folder = ResultsFolder.of(out_dir)
    path = folder.manifest
    before = path.read_bytes() if path.exists() else None
    log_before = _size(folder.submissions)
    try:
        yield
    except BaseException:
        if _size(folder.submissions) != log_before:
            raise  # a launch was begun and recorded (a refused one takes its line back)
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
