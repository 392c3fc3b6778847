"""The launcher on a real single-node SLURM cluster (make slurm-up; mandatory in CI)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import assert_same_results, launched_indices, run_at_once, wait_until
from pipeline.cli import main
from pipeline.launch.grid import load_grid
from pipeline.launch.monitor import gather, wait_for
from pipeline.launch.profiles import load_profile
from pipeline.launch.submission import plan_submission, submit
from pipeline.run.execute import execute
from pipeline.run.faults import FAULT_VARIABLE
from pipeline.schedulers.slurm_queue import read_slurm_queue
from pipeline.trialfile.files import read_status
from pipeline.trialfile.manifest import write_manifest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[2]
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

    wait_until(lambda: epochs_done() >= 3, timeout=180, poll=0.1)
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
    wait_until(lambda: not any(j.startswith(array_id + "_") for j in read_slurm_queue()), timeout=60, poll=0.5)
    assert not any(j.startswith(array_id + "_") for j in read_slurm_queue())
    squeue = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
    assert array_id not in squeue


# -- one owner per trial, truthful status, and commands that cannot hurt (on the real cluster) ---------------

def cli(*argv, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_two_submits_of_one_grid_launch_every_trial_once_on_slurm(slurm_cluster, tmp_path):
    out = tmp_path / "twice"
    argv = [sys.executable, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(out), "--cluster",
            slurm_cluster, "--no-wait", "--trials-per-task", "2"]
    outputs = run_at_once(argv, ROOT)
    assert all(code == 0 for code, _, _ in outputs), outputs
    assert sorted(launched_indices(out)) == list(range(15))
    wait_for(out, poll_s=1.0)
    assert all(s.state == "complete" for s in gather(out))
    assert all(read_status(p)["attempts"] == 1 for p in (out / "trials").glob("*.h5"))


def test_an_unreadable_queue_is_unknown_and_resubmit_refuses(slurm_cluster, tmp_path):
    out = tmp_path / "blind"
    argv = ["submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--no-wait",
            "--trials-per-task", "1"] + sets(SLOW[1:] + ["groups=rot,trans,trans1d,rototrans", "epochs=30"])
    assert cli(*argv).returncode == 0
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "squeue").write_text("#!/bin/sh\necho 'slurm_load_jobs error: Socket timed out' >&2\nexit 1\n")
    (fake / "squeue").chmod(0o755)
    blind = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    try:
        status = cli("status", "--out", str(out), env=blind)
        assert status.returncode == 0 and " unknown " in status.stdout and "squeue did not answer" in status.stdout
        refused = cli("resubmit", "--out", str(out), env=blind)
        assert refused.returncode == 2 and "--force" in refused.stderr and refused.stderr.count("\n") == 1
        trials = len(json.loads((out / "manifest.json").read_text())["trials"])
        assert sorted(launched_indices(out)) == list(range(trials))  # nothing was launched twice
    finally:
        assert cli("cancel", "--out", str(out)).returncode == 0
    states = {s.state for s in gather(out)}
    assert "unknown" not in states and states <= {"cancelled", "complete", "running"}


def test_resubmit_uses_the_profile_of_the_last_submission(slurm_cluster, tmp_path, monkeypatch):
    out = tmp_path / "again"
    monkeypatch.setenv(FAULT_VARIABLE, "rot-equi-s000@1")
    assert cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--wait").returncode == 1
    monkeypatch.delenv(FAULT_VARIABLE)
    result = cli("resubmit", "--out", str(out), "--wait")  # no --cluster: the grid's own profile
    assert result.returncode == 0, result.stderr
    assert f"on profile {slurm_cluster}" in result.stdout and "submitted job array" in result.stdout
    last = json.loads((out / "submissions.jsonl").read_text().splitlines()[-1])
    assert last["executor"] == "slurm" and last["profile"] == slurm_cluster


def test_a_submission_sbatch_rejects_is_one_line_and_leaves_the_folder_as_it_was(slurm_cluster, tmp_path):
    """A partition this SLURM lacks is caught before sbatch (sinfo); memory no node has is sbatch's to refuse.
    Either way the refusal is one line and the folder is as it was: absent for a first submission (submitit's
    pickles and sbatch script included), untouched for a grid that already ran."""
    text = (ROOT / "slurm" / "profiles" / f"{slurm_cluster}.toml").read_text()
    no_partition, no_memory = tmp_path / "no-partition.toml", tmp_path / "no-memory.toml"
    no_partition.write_text(text.replace('partition = "debug"', 'partition = "no-such-partition"'))
    no_memory.write_text(text.replace("mem_gb = 2", "mem_gb = 100000"))
    out = tmp_path / "rejected"
    for profile, start, names in ((no_partition, "error: profile no-partition asks for partition", "no-such-partition"),
                                  (no_memory, "error: sbatch rejected the array on profile no-memory", "memory")):
        result = cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", str(profile), "--no-wait")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(start) and names in result.stderr.lower(), result.stderr
        assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    fixed = cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--wait")
    assert fixed.returncode == 0, fixed.stderr
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    grown = cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", str(no_memory), "--no-wait",
                "--set", "seeds=0-3")
    assert grown.returncode == 2 and grown.stderr.startswith("error: sbatch rejected the array"), grown.stderr
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_cancelled_trials_say_cancelled_not_failed(slurm_cluster, tmp_path):
    out = tmp_path / "stopped"
    argv = ["submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--no-wait",
            "--trials-per-task", "1"] + sets(SLOW[1:] + ["groups=rot,trans", "epochs=60"])
    assert cli(*argv).returncode == 0
    path = out / "trials" / "rot-aug-s000.h5"
    wait_until(lambda: path.exists() and read_status(path).get("epochs_done", -1) >= 2, timeout=180, poll=0.2)
    assert cli("cancel", "--out", str(out)).returncode == 0
    wait_until(lambda: not any(s.state in ("running", "queued") for s in gather(out)), timeout=90, poll=0.5)
    states = {s.trial_id: s.state for s in gather(out)}
    assert states["rot-aug-s000"] == "cancelled" and "failed" not in states.values()


def test_the_stability_smoke_grid_runs_on_slurm_and_aggregates(slurm_cluster, tmp_path):
    out = tmp_path / "stability"
    result = cli("submit", "--exp", "stability-smoke", "--out", str(out), "--cluster", slurm_cluster, "--wait",
                 "--set", "seeds=2")
    assert result.returncode == 0, result.stderr
    aggregated = cli("aggregate", "--out", str(out))
    assert aggregated.returncode == 0, aggregated.stderr
    assert "claim 1: the equivariant stationary points of Equi and Aug coincide" in aggregated.stdout
    assert "claim 3: a stationary point stable for Equi can be unstable for Aug" in aggregated.stdout


def test_a_grid_split_into_several_arrays_is_followed_cancelled_and_resubmitted_as_one(slurm_cluster, tmp_path):
    """Time limits by cost make several job arrays of one submission: status, cancel and resubmit treat
    them as one grid."""
    profile = tmp_path / "two-limits.toml"
    profile.write_text((ROOT / "slurm" / "profiles" / f"{slurm_cluster}.toml").read_text()
                       + "\n[time_limit_min]\ngroups = 10\ncnn = 20\n")
    out = tmp_path / "split"
    argv = ["submit", "--exp", "smoke", "--out", str(out), "--cluster", str(profile), "--trials-per-task", "1"]
    grid = sets(SLOW[1:] + ["groups=rot,trans", "epochs=60", "configs=cross,skew"])
    dry = cli(*argv, *grid, "--dry-run")
    assert "2 array(s), time limits 20, 10 min" in dry.stdout, dry.stdout + dry.stderr
    submitted = cli(*argv, *grid, "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    lines = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in lines] == ["launching", "submission", "submission"]  # one launch, every array
    records = lines[1:]
    assert [r["time_min"] for r in records] == [20, 10] and len({r["array_id"] for r in records}) == 2
    assert sorted(launched_indices(out)) == list(range(4))
    arrays = {r["array_id"] for r in records}
    assert {j.split("_")[0] for j in read_slurm_queue()} >= arrays or any(
        s.state == "complete" for s in gather(out))
    status = cli("status", "--out", str(out))
    assert status.returncode == 0 and "total" in status.stdout
    followed = gather(out)
    assert {s.job_id.split("_")[0] for s in followed} == arrays  # every trial followed through its own array
    assert all(s.state in ("queued", "running", "complete") for s in followed)
    assert cli("cancel", "--out", str(out)).returncode == 0
    wait_until(lambda: not any(j.split("_")[0] in arrays for j in read_slurm_queue()), timeout=90, poll=0.5)
    assert not any(j.split("_")[0] in arrays for j in read_slurm_queue())
    states = {s.state for s in gather(out)}
    assert states <= {"cancelled", "complete"} and "cancelled" in states
    # The profile of the last submission, whose fixed minutes make two arrays again.
    again = cli("resubmit", "--out", str(out), "--wait", "--trials-per-task", "1")
    assert again.returncode == 0, again.stderr
    resubmitted = [line.split()[1] for line in again.stdout.splitlines() if line.startswith("resubmitting")]
    kinds = {"cnn" if trial_id.startswith("cnn-") else "groups" for trial_id in resubmitted}
    assert resubmitted and again.stdout.count("submitted job array") == len(kinds)  # one array per limit
    assert all(s.state == "complete" for s in gather(out))


def test_resubmit_after_a_cancel_keeps_the_tensorboard_curves_and_the_packing_of_the_submission(slurm_cluster,
                                                                                                  tmp_path):
    """A grid submitted with --tensorboard and --trials-per-task 2, cancelled mid-run, then resubmitted with no
    option at all: every trial ends complete with its curves at every epoch, and the resubmission's tasks hold
    two trials each, as the submission's did."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "remembered"
    argv = ["submit", "--exp", "smoke", "--out", str(out), "--cluster", slurm_cluster, "--no-wait", "--tensorboard",
            "--trials-per-task", "2"] + sets(SLOW[1:] + ["groups=rot,trans", "epochs=40", "cnn.seeds=1",
                                                         "configs=cross,skew"])
    assert cli(*argv).returncode == 0
    path = out / "trials" / "rot-aug-s000.h5"
    wait_until(lambda: path.exists() and read_status(path).get("epochs_done", -1) >= 3, timeout=240, poll=0.2)
    assert cli("cancel", "--out", str(out)).returncode == 0
    wait_until(lambda: not any(s.state in ("running", "queued") for s in gather(out)), timeout=120, poll=0.5)
    assert "cancelled" in {s.state for s in gather(out)}
    dry = cli("resubmit", "--out", str(out), "--dry-run")
    assert dry.returncode == 0 and "with --tensorboard --trials-per-task 2 (as submitted at" in dry.stdout, dry.stdout
    assert "dry run: nothing was resubmitted" in dry.stdout
    again = cli("resubmit", "--out", str(out), "--wait")
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()]
    last = [r for r in records if r.get("kind") == "submission"][-1]
    assert last["options"]["sinks"] == ["tensorboard"] and last["options"]["trials_per_task"] == 2
    assert {len(task["indices"]) for task in last["tasks"]} <= {1, 2} and any(
        len(task["indices"]) == 2 for task in last["tasks"])
    states = gather(out)
    assert all(s.state == "complete" for s in states) and "curves end" not in " ".join(s.detail for s in states)
    for s in states:
        events = EventAccumulator(str(out / "tensorboard" / s.trial_id))
        events.Reload()
        total = read_status(out / "trials" / f"{s.trial_id}.h5")["total_epochs"]
        assert [e.step for e in events.Scalars("loss")] == list(range(total + 1)), s.trial_id
