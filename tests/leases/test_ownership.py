"""One owner per trial, and a status that never lies: the ways a cluster user's bad day goes, on this machine.

Every scenario ends with every trial file either bitwise equal to an uninterrupted run or honestly not
complete, and status saying which. (The same on the real SLURM test cluster: tests/launch/test_slurm.py.)
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lease_racer
import pipeline.leases.breaking as breaking
import pipeline.leases.ownership as ownership
from helpers import assert_same_results, epochs_done, launched_indices, reference_run, run_at_once, wait_until
from pipeline.launch.grid import load_grid
from pipeline.launch.monitor import gather
from pipeline.leases.ownership import Busy, Lease, Owner, process_start_ticks, read_owner, trial_lease_path
from pipeline.run.execute import execute
from pipeline.trialfile.files import read_status
from pipeline.trialfile.manifest import select, write_manifest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# About 0.3 s an epoch here: slow enough to act on a running trial, short enough for CI.
SLOW = ["groups=rot", "modes=aug", "seeds=1", "n=14", "channels=8", "n_samples=500", "lr=0.005",
        "augment=sampled:10", "weights_every=5"]


def sets(values):
    return [a for v in values for a in ("--set", v)]


def cli(*argv, env=None, timeout=300):
    return subprocess.run([PYTHON, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def state_of(out, trial_id):
    return next(s for s in gather(out) if s.trial_id == trial_id)


def foreign_owner(pid: int, ticks=None, **changes) -> dict:
    owner = Owner.this_process().__dict__ | {"pid": pid, "start_ticks": ticks if ticks is not None
                                               else process_start_ticks(pid), "token": f"other-{pid}"}
    return owner | changes


def plant_lease(path: Path, owner: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))


# -- the lease itself -----------------------------------------------------------------------------------------

def test_a_live_owner_keeps_its_lease_and_is_named(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = tmp_path / "t.lease"
        plant_lease(path, foreign_owner(sleeper.pid))
        with pytest.raises(Busy, match=f"held by pid {sleeper.pid} on {socket.gethostname()}"):
            Lease.acquire(path, "trial t")
        assert read_owner(path).pid == sleeper.pid  # nothing of the owner's was touched
    finally:
        sleeper.kill()


def test_a_dead_or_recycled_owner_is_taken_over_without_anyone_deleting_anything(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for owner in (foreign_owner(finished.pid, ticks=12345),  # the process is gone
                      foreign_owner(sleeper.pid, ticks=process_start_ticks(sleeper.pid) + 1),  # its PID reused
                      foreign_owner(999999, ticks=1, boot_id="an earlier boot")):  # the machine rebooted
            path = tmp_path / "t.lease"
            plant_lease(path, owner)
            lease = Lease.acquire(path, "trial t")
            assert read_owner(path).token == lease.owner.token
            lease.release()
            assert not path.exists()
        assert sleeper.poll() is None  # and the unrelated process lives on
    finally:
        sleeper.kill()


def test_another_hosts_lease_is_kept_while_its_heartbeat_is_fresh_and_taken_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_LEASE_HEARTBEAT_S", "1")
    monkeypatch.setenv("PIPELINE_LEASE_STALE_S", "3")
    path = tmp_path / "t.lease"
    fresh = foreign_owner(1, ticks=1, host="node-17", heartbeat_at=time.time())
    plant_lease(path, fresh)
    with pytest.raises(Busy, match="on node-17"):
        Lease.acquire(path, "trial t")
    # An old heartbeat by the owner's clock proves nothing: the taker watches the lease on its own clock, and
    # takes it over only once it has not changed for the stale period.
    notes = []
    plant_lease(path, fresh | {"heartbeat_at": time.time() - 3600})
    started = time.monotonic()
    Lease.acquire(path, "trial t", note=notes.append).release()
    assert time.monotonic() - started >= 3
    assert "cannot be proven alive or dead from here; watching it for 3 s" in notes[0]
    assert "took over its lease (pid 1 on node-17" in notes[1]
    # On SLURM, a job that the queue no longer holds is gone, whatever its heartbeat says...
    plant_lease(path, fresh | {"slurm_job": "77_3"})
    Lease.acquire(path, "trial t", job_states={"78_0": "RUNNING"}).release()
    # ... and a job it runs, or holds suspended, lives, however old its heartbeat.
    for state in ("RUNNING", "SUSPENDED"):
        plant_lease(path, fresh | {"slurm_job": "77_3", "heartbeat_at": time.time() - 400})
        with pytest.raises(Busy):
            Lease.acquire(path, "trial t", job_states={"77_3": state})


def test_a_live_owner_whose_clock_is_ten_minutes_off_is_not_taken_over(tmp_path, monkeypatch):
    """Its heartbeats look 600 s old by the taker's clock, but they keep coming: the lease changes."""
    monkeypatch.setenv("PIPELINE_LEASE_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("PIPELINE_LEASE_STALE_S", "2")
    path = tmp_path / "t.lease"
    skewed = foreign_owner(1, ticks=1, host="node-17")
    stop = threading.Event()

    def renew():
        while not stop.is_set():
            plant_lease(path, skewed | {"heartbeat_at": time.time() - 600})
            stop.wait(0.5)

    beating = threading.Thread(target=renew)
    beating.start()
    try:
        time.sleep(0.1)
        with pytest.raises(Busy, match="on node-17"):
            Lease.acquire(path, "trial t", note=lambda line: None)
    finally:
        stop.set()
        beating.join()
    assert read_owner(path).token == skewed["token"]


@pytest.mark.parametrize("content", ["", '{"host": "node', "not json at all"])
def test_an_empty_or_garbled_lease_is_broken_after_the_stale_period_with_a_note(tmp_path, monkeypatch, content):
    monkeypatch.setenv("PIPELINE_LEASE_HEARTBEAT_S", "0.5")
    monkeypatch.setenv("PIPELINE_LEASE_STALE_S", "1.5")
    path = tmp_path / "t.lease"
    path.write_text(content)
    notes = []
    lease = Lease.acquire(path, "trial t", note=notes.append)
    assert read_owner(path).token == lease.owner.token
    lease.release()
    assert len(notes) == 2 and all(line.count("\n") == 0 for line in notes)
    assert "an unreadable lease" in notes[0] and "1970" not in notes[0] and "pid -1" not in notes[0]
    assert "took over its lease (an unreadable lease" in notes[1]


def test_an_empty_folder_guard_does_not_block_resubmit_for_ever(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *sets(["groups=rot", "modes=nom", "cnn.seeds=1",
                                                                      "configs=cross"])).returncode == 0
    (out / ".submit.lease").write_text("")  # as a crashed node can leave it
    fast = {**os.environ, "PIPELINE_LEASE_HEARTBEAT_S": "1", "PIPELINE_LEASE_STALE_S": "3"}
    started = time.monotonic()
    again = cli("resubmit", "--out", str(out), env=fast)
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 60
    assert "nothing to resubmit" in again.stdout
    assert "an unreadable lease (empty file)" in again.stderr and "took over its lease" in again.stderr
    assert not (out / ".submit.lease").exists()


def test_a_leftover_breaking_guard_costs_only_a_short_wait(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()
    path = tmp_path / "t.lease"
    plant_lease(path, foreign_owner(finished.pid, ticks=12345))  # a dead owner on this machine
    for breaker in (foreign_owner(finished.pid, ticks=12345),  # left by a breaker killed here: provably gone
                    foreign_owner(1, ticks=1, host="node-17")):  # left by one on another node
        (tmp_path / "t.lease.breaking").write_text(json.dumps(breaker))
        started = time.monotonic()
        Lease.acquire(path, "trial t").release()
        assert time.monotonic() - started < 15
        plant_lease(path, foreign_owner(finished.pid, ticks=12345))


def test_stale_limits_below_three_heartbeats_are_refused_in_one_line(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PIPELINE_LEASE_STALE_S": "10"}  # the default heartbeat is 30 s
    result = cli("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "PIPELINE_LEASE_STALE_S=10 is below three heartbeats" in result.stderr and "at least 90" in result.stderr
    assert not (out / "trials").exists()


def test_of_many_takers_of_a_dead_lease_exactly_one_wins(tmp_path):
    path = tmp_path / "t.lease"
    plant_lease(path, foreign_owner(999999, ticks=1))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    everyone_tried = context.Event()
    start = time.time() + 6
    racers = [context.Process(target=lease_racer.race, args=(str(path), start, everyone_tried, results))
              for _ in range(6)]
    for racer in racers:
        racer.start()
    try:
        outcomes = sorted(results.get(timeout=300) for _ in racers)
    finally:
        everyone_tried.set()
        for racer in racers:
            racer.join(60)
    assert outcomes == ["busy"] * 5 + ["won"]


def test_a_breaker_that_judged_a_dead_lease_never_moves_the_live_one_taken_since(tmp_path, monkeypatch):
    """The interleaving behind two winners of one dead lease: breaker X removes it, taker A links its own,
    and breaker Y, who judged the dead one before, then takes the guard. Had Y moved A's lease aside to
    compare it, its name would have been free for a third taker to win while A still believed it owned it."""
    path = tmp_path / "t.lease"
    plant_lease(path, foreign_owner(999999, ticks=1))
    judged_dead = read_owner(path)
    path.unlink()
    lease = Lease.acquire(path, "trial t")
    moved: list = []
    rename = os.rename
    monkeypatch.setattr(ownership.os, "rename", lambda source, target: (moved.append(str(source)), rename(source, target)))
    try:
        breaking.break_lease(path, judged_dead)
        assert moved == [] and lease.still_ours()
    finally:
        lease.release()


# -- two writers of one trial ---------------------------------------------------------------------------------

def test_two_run_trials_of_one_trial_train_it_once(tmp_path):
    values = SLOW + ["epochs=12"]
    expected = reference_run(tmp_path / "reference", values)
    out = tmp_path / "out"
    argv = [PYTHON, "-m", "pipeline", "run-trial", "--exp", "smoke", "--index", "0", "--out", str(out)] + sets(values)
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: trial_lease_path(out, "rot-aug-s000").exists())
    second = cli("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), *sets(values))
    assert second.returncode == 1
    assert f"is held by pid {first.pid} on {socket.gethostname()}" in second.stderr
    assert second.stderr.count("\n") == 1
    first.communicate(timeout=300)
    assert first.returncode == 0
    status = read_status(path)
    assert status["status"] == "complete" and status["attempts"] == 1
    assert_same_results(expected, path)
    assert not trial_lease_path(out, "rot-aug-s000").exists()


def test_run_trial_of_a_trial_a_task_is_training_refuses_and_leaves_it_alone(tmp_path):
    values = SLOW + ["epochs=25"]
    expected = reference_run(tmp_path / "reference", values, threads=os.cpu_count())
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), "--workers", "1", "--no-wait",
               *sets(values + ["cnn.seeds=1", "configs=cross"])).returncode == 0
    path = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: epochs_done(path) >= 2)
    busy = cli("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out),
               *sets(values + ["cnn.seeds=1", "configs=cross"]))
    assert busy.returncode == 1 and "is held by" in busy.stderr
    assert state_of(out, "rot-aug-s000").state == "running"
    assert wait_until(lambda: all(s.state == "complete" for s in gather(out)), timeout=300)
    assert read_status(path)["attempts"] == 1
    assert_same_results(expected, path)


def test_resubmit_leaves_alone_a_trial_that_run_trial_is_training(tmp_path):
    """run-trial is recorded in no submission: its lease alone must keep resubmit from launching a second
    writer, and make status say running."""
    values = SLOW + ["epochs=25", "cnn.seeds=1", "configs=cross"]
    out = tmp_path / "out"
    failing = {**os.environ, "PIPELINE_INJECT_FAULT": "rot-aug-s000@1"}
    cli("submit", "--exp", "smoke", "--out", str(out), "--workers", "1", "--wait", *sets(values), env=failing)
    assert state_of(out, "rot-aug-s000").state == "failed"
    path = out / "trials" / "rot-aug-s000.h5"
    by_hand = subprocess.Popen([PYTHON, "-m", "pipeline", "run-trial", "--exp", "smoke", "--index", "0", "--out",
                                str(out), *sets(values)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert wait_until(lambda: epochs_done(path) >= 2)
        records_before = (out / "submissions.jsonl").read_text().splitlines()
        again = cli("resubmit", "--out", str(out), "--wait", "--workers", "1")
        assert again.returncode == 0, again.stderr
        launched = [i for line in (out / "submissions.jsonl").read_text().splitlines()[len(records_before):]
                    for task in json.loads(line)["tasks"] for i in task["indices"]]
        assert 0 not in launched
        assert state_of(out, "rot-aug-s000").state == "running"
    finally:
        assert by_hand.wait(timeout=300) == 0, by_hand.stderr.read()
    assert state_of(out, "rot-aug-s000").state == "complete"
    assert read_status(path)["attempts"] == 2  # the failed one, then run-trial's: no third writer


def test_two_submits_of_one_grid_launch_every_trial_once(tmp_path):
    expected = tmp_path / "expected"
    assert cli("submit", "--exp", "smoke", "--out", str(expected)).returncode == 0
    out = tmp_path / "out"
    argv = [PYTHON, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(out)]
    outputs = run_at_once(argv, ROOT)
    assert all(code == 0 for code, _, _ in outputs), outputs
    assert sorted(launched_indices(out)) == list(range(15))  # each trial in exactly one task of one submission
    assert sum("not submitted again" in stdout for _, stdout, _ in outputs) == 1
    assert all(s.state == "complete" for s in gather(out))
    for path in sorted((expected / "trials").glob("*.h5")):
        assert read_status(out / "trials" / path.name)["attempts"] == 1
        assert_same_results(path, out / "trials" / path.name)


# -- liveness ---------------------------------------------------------------------------------------------------

def two_trial_task(tmp_path, extra=(), epochs=20):
    """A local submission of one task with rot-aug then trans-aug (slow), returned without waiting."""
    out = tmp_path / "out"
    values = SLOW + [f"epochs={epochs}", "groups=rot,trans", "cnn.seeds=1", "configs=cross", *extra]
    result = cli("submit", "--exp", "smoke", "--out", str(out), "--workers", "1", "--no-wait", *sets(values))
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "submissions.jsonl").read_text().splitlines()[-1])
    return out, values, int(record["tasks"][0]["job_id"])


def test_a_killed_local_controller_does_not_make_running_trials_look_failed(tmp_path):
    out, values, controller = two_trial_task(tmp_path)
    first = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: epochs_done(first) >= 1)
    os.kill(controller, signal.SIGKILL)
    time.sleep(0.5)
    states = {s.trial_id: s for s in gather(out)}
    assert states["rot-aug-s000"].state == "running"
    assert states["trans-aug-s000"].state == "queued"  # the orphaned task process will still run it
    assert wait_until(lambda: all(s.state == "complete" for s in gather(out)), timeout=300)


def test_cancel_stops_local_training_which_says_so_and_resumes_to_the_uninterrupted_result(tmp_path):
    out, values, controller = two_trial_task(tmp_path, epochs=40)
    first = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: epochs_done(first) >= 3)
    result = cli("cancel", "--out", str(out))
    assert result.returncode == 0 and "cancelled 1 task(s)" in result.stdout
    assert wait_until(lambda: process_start_ticks(controller) is None, timeout=60)  # the task really stopped
    done = epochs_done(first)
    time.sleep(1.0)
    assert epochs_done(first) == done < 40  # and trains no more
    states = {s.trial_id: s for s in gather(out)}
    assert states["rot-aug-s000"].state == "cancelled" and read_status(first)["status"] == "cancelled"
    assert states["trans-aug-s000"].state == "cancelled"
    # Only the trial compared below is resumed: the whole task again took past five minutes on a loaded CI.
    again = cli("resubmit", "--out", str(out), "--wait", "--workers", "1",  # bitwise needs the same threads
                "--trials", "rot-aug-s000", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch" in (out / "logs" / "rot-aug-s000.log").read_text()
    expected = reference_run(tmp_path / "reference", values + ["groups=rot"], threads=os.cpu_count())
    assert_same_results(expected, first)


def test_a_recycled_pid_in_the_submission_log_is_neither_queued_nor_signalled(tmp_path):
    grid = load_grid("smoke", {"groups": "rot", "modes": "nom", "cnn.seeds": "1", "configs": "cross"})
    out = tmp_path / "out"
    write_manifest(out, grid, grid.trials())
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        record = {"kind": "submission", "submitted_at": "2026-01-01T00:00:00+00:00", "hostname": socket.gethostname(),
                  "boot_id": Owner.this_process().boot_id, "profile": "local", "executor": "local", "folder": "",
                  "tasks": [{"job_id": str(sleeper.pid), "indices": [0, 1],
                             "start_ticks": process_start_ticks(sleeper.pid) - 1}]}
        (out / "submissions.jsonl").write_text(json.dumps(record) + "\n")
        assert [s.state for s in gather(out)] == ["missing", "missing"]
        assert cli("cancel", "--out", str(out)).returncode == 0
        time.sleep(0.3)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()


def test_a_trial_that_fails_first_in_its_task_shows_failed_while_the_task_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_INJECT_FAULT", "rot-aug-s000@2")
    out, values, _ = two_trial_task(tmp_path, epochs=30)
    second = out / "trials" / "trans-aug-s000.h5"
    assert wait_until(lambda: epochs_done(second) >= 1)
    states = {s.trial_id: s for s in gather(out)}
    assert states["rot-aug-s000"].state == "failed" and "injected fault" in states["rot-aug-s000"].detail
    assert states["trans-aug-s000"].state == "running"
    assert wait_until(lambda: state_of(out, "trans-aug-s000").state == "complete", timeout=300)


# -- status tells complete only of complete data -------------------------------------------------------------

def test_a_file_that_says_complete_with_other_data_is_inconsistent_and_is_rerun(tmp_path):
    from pipeline.trialfile.files import open_h5

    path = reference_run(tmp_path / "reference", SLOW + ["epochs=3"])
    out = path.parent.parent
    with open_h5(path, "a") as f:  # as a second writer once left it: an extra row past the end
        for name in f["metrics"]:
            f["metrics"][name].resize(f["metrics"][name].shape[0] + 1, axis=0)
    state = state_of(out, "rot-aug-s000")
    assert state.state == "inconsistent" and "5 epoch rows for 3 epochs" in state.detail
    trial = select(load_grid("smoke", dict(v.split("=", 1) for v in SLOW + ["epochs=3"])).trials(), 0)
    execute(out, [trial])
    assert state_of(out, "rot-aug-s000").state == "complete"
    assert len(list((out / "trials").glob("rot-aug-s000.h5.inconsistent-*"))) == 1
