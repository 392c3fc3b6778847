"""Watching a run: status --watch, logs [-f], TensorBoard curves beside the trial files, progress lines."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.cli import main
from pipeline.run.faults import FAULT_VARIABLE
from pipeline.trialfile.files import open_h5, read_status

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "groups=rot", "--set", "modes=nom", "--set", "cnn.seeds=1", "--set", "configs=cross"]
SLOW = ["--set", "groups=rot", "--set", "modes=aug", "--set", "n=14", "--set", "channels=8", "--set", "n_samples=500",
        "--set", "augment=sampled:10", "--set", "epochs=25", "--set", "lr=0.005", "--set", "cnn.seeds=1",
        "--set", "configs=cross", "--set", "weights_every=0"]


def cli(*argv, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_status_watch_follows_a_running_grid_until_it_is_done_and_logs_follow_a_trial(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), "--workers", "1", "--no-wait", *SLOW).returncode == 0
    follower = subprocess.Popen([sys.executable, "-m", "pipeline", "logs", "rot-aug-s000", "--out", str(out), "-f"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = cli("status", "--out", str(out), "--watch", "1", timeout=600)
    followed, _ = follower.communicate(timeout=120)
    assert watched.returncode == 0 and follower.returncode == 0
    headers = [line for line in watched.stdout.splitlines() if "queued or running" in line]
    assert len(headers) >= 2 and "queued or running; every 1 s" in headers[0]  # it saw the grid at work
    assert headers[-1].endswith(" 0 trial(s) queued or running; nothing left to run")
    last = watched.stdout.split(headers[-1], 1)[1]
    states = re.findall(r"^\s+\d+\s+\S+\s+(\w+)\s", last, re.M)
    assert states == ["complete", "complete"]
    # logs -f printed the whole log, up to its last epoch, and stopped by itself when the trial ended
    assert "rot-aug-s000 epoch 25/25" in followed
    assert followed.count("epoch 0/25") == 1
    again = cli("logs", "rot-aug-s000", "--out", str(out))
    assert again.stdout == (out / "logs" / "rot-aug-s000.log").read_text()


def test_logs_of_an_unknown_trial_suggest_the_close_ones(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *TINY).returncode == 0
    wrong = cli("logs", "rot-nom-s00", "--out", str(out))
    assert wrong.returncode == 2 and "(did you mean rot-nom-s000" in wrong.stderr and wrong.stderr.count("\n") == 1


def test_tensorboard_curves_hold_the_trial_files_values_and_a_resumed_trial_has_each_epoch_once(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, FAULT_VARIABLE: "rot-nom-s000@3"}
    argv = ["run-trial", "--exp", "smoke", "--trial", "rot-nom-s000", "--out", str(out), "--tensorboard",
            "--set", "epochs=6", "--checkpoint-every", "0", *TINY]
    assert cli(*argv, env=env).returncode == 1  # fails at epoch 3, after writing epochs 0-2
    assert read_status(out / "trials" / "rot-nom-s000.h5")["status"] == "failed"
    resumed = cli(*argv)
    assert resumed.returncode == 0, resumed.stderr
    curves = scalars(out / "tensorboard" / "rot-nom-s000")
    with open_h5(out / "trials" / "rot-nom-s000.h5") as f:
        loss, dist_E, layers = f["metrics/loss"][()], f["metrics/dist_E"][()], list(f["metrics/dist_E"].attrs["layer_names"])
        travelled = f["metrics/dist_init"][()]
    assert [step for step, _ in curves["loss"]] == list(range(7))  # every epoch once, despite the resume
    assert np.allclose([v for _, v in curves["loss"]], loss, rtol=1e-6)
    for i, layer in enumerate(layers):
        name = layer.decode() if isinstance(layer, bytes) else layer
        assert np.allclose([v for _, v in curves[f"dist_E/{name}"]], dist_E[:, i], rtol=1e-6, atol=1e-30)
    assert np.allclose([v for _, v in curves["travelled/total"]], np.linalg.norm(travelled, axis=1), rtol=1e-6)
    assert {"accuracy", "grad_norm", "dist_E/total", "seconds"} <= set(curves)


def test_tensorboard_on_submit_and_train(tmp_path, capsys, monkeypatch):
    out = tmp_path / "grid"
    assert main(["submit", "--exp", "smoke", "--out", str(out), "--tensorboard", *TINY]) == 0
    assert f"tensorboard --logdir {out / 'tensorboard'}" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["cnn-cross-s000", "rot-nom-s000"]
    assert len(scalars(out / "tensorboard" / "cnn-cross-s000")["loss"]) == 3  # two phases of one epoch, and the start
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--group", "rot", "--mode", "nom", "--epochs", "2", "--n-samples", "32", "--channels", "2",
                 "--set", "n=6", "--lr", "0.1", "--tensorboard"]) == 0
    assert len(scalars(tmp_path / "tensorboard" / "rot-nom-s000")["loss"]) == 3


def test_aggregation_prints_progress_lines(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *TINY).returncode == 0
    result = cli("aggregate", "--out", str(out))
    assert result.returncode == 0
    assert "reading trial files: 2/2" in result.stderr and "figures:" in result.stderr


def test_the_final_stage_is_announced_and_reports_progress_through_its_hook(monkeypatch):
    from pipeline import experiments
    from pipeline.experiments import make_trial
    from pipeline.run.runner import ConsoleSink, run_trial

    experiment = experiments.get("stability")
    original = experiment.finalize

    def finalize(settings, stepper, data, sinks, progress=None):
        for done in range(1, 4):
            progress("Lanczos on E", done, 3)
        progress("perturbations", 1, 2)
        original(settings, stepper, data, sinks)

    monkeypatch.setattr(experiment, "finalize", finalize)
    lines = []
    trial = make_trial("stability", {"network": "rot", "n": "4", "channels": "3", "n_samples": "48",
                                     "max_iterations": "20", "block": "10", "newton_iterations": "5",
                                     "hessian_budget": "200", "check_steps": "8", "dense_limit": "300", "eigenpairs": "2",
                                     "lanczos_steps": "8", "perturbation_steps": "4", "device": "cpu"})
    run_trial(trial, ConsoleSink(log=lines.append))
    stage = [line for line in lines if "final stage" in line]
    assert stage[0] == "stab-rot-s000: final stage: measurements after training"
    assert any(line.startswith("stab-rot-s000: final stage: Lanczos on E: 3/3 (100%)") for line in stage)
    assert any(line.startswith("stab-rot-s000: final stage: perturbations: 1/2 (50%)") for line in stage)
    assert stage[-1].startswith("stab-rot-s000: final stage done in ")
