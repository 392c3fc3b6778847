"""Faults on the real single-node SLURM cluster (make slurm-up; mandatory in CI): a launch whose reader goes
away, a run-trial inside a SLURM job of "another node", and a cancel that lets running tasks save."""

import json
import os
import subprocess
import time

import pytest

from helpers import (
    ROOT,
    SLOW,
    as_other_host,
    assert_same_results,
    cli,
    epochs_done,
    pipeline_argv,
    reference_run,
    require_root_namespaces,
    sets,
    wait_until,
)
from pipeline.launch.grid import load_grid
from pipeline.launch.monitor import gather, wait_for
from pipeline.launch.profiles import load_profile
from pipeline.schedulers.slurm_queue import read_slurm_queue
from pipeline.trialfile.files import read_status
from pipeline.trialfile.manifest import write_manifest

pytestmark = pytest.mark.slurm


def test_a_resubmit_piped_into_head_is_recorded(slurm_cluster, tmp_path):
    """`resubmit ... | head -3`: the array was submitted but never recorded (status said missing, cancel
    said nothing was queued)."""
    out = tmp_path / "out"
    grid = load_grid("smoke", {})
    write_manifest(out, grid, grid.trials())
    command = " ".join(pipeline_argv("resubmit", "--out", str(out), "--cluster", slurm_cluster)) + " | head -3"
    piped = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert len(piped.stdout.splitlines()) == 3 and piped.stderr == ""
    submitted = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()]
    submitted = [r for r in submitted if r.get("kind") == "submission"]
    assert len(submitted) == 1 and sorted(i for t in submitted[0]["tasks"] for i in t["indices"]) == list(range(15))
    assert "missing" not in {s.state for s in gather(out)}
    wait_for(out, poll_s=1.0)
    assert all(s.state == "complete" for s in gather(out))


def test_a_run_trial_in_a_slurm_job_of_another_node_shows_running_and_is_not_resubmitted(slurm_cluster, tmp_path,
                                                                                         monkeypatch):
    """The folder has no SLURM submission: status used to read no queue, take the owner's job as ended and
    call the training trial failed, and resubmit relaunched it. Its heartbeat is made too rare to vouch
    for it here, so that only SLURM's answer (its job is RUNNING) can."""
    require_root_namespaces()
    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in SLOW + ["epochs=30"]))
    write_manifest(out, grid, grid.trials()[:1])
    slow_beats = {**os.environ, "PIPELINE_LEASE_HEARTBEAT_S": "1000", "PIPELINE_LEASE_STALE_S": "3000"}
    argv = ["srun", "--partition", "debug", "--cpus-per-task", "1", "--export", "ALL",
            *as_other_host(pipeline_argv("run-trial", "--out", str(out), "--index", "0"))]
    inside = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=slow_beats)
    path = out / "trials" / "rot-aug-s000.h5"
    try:
        assert wait_until(lambda: epochs_done(path) >= 2, timeout=600)  # srun waits for a free CPU
        monkeypatch.setenv("PIPELINE_LEASE_HEARTBEAT_S", "1")
        monkeypatch.setenv("PIPELINE_LEASE_STALE_S", "3")
        time.sleep(4)  # its heartbeat is older than this reader's stale limit
        state = gather(out)[0]
        assert state.state == "running", state.detail
        assert "on node2 (SLURM job" in state.detail
        again = cli("resubmit", "--out", str(out), "--cluster", "local", "--no-wait")
        assert again.returncode == 0 and "nothing to resubmit" in again.stdout, again.stdout + again.stderr
    finally:
        _, err = inside.communicate(timeout=600)
    assert inside.returncode == 0, err
    assert read_status(path)["attempts"] == 1 and gather(out)[0].state == "complete"


def test_cancel_lets_running_slurm_tasks_save_and_their_files_say_cancelled(slurm_cluster, tmp_path):
    values = SLOW + ["epochs=30", "groups=rot,trans"]
    out = tmp_path / "out"
    submitted = cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--no-wait",
                    "--trials-per-task", "1", *sets(values))
    assert submitted.returncode == 0, submitted.stderr
    path = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: epochs_done(path) >= 2, timeout=300)
    cancelled = cli("cancel", "--out", str(out))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "running SLURM task(s) to save their last epoch and stop" in cancelled.stdout
    array = json.loads((out / "submissions.jsonl").read_text().splitlines()[1])["tasks"][0]["job_id"].split("_")[0]
    assert wait_until(lambda: not any(j.startswith(array + "_") for j in (read_slurm_queue() or {"?": 0})),
                      timeout=180)
    status = read_status(path)
    assert status["status"] == "cancelled", status  # it saved and said so: not left "running"
    stopped_at = status["epochs_done"]
    assert 2 <= stopped_at < 30
    states = {s.trial_id: s.state for s in gather(out)}
    assert set(states.values()) == {"cancelled"}, states
    again = cli("resubmit", "--out", str(out), "--cluster", slurm_cluster, "--wait")
    assert again.returncode == 0, again.stderr
    assert f"resuming after epoch {stopped_at}" in (out / "logs" / "rot-aug-s000.log").read_text()
    threads = load_profile(slurm_cluster).cpus_per_task
    expected = reference_run(tmp_path / "reference", values, threads=threads)
    assert_same_results(expected, path)
