"""Which task of which scheduler runs this process, from its environment alone: the current task's identity
and provenance, as each backend (``pipeline.launch.backends``) names them.

Imports nothing of the project: the leases (``pipeline.leases.ownership``) and the trial store read it.
"""

from __future__ import annotations

import os

# Set by submitit's local executor in the processes of its jobs (the controller's process id).
LOCAL_JOB_VARIABLE = "SUBMITIT_LOCAL_JOB_ID"


def slurm_task() -> str:
    """SLURM's id of this process's task: "123_4" for an array task, "123" for a job, "" outside SLURM."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    return f"{job}_{task}" if job and task else job


def local_task() -> str:
    """The local executor's id of this process's task (its controller's process id); "" outside one."""
    return os.environ.get(LOCAL_JOB_VARIABLE, "")


def current_job_id() -> str:
    """The id the submission log knows this process's task by: SLURM's "array_task", or for the local
    executor its controller's process id; "" outside a task."""
    return slurm_task() or local_task()


def provenance() -> dict[str, str]:
    """What a trial file records of the task that ran an attempt: SLURM's job and array task where there are
    some, and ``job``, the task as the submission log knows it (empty values left out)."""
    found = {"slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "")),
             "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID", ""), "job": current_job_id()}
    return {key: value for key, value in found.items() if value}
