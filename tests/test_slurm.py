"""The launcher on a real single-node SLURM cluster (make slurm-up; mandatory in CI)."""

import hashlib
import subprocess
import time

import pytest
import torch

from helpers import assert_same_results
from pipeline.cli import main
from pipeline.grid import load_grid
from pipeline.execute import execute
from pipeline.files import read_status
from pipeline.launch.monitor import gather, wait_for
from pipeline.launch.profiles import load_profile
from pipeline.launch.submission import plan_submission, submit
from pipeline.queue import read_slurm_queue
from pipeline.manifest import write_manifest
from pipeline.runner import FAULT_VARIABLE

pytestmark = pytest.mark.slurm
# About 0.3 s an epoch here: slow enough to interrupt mid-run, short enough for CI.
SLOW = ["groups=rot", "modes=aug", "seeds=1", "n=14", "channels=8", "n_samples=500", "epochs=30", "lr=0.005",
        "augment=sampled:10", "weights_every=10"]


def sets(values):
    return [a for v in values for a in ("--set", v)]


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "trials").glob("*.h5"))}


def test_smoke_grid_as_a_real_job_array(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--wait"]) == 0
    printed = capsys.readouterr().out
    assert "submitted job array" in printed and "with 3 tasks" in printed
    states = gather(out)
    assert len(states) == 15 and all(s.state == "complete" for s in states)
    # Each task recorded where it ran.
    status = read_status(out / "trials" / "rot-equi-s000.h5")
    assert status["slurm_job_id"] and status["slurm_array_task_id"] != ""
    assert main(["status", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "total" in table and " 15 " in table.splitlines()[-1]


def test_a_failed_trial_is_reported_and_resubmitted_alone(slurm_cluster, tmp_path, capsys, monkeypatch):
    out = tmp_path / "faulty"
    monkeypatch.setenv(FAULT_VARIABLE, "rot-aug-s000@1")
    assert main(["submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--wait"]) == 1
    capsys.readouterr()
    failed = [s for s in gather(out) if s.state != "complete"]
    assert [s.trial_id for s in failed] == ["rot-aug-s000"] and failed[0].state == "failed"
    assert "injected fault in rot-aug-s000 at epoch 1" in failed[0].detail
    main(["status", "--out", str(out)])
    assert "injected fault" in capsys.readouterr().out
    before = digests(out)
    monkeypatch.delenv(FAULT_VARIABLE)
    assert main(["resubmit", "--out", str(out), "--cluster", slurm_cluster, "--wait"]) == 0
    printed = capsys.readouterr().out
    resubmitted = [line for line in printed.splitlines() if line.startswith("resubmitting")]
    assert len(resubmitted) == 1 and "rot-aug-s000" in resubmitted[0]
    assert all(s.state == "complete" for s in gather(out))
    after = digests(out)
    assert {k: v for k, v in after.items() if k != "rot-aug-s000.h5"} == {
        k: v for k, v in before.items() if k != "rot-aug-s000.h5"}


def test_a_preempted_task_is_requeued_and_resumes_after_its_last_epoch(slurm_cluster, tmp_path):
    reference = tmp_path / "reference"
    grid = load_grid("smoke", dict(s.split("=", 1) for s in SLOW))
    trials = grid.trials()
    write_manifest(reference, grid, trials)
    threads = torch.get_num_threads()
    torch.set_num_threads(load_profile(slurm_cluster).cpus_per_task)  # bitwise equality needs the same threads
    try:
        execute(reference, [trials[0]])
    finally:
        torch.set_num_threads(threads)

    out = tmp_path / "preempted"
    write_manifest(out, grid, trials)
    record = submit(out, plan_submission(out, [0], load_profile(slurm_cluster)), log=lambda line: None)
    job = record["jobs"][0]
    path = out / "trials" / "rot-aug-s000.h5"

    def epochs_done():
        return read_status(path).get("epochs_done", -1) if path.exists() else -1

    deadline = time.time() + 180
    while time.time() < deadline and epochs_done() < 3:
        time.sleep(0.1)
    interrupted_at = epochs_done()
    assert 3 <= interrupted_at < 30
    job._interrupt()  # submitit's preemption helper: SIGTERM then the checkpoint signal
    wait_for(out, poll_s=1.0)
    status = read_status(path)
    assert status["status"] == "complete" and status["attempts"] == 2
    log = (out / "logs" / "rot-aug-s000.log").read_text()
    resumed = [line for line in log.splitlines() if "resuming after epoch" in line]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[-1]) >= interrupted_at - 1
    assert_same_results(reference / "trials" / "rot-aug-s000.h5", path)


def test_cancel_leaves_nothing_of_the_grid_in_the_queue(slurm_cluster, tmp_path, capsys):
    out = tmp_path / "cancelled"
    argv = ["submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--no-wait",
            "--trials-per-task", "1"] + sets(SLOW[1:] + ["groups=rot,trans"])
    assert main(argv) == 0
    array_id = capsys.readouterr().out.split("submitted job array ")[1].split()[0]
    assert any(j.startswith(array_id + "_") for j in read_slurm_queue())
    assert main(["cancel", "--out", str(out)]) == 0
    deadline = time.time() + 60
    while time.time() < deadline and any(j.startswith(array_id + "_") for j in read_slurm_queue()):
        time.sleep(0.5)
    assert not any(j.startswith(array_id + "_") for j in read_slurm_queue())
    squeue = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
    assert array_id not in squeue
