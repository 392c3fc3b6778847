"""make smoke's verdict (pipeline/launch/cluster_check.py), read from the trial files of the cluster-smoke grid: what
it says of a GPU profile whose nodes ran it, and of one whose nodes did not run it as asked. (A real run on
this machine's SLURM: tests/launch/test_checks_before_the_queue.py and the README's example.)"""

import pytest

from pipeline.launch import cluster_check, throughput
from pipeline.launch.grid import load_grid
from pipeline.launch.profiles import load_profile
from pipeline.trialfile.manifest import write_manifest

GPU = {"status": "complete", "device": "cuda:0 (Tesla T4)", "device_model": "Tesla T4", "hostname": "node7",
       "gpu_driver_version": "535.104.05", "driver_cuda_version": "12.2", "cuda_version": "12.6",
       "torch_version": "2.14.1+cu126"}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    grid = load_grid(cluster_check.GRID)
    trials = write_manifest(tmp_path, grid, grid.trials())
    (tmp_path / "trials").mkdir()
    for trial in trials:
        (tmp_path / "trials" / f"{trial.trial_id}.h5").touch()
    probe = cluster_check.probe_of(trials)
    assert probe.trial_id == "rot-nom-n14-channels32-s000"
    speed = throughput.speed("T4", "groups")
    estimate = throughput.trial_seconds(probe.settings, speed.rate) / probe.settings.epochs
    found = {"attrs": dict(GPU), "odd": {}, "seconds": estimate * 1.2}
    monkeypatch.setattr(cluster_check, "read_status",
                        lambda path: {**found["attrs"], **found["odd"].get(path.stem, {})})
    monkeypatch.setattr(cluster_check, "epoch_seconds", lambda path: found["seconds"])
    return tmp_path, found, estimate


def test_a_gpu_profile_that_ran_the_smoke_grid_gets_its_gpu_driver_and_speed(folder):
    out, found, estimate = folder
    result = cluster_check.verdict(out, load_profile("t4"))
    assert result.ok, result.lines
    text = "\n".join(result.lines)
    assert "smoke on profile t4: 23 of 23 trials complete" in text
    assert "CUDA: seen, every trial trained on it (cuda:0)" in text and "GPU: Tesla T4" in text
    assert "driver: driver 535.104.05 serves CUDA 12.2, this torch is built for CUDA 12.6: runs by CUDA's " \
           "minor-version compatibility (torch 2.14.1+cu126)" in text
    assert f"took {estimate * 1.2:.3g} s" in text and "1.20x the estimate, within the time limits' margin (x2)" in text
    assert result.lines[-1] == "verdict: profile t4 runs the pipeline on its GPUs"


def test_no_cuda_a_failed_trial_or_a_slow_gpu_fail_the_verdict_and_say_why(folder):
    out, found, _ = folder
    found["odd"] = {"cnn-skew-s000": {"device": "cpu"},
                    "stab-rot-s000": {"status": "failed", "last_error": "DeviceUnavailable: no CUDA device"}}
    found["seconds"] *= 10
    result = cluster_check.verdict(out, load_profile("t4"))
    text = "\n".join(result.lines)
    assert not result.ok and result.lines[-1] == "verdict: profile t4 does not run the pipeline yet (above)"
    assert "22 of 23 trials complete; not: stab-rot-s000: failed (DeviceUnavailable: no CUDA device)" in text
    assert "CUDA: not seen: 22 of 23 trials trained on it (cpu, cuda:0)" in text
    assert "beyond the time limits' margin (x2): tasks may run out of time; `make gpu-check` measures" in text
