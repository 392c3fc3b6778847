"""Commands that cannot hurt: dry runs without SLURM, a device policy that never falls back silently, pipes
and interrupts that behave."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.launch.monitor import gather
from pipeline.trialfile.files import read_status

ROOT = Path(__file__).resolve().parents[2]
SLOW = ["groups=rot", "modes=aug", "seeds=1", "n=14", "channels=8", "n_samples=500", "lr=0.005",
        "augment=sampled:10", "weights_every=5", "cnn.seeds=1", "configs=cross"]


def sets(values):
    return [a for v in values for a in ("--set", v)]


def cli(*argv, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("profile,request_line", [("t4", "#SBATCH --gres=gpu:t4:1"),
                                                  ("a40", "#SBATCH --gpus-per-node=A40:1")])
def test_a_dry_run_prints_the_array_and_submits_nothing_without_slurm(profile, request_line, tmp_path, capsys,
                                                                     monkeypatch):
    import shutil
    import subprocess as sp

    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name in ("sbatch", "squeue", "srun")
                        else real_which(name, *a, **k))
    monkeypatch.setattr(sp, "run", lambda *a, **k: pytest.fail(f"a dry run ran {a[0]}"))
    out = tmp_path / "never"
    assert main(["submit", "--exp", "paper-groups", "--out", str(out), "--cluster", profile, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "480 trials in" in printed and "nothing was submitted" in printed
    for line in (request_line, "#SBATCH --array=0-29%30", "#SBATCH --time=", "#SBATCH --signal=USR2@90",
                 "# setup", "-m pipeline.launch.sealed", f"interpreter: {sys.executable}"):
        assert line in printed, line
    assert not out.exists()


def test_device_cuda_on_a_machine_without_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the line is for machines without it")
    assert main(["train", "--device", "cuda", "--epochs", "1", "--n-samples", "8", "--channels", "2",
                 "--set", "n=6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda' was requested, but no CUDA device is visible") and err.count("\n") == 1


def test_a_gpu_profile_never_trains_on_the_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for GPU tasks that land where there is none")
    profile = tmp_path / "gpu-here.toml"
    profile.write_text('executor = "local"\ngpus = 1\nworkers = 1\n')
    out = tmp_path / "out"
    argv = ["submit", "--exp", "smoke", "--out", str(out), "--cluster", str(profile), *sets(SLOW + ["epochs=2"])]
    # Where no GPU is visible at all, the submission is refused before anything starts ...
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    refused = cli(*argv, env=env)
    assert refused.returncode == 2 and "requests GPUs, but none is visible here" in refused.stderr
    assert not (out / "manifest.json").exists()
    # ... and a task that lands where CUDA_VISIBLE_DEVICES names a GPU that torch cannot use fails at once.
    result = cli(*argv, env={**env, "CUDA_VISIBLE_DEVICES": "0"})
    assert result.returncode == 1
    assert not list((out / "trials").glob("*.h5")) if (out / "trials").exists() else True  # nothing trained
    states = gather(out)
    assert {s.state for s in states} == {"missing"}
    assert all("profile that requests GPUs, but no CUDA device is visible" in s.detail for s in states)


def test_the_device_a_trial_chose_is_logged_recorded_and_shown(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *sets(["groups=rot", "modes=nom", "cnn.seeds=1",
                                                                      "configs=cross"])).returncode == 0
    assert "rot-nom-s000: training on cpu; data: vendored" in (out / "logs" / "rot-nom-s000.log").read_text()
    assert read_status(out / "trials" / "rot-nom-s000.h5")["device"] == "cpu"
    assert "epochs on cpu" in cli("status", "--out", str(out)).stdout


def test_status_into_a_closed_pipe_prints_no_traceback(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *sets(["groups=rot", "modes=nom", "cnn.seeds=1",
                                                                      "configs=cross"])).returncode == 0
    piped = subprocess.run(f"{sys.executable} -m pipeline status --out {out} | head -1", shell=True, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert piped.stdout.startswith("index") and piped.stderr == ""


def test_ctrl_c_while_waiting_leaves_the_grid_running_and_says_how_to_follow_it(tmp_path):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(out), "--workers", "1",
            "--wait"] + sets(SLOW + ["epochs=40"])
    # A terminal's Ctrl-C reaches the whole foreground process group: the submit and what it started.
    waiting = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    path = out / "trials" / "rot-aug-s000.h5"
    deadline = time.time() + 120
    while time.time() < deadline and (not path.exists() or read_status(path).get("epochs_done", -1) < 1):
        time.sleep(0.1)
    os.killpg(waiting.pid, signal.SIGINT)
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 130
    assert "stopped waiting; the grid goes on" in stderr and f"pipeline status --out {out}" in stderr
    time.sleep(1.0)
    assert next(s for s in gather(out) if s.trial_id == "rot-aug-s000").state == "running"
    assert cli("cancel", "--out", str(out)).returncode == 0


def test_visible_gpus_come_from_the_environment_or_nvidia_smi(tmp_path):
    from pipeline.launch.local_gpus import share_out, visible_gpus

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at an invalid entry
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    assert visible_gpus({}, nvidia_smi=str(smi)) == ["0", "1"]
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\nexit 9\n")
    broken.chmod(0o755)
    assert visible_gpus({}, nvidia_smi=str(broken)) == []
    assert share_out(["0", "1"], 3, 0) == ["0", "1", "0"]
    assert share_out(["0", "1", "2", "3"], 2, 2) == ["0,1", "2,3"]
    assert share_out(["0"], 2, 4) == ["0", "0"]
    assert share_out([], 2, 1) == [None, None]


def test_local_workers_get_the_gpus_of_the_submitting_shell_not_an_empty_list(tmp_path):
    """Submitit's local executor would give every worker CUDA_VISIBLE_DEVICES="" (seen on an H200): each
    worker must instead get its share of the GPUs that the submitting shell sees, and say so in its log."""
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    argv = [sys.executable, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(out), "--workers", "2",
            *sets(["groups=rot", "modes=equi,nom", "epochs=1", "configs=cross"])]
    dry = subprocess.run([*argv, "--dry-run"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert "GPUs (CUDA_VISIBLE_DEVICES) of the workers: 0, 1" in dry.stdout, dry.stdout + dry.stderr
    result = subprocess.run([*argv, "--wait"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "on GPU 0, 1" in result.stdout + result.stderr
    record = [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()][-1]
    assert sorted(task["cuda_visible_devices"] for task in record["tasks"]) == ["0", "1"]
    logs = "".join(p.read_text() for p in (out / "submitit" / "local").rglob("*_log.out"))
    assert "CUDA_VISIBLE_DEVICES=0\n" in logs and "CUDA_VISIBLE_DEVICES=1\n" in logs, logs
