"""The schedulers the project runs under, by name (``base.Scheduler``: task identity, provenance, liveness by
the queue). Adding a scheduler is one module here and one line in ``SCHEDULERS`` (and its launch backend in
``pipeline.launch.backends``).

Imports nothing of the project above the ground floor: leases and the trial store ask it which task runs
this process and whether another task still lives.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.schedulers.base import QueueView, Scheduler
from pipeline.schedulers.local import LocalScheduler
from pipeline.schedulers.slurm import SlurmScheduler
from pipeline.settings import ConfigError

SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (LocalScheduler(), SlurmScheduler())}
# The scheduler of submission records written before they named theirs.
DEFAULT = "slurm"


def get(name: str) -> Scheduler:
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown executor {name!r}; accepted: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name]


def of_record(record: Mapping[str, object]) -> str:
    """The scheduler a submission record names (records before the field existed were the default's)."""
    return str(record.get("executor", DEFAULT))


def _by_precedence() -> list[Scheduler]:
    """The schedulers in the order a process's task is looked for: queued ones first (a SLURM job that runs
    the local executor is SLURM's task)."""
    return sorted(SCHEDULERS.values(), key=lambda s: not s.queued)


def current_job_id() -> str:
    """The id the submission log knows this process's task by (the first scheduler that has one); "" outside
    a task."""
    return next((task for task in (s.task_id() for s in _by_precedence()) if task), "")


def queued() -> Scheduler:
    """The scheduler whose task ids leases record, to be asked from any host whether their owner lives. One
    today; a second would add its name to the lease."""
    (found,) = (s for s in SCHEDULERS.values() if s.queued)
    return found


def provenance() -> dict[str, str]:
    """What a trial file records of the task that ran an attempt: each scheduler's own (SLURM's job and array
    task where there are some), and ``job``, the task as the submission log knows it (empty values left out)."""
    found: dict[str, str] = {}
    for scheduler in _by_precedence():
        found.update(scheduler.provenance())
    job = current_job_id()
    return {**found, "job": job} if job else found


def view(job_states: object = "read") -> QueueView:
    """The queued scheduler's queue as a caller passes it: "read" (read it when needed), a view, a dict it
    read, or None (it could not be read)."""
    if isinstance(job_states, QueueView):
        return job_states
    if isinstance(job_states, str) and job_states == "read":
        return QueueView(queued())
    if job_states is None or isinstance(job_states, Mapping):
        return QueueView.given(queued(), job_states)
    raise TypeError(f"a queue is 'read', a QueueView, a mapping of job states or None, not {job_states!r}")
