"""What the project asks of a scheduler, whoever it is: which of its tasks runs this process, what a trial
file records of that task, and whether tasks are still alive by its queue.

Leases (``pipeline.leases``) and the trial store (``pipeline.trialfile``) ask these questions through the
registry (``pipeline.schedulers``), never a scheduler by name; the launch backends (``pipeline.launch.backends``)
submit, follow and cancel with the scheduler they belong to. Liveness is answered without ever mistaking
silence for an answer: a queue that could not be read is None (*unknown*), never an empty queue.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import ClassVar


class Scheduler(ABC):
    """One scheduler, as the layers below the launcher see it."""

    name: ClassVar[str]  # as cluster profiles and submission records name it (their ``executor``)
    # Whether its tasks are followed by a queue that any host can ask (SLURM), rather than by their process on
    # the machine that runs them (the local executor): a lease records the task id of such a scheduler.
    queued: ClassVar[bool]

    @abstractmethod
    def task_id(self) -> str:
        """This process's task as the scheduler and the submission log name it ("123_4"); "" outside one."""

    def provenance(self) -> dict[str, str]:
        """What a trial file records of this scheduler's task that ran an attempt (empty values left out)."""
        return {}

    def read_queue(self) -> Mapping[str, str] | None:
        """Job id -> the scheduler's state for every job its queue holds; None where it cannot be read (or
        it has no queue: its tasks are followed by their process)."""
        return None

    def active(self, state: str) -> bool:
        """Whether a job in ``state`` still holds, or may soon hold, its node."""
        return False

    def alive(self, job_ids: Iterable[str]) -> dict[str, bool] | None:
        """Whether each job lives by the queue; None where the queue cannot be read (unknown, never empty)."""
        return QueueView(self).alive_all(job_ids)


class QueueView:
    """A scheduler's queue as one command sees it: read at most once, and only if something asks."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self._read = False
        self._states: Mapping[str, str] | None = None

    @classmethod
    def given(cls, scheduler: Scheduler, states: Mapping[str, str] | None) -> QueueView:
        """The queue as someone already read it (None: they could not)."""
        view = cls(scheduler)
        view._read, view._states = True, states
        return view

    def states(self) -> Mapping[str, str] | None:
        if not self._read:
            self._read, self._states = True, self.scheduler.read_queue()
        return self._states

    def alive(self, job_id: str) -> bool | None:
        """Whether one job lives by the queue; None where the queue could not be read."""
        found = self.alive_all([job_id])
        return None if found is None else found[job_id]

    def alive_all(self, job_ids: Iterable[str]) -> dict[str, bool] | None:
        states = self.states()
        if states is None:
            return None
        return {job: job in states and self.scheduler.active(states[job]) for job in job_ids}
