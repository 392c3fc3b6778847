"""What a launch backend does, whatever the scheduler: plan a submission's tasks, submit them, say whether a
task will still run its trials, and cancel. Which task runs this process, and whether a task lives by the
queue, are its scheduler's (``pipeline.schedulers``, below the launcher, where leases ask them too)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline import schedulers
from pipeline.launch import layout
from pipeline.launch.layout import ArrayPlan, Plan
from pipeline.launch.profiles import Profile
from pipeline.leases.ownership import Owner
from pipeline.schedulers.base import QueueView, Scheduler
from pipeline.settings import ConfigError

Say = Callable[[str], None]


@dataclass
class Cancellation:
    """What ``pipeline cancel`` found to stop, gathered over the submission records by their backends."""

    job_ids: list[str] = field(default_factory=list)  # the tasks cancelled (recorded first)
    processes: dict[int, int | None] = field(default_factory=dict)  # local processes to signal: pid -> start time
    live: dict[str, str] = field(default_factory=dict)  # queued tasks still waiting or running -> their state


class Backend(ABC):
    """One scheduler. ``profile`` is the cluster profile it launches onto (None when it only reads what it
    launched: status, cancel)."""

    name: ClassVar[str]  # the profile's ``executor``
    waits: ClassVar[bool]  # whether ``submit`` waits for the grid unless told (locally yes, on SLURM no)
    runs_here: ClassVar[bool] = False  # whether its tasks run on this machine (its GPUs, its CPU-hours)

    def __init__(self, profile: Profile | None):
        self._profile = profile
        self.scheduler: Scheduler = schedulers.get(self.name)  # its task identity and its queue

    @property
    def profile(self) -> Profile:
        if self._profile is None:
            raise ConfigError(f"the {self.name} backend of a submission record launches nothing: give it a profile")
        return self._profile

    # -- planning -----------------------------------------------------------------------------------------
    @abstractmethod
    def tasks(self, units: list[layout.Unit], trials: dict, trials_per_task: int | None, pack_seeds: bool,
              workers: int | None, device: str) -> tuple[list[ArrayPlan], int, list[str]]:
        """(arrays of tasks, threads per task, warnings): how the units of training are run as tasks."""

    @abstractmethod
    def describe(self, out_dir: Path, plan: Plan, trials: dict) -> list[str]:
        """What ``submit --dry-run`` adds to the plan's header: the workers, or the arrays and sbatch scripts."""

    @abstractmethod
    def plan_lines(self, plan: Plan, trials: dict) -> list[str]:
        """What ``pipeline plan`` says about the launch after its table."""

    # -- launching ----------------------------------------------------------------------------------------
    def check_available(self) -> None:  # noqa: B027 (optional: a backend reachable from anywhere has nothing to check)
        """Raise ConfigError, in one line, where this scheduler cannot be reached from here."""

    @abstractmethod
    def launch(self, out_dir: Path, plan: Plan, base: dict, records: list[dict], say: Say,
               sinks: tuple[str, ...] = ()) -> list[Any]:
        """Start the plan's tasks; append one record per array to ``records``; return submitit's jobs."""

    # -- following and stopping --------------------------------------------------------------------------
    @abstractmethod
    def task_state(self, out_dir: Path, record: dict, task: dict, queue: QueueView) -> tuple[bool | None, str]:
        """Whether a task of a record will still run its trials: (True, words), (False, "") or (None, why)."""

    def ended_how(self, job_ids: list[str]) -> dict[str, str]:
        """How finished tasks ended, where the scheduler keeps an account ({} where not)."""
        return {}

    @abstractmethod
    def gather_cancellation(self, out_dir: Path, record: dict, queue: QueueView, me: Owner,
                            found: Cancellation) -> None:
        """Add what stopping this record's tasks takes to ``found``."""

    def cancel(self, found: Cancellation, log: Say) -> None:  # noqa: B027 (optional: nothing of its own to stop)
        """Stop what ``gather_cancellation`` found of this backend's tasks (after the cancel is recorded)."""


def cpu_count() -> int:
    return os.cpu_count() or 1


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
