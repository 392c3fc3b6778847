"""Submitit's local executor, with a controller that honours the executor's count of time-outs.

A local task that reaches its time limit saves its trials and asks to be requeued; submitit's local
controller then starts it again, and the task counts the requeues down from ``max_num_timeout``. But the
controller itself gives up after six runs whatever that count says (its ``max_retry``): with 20 time-outs
allowed the log said "14 remaining" as the controller stopped. This executor starts the same controller
(``python -m pipeline.launch.local_controller``) with as many runs as the count allows.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import submitit
from submitit.local.local import Controller, LocalJob

from pipeline.launch import sealed

RUNS_VARIABLE = "PIPELINE_LOCAL_MAX_RUNS"


class LocalExecutor(submitit.LocalExecutor):
    """submitit.LocalExecutor whose controller runs a task up to 1 + ``max_num_timeout`` times, and whose
    tasks unpickle only what their own submission sealed (``pipeline.launch.sealed``: submit under its
    ``sealing``, which also puts the key in the controller's environment)."""

    def __init__(self, folder: str | Path, max_num_timeout: int = 3, **kwargs: Any):
        super().__init__(folder, max_num_timeout=max_num_timeout, **kwargs)
        self.max_runs = 1 + max_num_timeout

    @property
    def _submitit_command_str(self) -> str:
        return sealed.command(shlex.quote(sys.executable), self.folder)

    def _submit_command(self, command: str) -> LocalJob:
        # What submitit's start_controller does (the controller reads its settings from the environment),
        # with this module as the controller.
        parameters = self.parameters
        tasks = parameters.get("tasks_per_node", 1)
        count, visible = parameters.get("gpus_per_node", 0), parameters.get("visible_gpus", ())
        gpus = range(count) if visible == () else visible[:count]
        setup = list(parameters.get("setup", ()))
        env = dict(os.environ, SUBMITIT_LOCAL_NTASKS=str(tasks), SUBMITIT_LOCAL_COMMAND=command,
                   SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * parameters.get("timeout_min", 2.0))),
                   SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(parameters.get("signal_delay_s", 30))),
                   SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_JOB_NUM_NODES="1",
                   SUBMITIT_STDERR_TO_STDOUT="1" if parameters.get("stderr_to_stdout", False) else "",
                   SUBMITIT_EXECUTOR="local", CUDA_VISIBLE_DEVICES=",".join(str(g) for g in gpus),
                   SUBMITIT_LOCAL_WITH_SHELL="1" if setup else "", **{RUNS_VARIABLE: str(self.max_runs)})
        argv = [sys.executable, "-m", "pipeline.launch.local_controller", str(self.folder)]
        if setup:
            process = subprocess.Popen(" && ".join(setup + [shlex.join(argv)]), shell=True, env=env)
        else:
            process = subprocess.Popen(argv, env=env)
        return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=list(range(tasks)))


if __name__ == "__main__":
    Controller(Path(sys.argv[1])).run(max_retry=int(os.environ[RUNS_VARIABLE]))
