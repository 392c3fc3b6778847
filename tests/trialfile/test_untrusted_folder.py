"""A results folder that cannot be turned against its owner. Folders on shared storage are writable by a
group: whatever is read from one (a trial id, a lease, a submission record, a task's pickle) may have been
written by someone else, and must not make the pipeline write outside the folder, signal a process that is
not this folder's, run a profile's setup lines it was not given, or unpickle a file it did not write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cli, wait_until
from pipeline.launch.grid import load_grid
from pipeline.leases.ownership import Owner, process_start_ticks
from pipeline.trialfile.manifest import write_manifest

SMALL = ["groups=rot", "modes=nom", "cnn.seeds=1", "configs=cross"]


def small_folder(tmp_path) -> Path:
    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in SMALL))
    write_manifest(out, grid, grid.trials())
    return out


def bystander() -> subprocess.Popen:
    """A process of the same user that has nothing to do with the folder (an editor, a shell): the cancel
    signal's default action would end it."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def forged_owner(pid: int) -> dict:
    me = Owner.this_process()
    return {"host": me.host, "boot_id": me.boot_id, "pid": pid, "start_ticks": process_start_ticks(pid),
            "slurm_job": "", "command": "pipeline run-trial", "acquired_at": time.time(),
            "heartbeat_at": time.time(), "token": "forged", "pid_ns": me.pid_ns}


# -- 4c. signals only to processes proven to run this pipeline on this folder ----------------------------------

@pytest.mark.parametrize("where", ["trial lease", "task lease", "submission record"])
def test_cancel_never_signals_a_process_the_folder_merely_names(tmp_path, where):
    out = small_folder(tmp_path)
    victim = bystander()
    shell = subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(120)' & wait"])
    try:
        assert wait_until(lambda: process_start_ticks(victim.pid) is not None, timeout=10)
        if where == "trial lease":
            (out / "trials").mkdir()
            (out / "trials" / "rot-nom-s000.lease").write_text(json.dumps(forged_owner(victim.pid)))
        elif where == "task lease":
            (out / "submitit" / "leases").mkdir(parents=True)
            (out / "submitit" / "leases" / "777.lease").write_text(json.dumps(forged_owner(victim.pid)))
            (out / "submissions.jsonl").write_text(json.dumps(_record("777", None)) + "\n")
        else:  # a record naming a shell of the user's (its children would be signalled) with its right identity
            from pipeline.launch.backends.local import children

            assert wait_until(lambda: children(shell.pid), timeout=10)
            (out / "submissions.jsonl").write_text(
                json.dumps(_record(str(shell.pid), process_start_ticks(shell.pid))) + "\n")
        result = cli("cancel", "--out", str(out))
        assert result.returncode == 0, result.stderr
        time.sleep(0.5)
        assert victim.poll() is None, "cancel signalled a process the folder only named"
        assert shell.poll() is None
        from pipeline.launch.monitor import gather

        assert {s.state for s in gather(out)} <= {"missing", "unknown"}  # nothing runs them, whatever it says
    finally:
        for process in (victim, shell):
            process.kill()
        subprocess.run(["pkill", "-P", str(shell.pid)], capture_output=True)


def _record(job_id: str, start_ticks) -> dict:
    me = Owner.this_process()
    return {"kind": "submission", "submitted_at": "2026-01-01T00:00:00+00:00", "hostname": me.host,
            "boot_id": me.boot_id, "pid_ns": me.pid_ns, "profile": "local", "executor": "local", "folder": "",
            "tasks": [{"job_id": job_id, "indices": [0, 1], "start_ticks": start_ticks}]}


def test_the_proof_knows_this_pipelines_processes_on_this_folder(tmp_path):
    from pipeline.launch.backends.proof import runs_on_folder

    out = tmp_path / "out"
    out.mkdir()
    other = tmp_path / "other"
    cases = {(sys.executable, "-m", "pipeline", "status", "--out", "out"): True,
             (sys.executable, "-m", "pipeline", "status", "--out", str(other)): False,
             (sys.executable, "-u", "-m", "submitit.core._submit", str(out / "submitit" / "local")): True,
             (sys.executable, "-m", "pipeline.launch.sealed", str(out / "submitit" / "12")): True,
             (sys.executable, "-m", "pipeline.launch.sealed", str(other / "submitit" / "12")): False,
             ("sh", "-c", f"module load x && {sys.executable} -m pipeline.launch.local_controller {out}/submitit/local"):
                 True,
             (sys.executable, "-c", f"import time; time.sleep(30)  # --out {out}"): False}
    for argv, expected in cases.items():
        script = f"import os, sys, time; os.execv({argv[0]!r}, {list(argv)!r})" if argv[0] != "sh" else None
        process = subprocess.Popen(list(argv) if script is None else [sys.executable, "-c", script],
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)  # exec'd, and not yet finished (those that run a command fail fast: checked below)
            if process.poll() is None:
                assert runs_on_folder(process.pid, out) is expected, argv
        finally:
            process.kill()


# -- 4d. trial ids are names ------------------------------------------------------------------------------------

def test_a_manifest_trial_id_that_is_a_path_writes_nothing_outside_the_folder(tmp_path):
    out = small_folder(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["trials"][0]["trial_id"] = "../../outside/victim"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "outside").mkdir()
    for command in (["run-trial", "--index", "0"], ["status"], ["resubmit", "--cluster", "local"], ["aggregate"]):
        result = cli(*command, "--out", str(out))
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "manifest.json" in result.stderr and "trial entry 0" in result.stderr and "not a name" in result.stderr
    assert list((tmp_path / "outside").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "outside"]


# -- 4b. no code path from the folder without proof ---------------------------------------------------------------

def test_resubmit_does_not_take_a_profile_file_the_folder_names_without_proof(tmp_path):
    """A forged ``profile_path`` in a record: its ``setup`` lines would run through sbatch on the nodes.
    Resubmit takes a recorded profile file only if nobody but the user can have written it; otherwise it
    asks for ``--cluster``."""
    from pipeline.cli.resubmitting import last_profile as _last_profile

    out = small_folder(tmp_path)
    evil = tmp_path / "planted" / "evil.toml"
    evil.parent.mkdir()
    evil.write_text('executor = "slurm"\nsetup = ["touch /tmp/pwned-by-a-planted-profile"]\n')
    os.chown(evil, 12345, 12345)  # written by another member of the group
    record = {**_record("4242", 1), "profile": "testcluster", "profile_path": str(evil)}
    (out / "submissions.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(Exception) as refused:
        _last_profile(out, None)
    assert "--cluster" in str(refused.value) and str(evil) in str(refused.value)
    os.chown(evil, os.geteuid(), os.getegid())
    os.chmod(evil, 0o664)  # the group may write it
    with pytest.raises(Exception, match="--cluster"):
        _last_profile(out, None)
    os.chmod(evil, 0o644)
    assert _last_profile(out, None).setup == ["touch /tmp/pwned-by-a-planted-profile"]  # the user's own file
    record["profile"], record["profile_path"] = str(evil), ""  # a path where a name belongs
    (out / "submissions.jsonl").write_text(json.dumps(record) + "\n")
    os.chown(evil, 12345, 12345)
    with pytest.raises(Exception, match="--cluster"):
        _last_profile(out, None)
    record["profile"] = "local"  # an installed profile, by name: the code's own
    (out / "submissions.jsonl").write_text(json.dumps(record) + "\n")
    assert _last_profile(out, None).name == "local"


# -- 4a. no pickle from the folder without proof that its own submission wrote it ---------------------------------

class _Planted:
    """What an intruder plants: unpickling it creates a file (it could run anything)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_in_the_folder_is_not_run_by_the_requeued_task(tmp_path):
    """A local task at its time limit saves and is requeued; before its controller starts it again, the
    task's pickle in ``OUT/submitit/local`` is replaced (the controller is held still meanwhile, to hit the
    moment every time). The restarted task must refuse the pickle in one line, without unpickling it."""
    import pickle
    import signal

    import submitit

    from helpers import SLOW, epochs_done, sets
    from pipeline.launch.backends.local import children

    out = tmp_path / "out"
    result = cli("submit", "--exp", "smoke", "--out", str(out), "--no-wait", "--workers", "1",
                 *sets(SLOW + ["epochs=400"]))
    assert result.returncode == 0, result.stderr
    controller = int(json.loads((out / "submissions.jsonl").read_text().splitlines()[-1])["tasks"][0]["job_id"])
    assert wait_until(lambda: epochs_done(out / "trials" / "rot-aug-s000.h5") >= 2, timeout=300)
    (task,) = children(controller)
    os.kill(controller, signal.SIGSTOP)
    try:
        os.kill(task, submitit.JobEnvironment._usr_sig())  # the time limit: save, checkpoint, requeue
        assert wait_until(lambda: process_start_ticks(task) is None, timeout=120)
        (submitted,) = (out / "submitit" / "local").glob(f"{controller}*_submitted.pkl")
        marker = tmp_path / "the-planted-pickle-ran"
        submitted.write_bytes(pickle.dumps(_Planted(str(marker))))
    finally:
        os.kill(controller, signal.SIGCONT)
    assert wait_until(lambda: process_start_ticks(controller) is None, timeout=120)
    assert not marker.exists(), "the task unpickled a file planted in the folder"
    (state,) = [s for s in gather_states(out) if s.trial_id == "rot-aug-s000"]
    assert state.state == "failed" and "refusing to unpickle" in state.detail, state.detail


def gather_states(out):
    from pipeline.launch.monitor import gather

    return gather(out)


@pytest.mark.slurm
def test_a_pickle_planted_while_an_array_task_waits_in_the_queue_is_not_run_on_the_node(slurm_cluster, tmp_path):
    """On SLURM: the array is submitted held (``additional = {hold = true}``), so that its task's pickle can
    be replaced before the task starts, as an intruder would while it waits in the queue."""
    import pickle

    from helpers import ROOT

    profile = tmp_path / "held.toml"
    profile.write_text((ROOT / "slurm" / "profiles" / f"{slurm_cluster}.toml").read_text()
                       + "\nadditional = { hold = true }\n")
    out = tmp_path / "out"
    result = cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", str(profile), "--no-wait",
                 "--set", "groups=rot", "--set", "modes=nom", "--set", "cnn.seeds=1", "--set", "configs=cross",
                 "--trials-per-task", "2")
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()
                 if json.loads(line).get("kind") == "submission"]
    job = record["tasks"][0]["job_id"]
    (submitted,) = Path(record["folder"]).glob(f"{job}_submitted.pkl")
    marker = tmp_path / "the-planted-pickle-ran"
    submitted.write_bytes(pickle.dumps(_Planted(str(marker))))
    subprocess.run(["scontrol", "release", record["array_id"]], check=True)
    assert wait_until(lambda: all(s.state != "queued" for s in gather_states(out)), timeout=600)
    assert not marker.exists(), "the node unpickled a file planted in the folder"
    states = gather_states(out)
    assert {s.state for s in states} == {"missing"} and "refusing to unpickle" in states[0].detail, \
        [(s.state, s.detail) for s in states]


# -- temporary names: never written through a link planted at them ----------------------------------------------

def test_links_planted_at_a_writers_temporary_names_are_never_written_through(tmp_path):
    """A lease shows its owner's token, and the owner's temporary files were named after it: a link planted
    at such a name made the next heartbeat, or the next checkpoint, write into the file it points to."""
    import torch

    from pipeline.leases.ownership import KEEPER, Lease, read_owner
    from pipeline.trialfile.manifest import select
    from pipeline.trialfile.store import TrialFile

    out = small_folder(tmp_path)
    trial = select(json_trials(out), 0)
    lease = Lease.acquire(out / "trials" / f"{trial.trial_id}.lease", f"trial {trial.trial_id}")
    KEEPER.drop(lease)  # its beats are made by hand here
    victims = []
    try:
        token = read_owner(lease.path).token  # what anyone who can read the folder sees
        for name in (f".{trial.trial_id}.lease.{token}.tmp", f".{trial.trial_id}.state.pt.{token}.tmp",
                     f".{trial.trial_id}.h5.{token}.tmp", f".{trial.trial_id}.h5.journal.{token}.tmp"):
            victim = tmp_path / f"victim-{len(victims)}"
            victim.write_text("precious\n")
            (out / "trials" / name).symlink_to(victim)
            victims.append(victim)
        lease.renew()
        store = TrialFile(out, trial, log=lambda line: None, lease=lease)
        assert store.prepare() == "fresh"
        store._save_state({"epoch": 0, "model": {"w": torch.zeros(3)}, "initial": {}})
        for victim in victims:
            assert victim.read_text() == "precious\n", victim
    finally:
        lease.release()


def json_trials(out):
    from pipeline.trialfile.manifest import read_manifest, trials_of_manifest

    return trials_of_manifest(read_manifest(out))
