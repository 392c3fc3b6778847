"""SLURM as the layers below the launcher see it: its task variables and its queue (``slurm_queue``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline.schedulers import slurm_queue
from pipeline.schedulers.base import Scheduler


def _job() -> str:
    return os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")


class SlurmScheduler(Scheduler):
    name = "slurm"
    queued = True

    def task_id(self) -> str:
        """"123_4" for an array task, "123" for a job, "" outside SLURM."""
        job, task = _job(), os.environ.get("SLURM_ARRAY_TASK_ID", "")
        return f"{job}_{task}" if job and task else job

    def provenance(self) -> dict[str, str]:
        found = {"slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "")),
                 "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID", "")}
        return {key: value for key, value in found.items() if value}

    def read_queue(self) -> Mapping[str, str] | None:
        return slurm_queue.read_slurm_queue()

    def active(self, state: str) -> bool:
        return state in slurm_queue.ACTIVE_STATES
