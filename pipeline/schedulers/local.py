"""Submitit's local executor as the layers below the launcher see it: its task variable. It has no queue:
its tasks are followed by their process identity (``pipeline.launch.backends.local``), so its liveness is
unknown here."""

from __future__ import annotations

import os

from pipeline.schedulers.base import Scheduler

# Set by submitit's local executor in the processes of its jobs (the controller's process id).
LOCAL_JOB_VARIABLE = "SUBMITIT_LOCAL_JOB_ID"


class LocalScheduler(Scheduler):
    name = "local"
    queued = False

    def task_id(self) -> str:
        """The controller's process id of this process's task; "" outside one."""
        return os.environ.get(LOCAL_JOB_VARIABLE, "")
