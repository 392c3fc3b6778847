"""A results folder, and every path in it: the one place its layout is spelled out.

    OUT/
      manifest.json               the grid's trials (``pipeline.trialfile.manifest``)
      submissions.jsonl           what was launched into the folder, and cancelled (``pipeline.launch.records``)
      .submit.lease               the guard a submission holds while it decides and records (``pipeline.leases.ownership``)
      .aggregate.lease            the guard of the one ``aggregate`` writing the folder's aggregate at a time
      trials/<id>.h5              a trial's file (``pipeline.trialfile.store``); beside it while it runs: its lease
                                  ``<id>.lease``, its write journal ``<id>.h5.journal`` and its checkpoint
                                  ``<id>.state.pt``
      logs/<id>.log               a trial's log
      submitit/local/             the local workers' submitit folder; submitit/<array id>/ an array's
      submitit/leases/<job>.lease the lease of a task that is working through its trials
      tensorboard/<id>/           a trial's live curves (``--tensorboard``)
      wandb/                      Weights & Biases runs, one per trial (``--wandb``; offline unless told)
      aggregate/                  tables, figures/, provenance/ and report.md (``analysis.aggregation``), and
                                  .outputs.json, the record of what aggregate wrote there (``analysis.outputs``)

Torch-free, and it imports nothing of the project: every layer can use it. ``tests/test_structure.py``
checks that no other module builds a path from these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
SUBMISSIONS = "submissions.jsonl"
SUBMIT_GUARD = ".submit.lease"
AGGREGATE_GUARD = ".aggregate.lease"
TRIALS = "trials"
LOGS = "logs"
SUBMITIT = "submitit"
LOCAL_JOBS = "local"
TASK_LEASES = "leases"
TENSORBOARD = "tensorboard"
WANDB = "wandb"
AGGREGATE = "aggregate"
FIGURES = "figures"
PROVENANCE = "provenance"
REPORT = "report.md"
OUTPUTS_RECORD = ".outputs.json"

LEASE_SUFFIX = ".lease"
TRIAL_SUFFIX = ".h5"
CHECKPOINT_SUFFIX = ".state.pt"
JOURNAL_SUFFIX = ".journal"  # beside the file it journals: <id>.h5.journal
# submitit's placeholder for an array's job id in its folder name.
ARRAY_ID_PLACEHOLDER = "%A"


@dataclass(frozen=True)
class ResultsFolder:
    """The paths of one results folder (``root``); nothing here touches the disk."""

    root: Path

    def __init__(self, root: Path | str):
        object.__setattr__(self, "root", Path(root))

    @classmethod
    def of(cls, folder: ResultsFolder | Path | str) -> ResultsFolder:
        return folder if isinstance(folder, ResultsFolder) else cls(folder)

    # -- the grid and its launches ---------------------------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def submissions(self) -> Path:
        return self.root / SUBMISSIONS

    @property
    def submit_guard(self) -> Path:
        return self.root / SUBMIT_GUARD

    # -- trials ------------------------------------------------------------------------------------------
    @property
    def trials(self) -> Path:
        return self.root / TRIALS

    def trial_file(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}{TRIAL_SUFFIX}"

    def checkpoint(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}{CHECKPOINT_SUFFIX}"

    def trial_lease(self, trial_id: str) -> Path:
        return self.trials / f"{trial_id}{LEASE_SUFFIX}"

    def trial_leases(self) -> list[Path]:
        return sorted(self.trials.glob(f"*{LEASE_SUFFIX}"))

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    def trial_log(self, trial_id: str) -> Path:
        return self.logs / f"{trial_id}.log"

    # -- tasks -------------------------------------------------------------------------------------------
    @property
    def submitit(self) -> Path:
        return self.root / SUBMITIT

    @property
    def local_jobs(self) -> Path:
        """submitit's folder for the local workers (their logs, pickles)."""
        return self.submitit / LOCAL_JOBS

    def array_jobs(self, array_id: str = ARRAY_ID_PLACEHOLDER) -> Path:
        """submitit's folder for a SLURM array (by default with submitit's placeholder for its id)."""
        return self.submitit / array_id

    def task_lease(self, job_id: str) -> Path:
        return self.submitit / TASK_LEASES / f"{job_id}{LEASE_SUFFIX}"

    # -- what is made from the trials ----------------------------------------------------------------------
    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD

    def tensorboard_run(self, trial_id: str) -> Path:
        return self.tensorboard / trial_id

    @property
    def wandb(self) -> Path:
        """Weights & Biases' own directory: it keeps every run in ``wandb/`` below it."""
        return self.root / WANDB

    @property
    def aggregate(self) -> Path:
        return self.root / AGGREGATE

    @property
    def figures(self) -> Path:
        return self.aggregate / FIGURES

    @property
    def provenance(self) -> Path:
        return self.aggregate / PROVENANCE

    @property
    def report(self) -> Path:
        return self.aggregate / REPORT

    @property
    def aggregate_guard(self) -> Path:
        return self.root / AGGREGATE_GUARD

    @property
    def outputs_record(self) -> Path:
        return self.aggregate / OUTPUTS_RECORD

    def relative(self, path: Path) -> str:
        """A path in the folder as the folder's own files name it (``trials/rot-nom-s000.h5``)."""
        return str(Path(path).relative_to(self.root))


def set_aside(path: Path, status: str, stamp: str) -> Path:
    """Where a damaged or inconsistent trial file is kept when its trial restarts: <id>.h5.<status>-<UTC time>."""
    return path.with_name(f"{path.name}.{status}-{stamp}")


def is_set_aside_damaged(name: str) -> bool:
    return f"{TRIAL_SUFFIX}.damaged-" in name


def journal_of(path: Path) -> Path:
    """The write journal beside a file (``pipeline.trialfile.journal``)."""
    return path.with_name(path.name + JOURNAL_SUFFIX)


def local_tensorboard(trial_id: str) -> Path:
    """Where ``pipeline train`` without a results folder writes a trial's curves: ./tensorboard/<trial_id>."""
    return Path(TENSORBOARD) / trial_id


def local_wandb() -> Path:
    """Where ``pipeline train`` without a results folder keeps its Weights & Biases run: ./wandb/."""
    return Path(WANDB)
