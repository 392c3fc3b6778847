"""A cancel is never lost at a requeue: a cancel that comes with the time-limit signal wins over it, and a
requeued task checks the recorded cancel before it trains (a cancel recorded while its task was between
two runs, when no process was there to be signalled, used to be lost: the trial said "cancelled at 227/400"
and the requeued task trained on to 344)."""

from __future__ import annotations

import json
import os
import signal
import socket

import submitit

from helpers import SLOW, cli, epochs_done, sets, wait_until
from pipeline import stopping
from pipeline.launch.backends.local import children
from pipeline.launch.monitor import gather
from pipeline.launch.records import append_record
from pipeline.leases.ownership import process_start_ticks
from pipeline.trialfile.manifest import utc_now


def test_a_cancel_noted_with_the_time_limit_signal_wins():
    stopping._requests.extend([("requeue", signal.SIGUSR2), ("cancel", signal.SIGUSR1)])
    try:
        stopping.check()
    except stopping.Cancelled:
        pass
    else:
        raise AssertionError("the cancel was dropped for the requeue")
    assert not stopping.requested()


def test_a_requeued_local_task_checks_the_recorded_cancel_before_it_trains(tmp_path):
    """The cancel is recorded while the signal does not reach the task (here: not sent at all, as when the
    task is between two runs), then the task reaches its time limit and is requeued: the requeued task must
    not train; the trial stays cancelled at the epoch it had."""
    out = tmp_path / "out"
    result = cli("submit", "--exp", "smoke", "--out", str(out), "--no-wait", "--workers", "1",
                 *sets(SLOW + ["epochs=400"]))
    assert result.returncode == 0, result.stderr
    controller = json.loads((out / "submissions.jsonl").read_text().splitlines()[-1])["tasks"][0]["job_id"]
    path = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: epochs_done(path) >= 3, timeout=300)
    append_record(out, {"kind": "cancel", "cancelled_at": utc_now(), "hostname": socket.gethostname(),
                        "job_ids": [controller]})
    (task,) = children(int(controller))
    os.kill(task, submitit.JobEnvironment._usr_sig())  # the time limit
    assert wait_until(lambda: process_start_ticks(int(controller)) is None, timeout=300), "the task trained on"
    (state,) = [s for s in gather(out) if s.trial_id == "rot-aug-s000"]
    assert state.state == "cancelled", (state.state, state.detail)
    assert epochs_done(path) < 400
    log = (out / "logs" / "rot-aug-s000.log").read_text()
    assert "resuming after epoch" not in log
