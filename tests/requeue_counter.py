"""A task that only waits, and asks to be requeued at every time-out (tests/run/test_stop_requests.py): how
many times submitit's local controller runs it is what the test counts. Light to import."""

import time
from pathlib import Path

import submitit


class WaitsForever(submitit.helpers.Checkpointable):
    def __init__(self, runs_file: str):
        self.runs_file = runs_file

    def __call__(self) -> None:
        with open(self.runs_file, "a") as handle:
            handle.write("run\n")
        time.sleep(3600)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def runs(runs_file: str) -> int:
    path = Path(runs_file)
    return len(path.read_text().splitlines()) if path.exists() else 0
