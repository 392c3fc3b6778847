"""No second writer under any fault: a writer frozen in the middle of a write that wakes after another
host took its trial over, a live owner in another PID namespace, and two writers' temporary files.

"Another host" is a process in its own UTS namespace with hostname node2 on the same file system, and a
container a process in its own PID namespace (root, as CI runs)."""

import os
import signal
import subprocess
import time

from helpers import (
    FAST_LEASES,
    ROOT,
    SLOW,
    as_other_host,
    assert_same_results,
    epochs_done,
    freeze_while_open,
    in_new_pid_namespace,
    pipeline_argv,
    reference_run,
    require_root_namespaces,
    sets,
    wait_until,
)
from pipeline.launch.monitor import gather
from pipeline.leases.ownership import trial_lease_path
from pipeline.trialfile.files import inspect, read_status

TRIAL = "rot-aug-s000"


def state_of(out) -> str:
    return next(s.state for s in gather(out) if s.trial_id == TRIAL)


def start(argv, env=None):
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_frozen_writer_that_wakes_after_a_takeover_writes_nothing_into_the_new_owners_file(tmp_path):
    """The writer is stopped (SIGSTOP: an NFS hang, scontrol suspend, a node SLURM could not kill) while it
    holds the trial file open; past the stale limit, another host takes the trial over and trains; then the
    first wakes up. It must find that it no longer owns the trial and stop, having written only into the
    inode it held, and the file must end complete and equal to an uninterrupted run."""
    require_root_namespaces()
    values = SLOW + ["epochs=24"]
    expected = reference_run(tmp_path / "reference", values, threads=os.cpu_count())
    out = tmp_path / "out"
    argv = pipeline_argv("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), "--checkpoint-every", "0",
                         *sets(values))
    env = {**os.environ, **FAST_LEASES}
    path = out / "trials" / f"{TRIAL}.h5"
    first = start(argv, env)
    second = None
    try:
        assert wait_until(lambda: epochs_done(path) >= 4, timeout=180)
        assert freeze_while_open(first.pid, path)
        frozen_at = epochs_done(path)
        time.sleep(float(FAST_LEASES["PIPELINE_LEASE_STALE_S"]) + 0.5)  # past the stale limit
        second = start(as_other_host(argv), env)  # watches the lease for the stale limit too, then takes over
        assert wait_until(lambda: epochs_done(path) >= frozen_at + 3, timeout=180)
        assert read_status(path)["hostname"] == "node2"
        os.kill(first.pid, signal.SIGCONT)
        _, first_err = first.communicate(timeout=120)
        second_out, second_err = second.communicate(timeout=300)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
    assert second.returncode == 0, second_err
    assert "took over its lease" in second_err and "resuming after epoch" in second_out
    assert first.returncode == 1, first_err  # not a crash (139), not a traceback: one line
    assert first_err.count("\n") == 1 and "stopping without writing" in first_err, first_err
    state = inspect(path)
    assert state.status == "complete", state.problem
    assert state.attrs["hostname"] == "node2" and state.attrs["attempts"] == 2
    assert_same_results(expected, path)
    assert state_of(out) == "complete"
    assert not trial_lease_path(out, TRIAL).exists()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".") or "journal" in p.name]
    assert leftovers == []


def test_a_live_owner_in_another_pid_namespace_is_refused_in_one_line(tmp_path):
    """Seen from another PID namespace of the same machine (a container), the owner's PID is not there:
    that is no proof that it died. The second run is refused, and status still says running."""
    require_root_namespaces()
    values = SLOW + ["epochs=15"]
    out = tmp_path / "out"
    argv = pipeline_argv("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), *sets(values))
    first = start(argv)
    path = out / "trials" / f"{TRIAL}.h5"
    try:
        assert wait_until(lambda: epochs_done(path) >= 2, timeout=180)
        second = subprocess.run(in_new_pid_namespace(argv), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        assert second.stderr.count("\n") == 1, second.stderr
        assert f"trial {TRIAL} is held by pid {first.pid} on" in second.stderr
        assert "(another PID namespace)" in second.stderr
        assert state_of(out) == "running"
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0
    assert read_status(path)["attempts"] == 1
    assert state_of(out) == "complete"


def test_two_writers_never_share_a_temporary_name_and_a_stale_writers_is_taken_away(tmp_path):
    """Each writer writes its checkpoint (and its copies of the file) under a name of its own; a new owner
    removes those of earlier writers, so that one that stopped before renaming its checkpoint into place
    cannot put it there when it wakes up."""
    import json

    import pytest
    import torch

    from pipeline.launch.grid import load_grid
    from pipeline.leases.ownership import KEEPER, Lease, LostOwnership, Owner
    from pipeline.trialfile.manifest import select, write_manifest
    from pipeline.trialfile.store import TrialFile

    out = tmp_path / "out"
    grid = load_grid("smoke", {"groups": "rot", "modes": "nom", "cnn.seeds": "1", "configs": "cross"})
    trial = select(write_manifest(out, grid, grid.trials()), 0)
    lease_path = trial_lease_path(out, trial.trial_id)
    old = Lease.acquire(lease_path, "trial t")
    KEEPER.drop(old)  # it stops renewing, as a frozen process would
    stale = TrialFile(out, trial, log=lambda line: None, lease=old)
    assert stale.prepare() == "fresh"
    state = {"epoch": 0, "model": {"w": torch.zeros(3)}, "initial": {}}
    stale._save_state(state)
    leftover = stale._private(stale.state_path)
    leftover.write_bytes(b"half a checkpoint")  # it stopped in the middle of writing the next one

    owner = Owner.this_process()  # the next owner (another process, another token)
    lease_path.write_text(json.dumps(owner.__dict__))
    new = TrialFile(out, trial, log=lambda line: None, lease=Lease(lease_path, owner, "trial t"))
    assert new._private(new.state_path) != leftover and new._private(new.path) != stale._private(stale.path)
    new.prepare()
    assert not leftover.exists()
    with pytest.raises(LostOwnership):
        stale._save_state(state)  # woken up: no longer the trial's writer, it writes no checkpoint
    assert [p.name for p in out.joinpath("trials").iterdir() if p.name.startswith(".")] == []


def test_a_taker_with_shorter_lease_settings_does_not_take_a_live_owner_over(tmp_path):
    """The owner beats every 30 s (the default), in another PID namespace (unproven from here); a second
    run-trial set to beat every second and break after 3 s starts right after one of the owner's beats. Three
    of the *taker's* heartbeats passed for a stale lease, and it took the live owner over in 3 s; the stale
    limit is judged against the owner's own interval, which the lease records, and the owner keeps it."""
    require_root_namespaces()
    from pipeline.leases.ownership import read_owner

    values = SLOW + ["epochs=200"]
    out = tmp_path / "out"
    argv = pipeline_argv("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), *sets(values))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_LEASE_")}
    # In a session of its own, so that the whole namespace (unshare and the run-trial it forked) is killed.
    owner = subprocess.Popen(in_new_pid_namespace(argv), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    lease = trial_lease_path(out, TRIAL)
    try:
        assert wait_until(lambda: epochs_done(out / "trials" / f"{TRIAL}.h5") >= 1, timeout=180)
        beat = read_owner(lease).raw
        assert wait_until(lambda: read_owner(lease) is not None and read_owner(lease).raw != beat, timeout=60)
        said = tmp_path / "taker.err"
        with open(said, "w") as err:
            taker = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                     env={**env, "PIPELINE_LEASE_HEARTBEAT_S": "1", "PIPELINE_LEASE_STALE_S": "3"})
        try:
            assert wait_until(lambda: taker.poll() is not None or "took over" in said.read_text(), timeout=240)
            assert "took over" not in said.read_text(), said.read_text()
            assert taker.returncode == 1 and f"trial {TRIAL} is held by" in said.read_text(), said.read_text()
        finally:
            taker.kill()
            taker.wait()
        assert owner.poll() is None and read_status(out / "trials" / f"{TRIAL}.h5")["attempts"] == 1
    finally:
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait()
