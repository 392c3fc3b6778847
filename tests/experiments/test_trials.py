"""Trials of a grid: expansion, the trial file, resume after a kill, damaged files, determinism."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_same_results, read_arrays
from pipeline.cli import main
from pipeline.launch.grid import load_grid
from pipeline.run.execute import execute
from pipeline.run.faults import FAULT_VARIABLE, InjectedFault
from pipeline.settings import ConfigError
from pipeline.trialfile.files import open_h5, read_status
from pipeline.trialfile.manifest import select, write_manifest

ROOT = Path(__file__).resolve().parents[2]
RESUMABLE = ["n=10", "channels=4", "n_samples=200", "epochs=6", "lr=0.05", "groups=rot", "modes=aug",
             "augment=sampled:3", "seeds=1", "weights_every=2"]


def run(out, exp, index, sets=(), force=False, checkpoint_every=0.0):
    grid = load_grid(exp, dict(s.split("=", 1) for s in sets))
    trial = select(write_manifest(out, grid, grid.trials()), index)
    execute(out, [trial], force=force, checkpoint_every_s=checkpoint_every)
    return out / "trials" / f"{trial.trial_id}.h5"


def test_presets_expand_to_the_paper_grids():
    groups = [t.trial_id for t in load_grid("paper-groups").trials()]
    assert len(groups) == 480 == len(set(groups))  # Aug both as in the paper (sampled) and exact (orbit)
    assert groups[0] == "rot-equi-s000" and groups[-1] == "rototrans-nom-s029"
    assert {"rot-aug-sampled25-s000", "rot-aug-orbit-s029"} <= set(groups)
    cnn = [t.trial_id for t in load_grid("paper-cnn").trials()]
    assert len(cnn) == 180 == len(set(cnn)) and cnn[12] == "cnn-cross-s012" and cnn[42] == "cnn-cross-nom-s012"
    trial = load_grid("paper-groups").trials()[1].settings  # rot-aug-s001
    assert (trial.n, trial.channels, trial.n_samples, trial.epochs, trial.lr, trial.augment) == (
        14, 32, 10000, 50, 5e-5, "sampled:25")
    assert {t.settings.augment for t in load_grid("paper-groups-orbit").trials() if t.settings.mode == "aug"} == {"orbit"}
    c = load_grid("paper-cnn").trials()[0].settings
    assert (c.phase1_epochs, c.phase1_lr, c.phase1_batch, c.phase2_epochs, c.phase2_lr) == (250, 5e-4, 100, 50, 2.5e-4)


def test_demo_covers_every_group_mode_and_configuration():
    trials = load_grid("demo").trials()
    groups = [t for t in trials if t.experiment == "groups"]
    cnn = [t for t in trials if t.experiment == "cnn"]
    for g in ("rot", "trans", "trans1d", "rototrans"):
        for m in ("equi", "aug", "nom"):
            assert len([t for t in groups if t.settings.group == g and t.settings.mode == m]) >= 3
    for c in ("cross", "skew", "nonunitary"):
        assert len([t for t in cnn if t.settings.variant == c]) >= 2


def test_plan_reports_ids_storage_and_compute(capsys):
    assert main(["plan", "--exp", "paper-groups", "--trials"]) == 0
    out = capsys.readouterr().out
    assert "480 trials" in out and "rot-equi-s000" in out and "rototrans-nom-s029" in out
    assert "per-epoch snapshots (weights_every=1) would need 3.99 TB" in out
    assert "weights_every=10 -> epochs 0, 10, 20, 30, 40, 50" in out
    assert "TFLOP" in out or "PFLOP" in out


def test_overrides_apply_and_bad_ones_fail_before_anything_runs(tmp_path, capsys):
    grid = load_grid("smoke", {"groups": "rot,trans", "modes": "nom", "seeds": "0-2", "epochs": "3",
                               "augment": "orbit", "dtype": "float64", "cnn.phase2_epochs": "4"})
    trials = grid.trials()
    assert [t.trial_id for t in trials][:6] == ["rot-nom-s000", "rot-nom-s001", "rot-nom-s002",
                                                "trans-nom-s000", "trans-nom-s001", "trans-nom-s002"]
    assert {t.settings.dtype for t in trials} == {"float64"}
    assert {t.settings.phase2_epochs for t in trials if t.experiment == "cnn"} == {4}
    for sets, message in [
        (["colour=red"], "unknown key 'colour' for grid smoke; accepted:"),
        (["groups=rot,mirror"], "unknown group 'mirror' in groups; accepted: rot, trans, trans1d, rototrans"),
        (["modes=fast"], "unknown mode 'fast' in modes; accepted: equi, aug, nom"),
        (["configs=diag"], "unknown variant 'diag' in configs; accepted: cross, skew, nonunitary"),
        (["augment=some"], "unknown augment 'some'; accepted: orbit, sampled:P"),
        (["lr=fast"], "bad value 'fast' for lr: expected float"),
        (["seeds=-1"], "bad value '-1' for seeds"),
        (["dtype=half"], "unknown dtype 'half'; accepted: float32, float64"),
        (["device=tpu"], "unknown device 'tpu'; accepted: auto, cpu, cuda, cuda:N"),
        (["mlp.epochs=1"], "unknown section 'mlp' in override 'mlp.epochs'"),
    ]:
        argv = ["run-trial", "--exp", "smoke", "--index", "0", "--out", str(tmp_path / "never")]
        for s in sets:
            argv += ["--set", s]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (sets, err)
    assert not (tmp_path / "never").exists()


def test_smoke_trial_file_schema(tmp_path):
    path = run(tmp_path, "smoke", 13)  # cnn-skew-s000
    with open_h5(path) as f:
        attrs = dict(f.attrs)
        for key in ("trial_id", "index", "experiment", "mode", "cell", "variant", "seed", "status", "epochs_done",
                    "settings", "git_commit", "torch_version", "numpy_version", "h5py_version", "hostname",
                    "device", "started_at", "finished_at", "wall_seconds"):
            assert key in attrs, key
        assert (attrs["trial_id"], attrs["index"], attrs["experiment"], attrs["status"]) == (
            "cnn-skew-s000", 13, "cnn", "complete")
        assert json.loads(attrs["settings"])["variant"] == "skew" and attrs["cell"] == "skew"
        assert attrs["finished_at"].endswith("+00:00") and attrs["wall_seconds"] > 0
        E = attrs["total_epochs"]
        for name in ("epoch", "loss", "accuracy", "seconds", "phase"):
            assert f[f"metrics/{name}"].shape == (E + 1,)
        for name in ("dist_E", "dist_init", "norm"):
            assert f[f"metrics/{name}"].shape == (E + 1, 4)
        assert list(f["metrics/dist_E"].attrs["layer_names"]) == [b"conv1", b"conv2", b"conv3", b"head"] or \
            list(f["metrics/dist_E"].attrs["layer_names"]) == ["conv1", "conv2", "conv3", "head"]
        assert list(f["metrics/phase"][()]) == [1, 1, 2]
        assert f["steps/dist_E"].shape[1] == 4 and f["steps/dist_E"].shape[0] >= 1
        assert list(f["weights/epochs"][()]) == [0, 1, 2]
        assert f["weights/conv2"].shape == (3, 3, 2, 3, 3)
    groups = run(tmp_path, "smoke", 0)  # rot-equi-s000
    with open_h5(groups) as f:
        assert f.attrs["group"] == "rot" and f.attrs["mode"] == "equi"
        assert f["weights/A1"].shape == (3, 2, 2, 36, 36) and "phase" not in f["metrics"]
    assert sorted(p.name for p in (tmp_path / "trials").iterdir()) == ["cnn-skew-s000.h5", "rot-equi-s000.h5"]


def test_complete_trials_are_skipped_unless_forced(tmp_path, capsys):
    path = run(tmp_path, "smoke", 1)
    before = path.read_bytes()
    run(tmp_path, "smoke", 1)
    assert path.read_bytes() == before
    assert "already complete; skipped" in capsys.readouterr().out
    run(tmp_path, "smoke", 1, force=True)
    with open_h5(path) as f:
        assert f.attrs["status"] == "complete"


def test_same_seed_same_metrics_on_rerun(tmp_path):
    a = run(tmp_path / "a", "smoke", 4)
    b = run(tmp_path / "b", "smoke", 4)
    assert_same_results(a, b)


def test_a_trial_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    reference = run(tmp_path / "reference", "smoke", 0, RESUMABLE)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "pipeline", "run-trial", "--exp", "smoke", "--index", "0", "--out", str(out),
            "--checkpoint-every", "0"] + [a for s in RESUMABLE for a in ("--set", s)]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = out / "trials" / "rot-aug-s000.h5"
    deadline = time.time() + 120
    while time.time() < deadline:
        if path.exists() and read_status(path).get("epochs_done", -1) >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    status = read_status(path)
    assert status["status"] in ("running", "damaged")
    if status["status"] == "running":
        assert 2 <= status["epochs_done"] < 6
    run(tmp_path / "killed", "smoke", 0, RESUMABLE)
    assert read_status(path)["status"] == "complete"
    assert_same_results(reference, path)
    assert not (out / "trials" / "rot-aug-s000.state.pt").exists()


def test_failure_records_the_error_and_a_rerun_resumes_after_the_last_epoch(tmp_path, monkeypatch):
    reference = run(tmp_path / "reference", "smoke", 0, RESUMABLE)
    monkeypatch.setenv(FAULT_VARIABLE, "rot-aug-s000@4")
    with pytest.raises(InjectedFault):
        run(tmp_path / "faulty", "smoke", 0, RESUMABLE)
    path = tmp_path / "faulty" / "trials" / "rot-aug-s000.h5"
    status = read_status(path)
    assert status["status"] == "failed" and status["epochs_done"] == 3
    assert "injected fault in rot-aug-s000 at epoch 4" in status["last_error"]
    monkeypatch.delenv(FAULT_VARIABLE)
    run(tmp_path / "faulty", "smoke", 0, RESUMABLE)
    final = read_status(path)
    assert final["status"] == "complete" and final["attempts"] == 2
    assert_same_results(reference, path)


def test_rows_written_after_the_checkpoint_are_recomputed(tmp_path, monkeypatch):
    """A kill between the file's append and the checkpoint's write leaves the file ahead of the state."""
    reference = run(tmp_path / "reference", "smoke", 0, RESUMABLE)
    out = tmp_path / "lagging"
    monkeypatch.setenv(FAULT_VARIABLE, "rot-aug-s000@3")
    with pytest.raises(InjectedFault):
        run(out, "smoke", 0, RESUMABLE)
    state = out / "trials" / "rot-aug-s000.state.pt"
    old_state = state.read_bytes()  # the state after epoch 2
    monkeypatch.setenv(FAULT_VARIABLE, "rot-aug-s000@5")
    with pytest.raises(InjectedFault):
        run(out, "smoke", 0, RESUMABLE)
    state.write_bytes(old_state)
    monkeypatch.delenv(FAULT_VARIABLE)
    run(out, "smoke", 0, RESUMABLE)
    assert_same_results(reference, out / "trials" / "rot-aug-s000.h5")


def test_a_truncated_file_is_kept_aside_and_the_trial_restarts(tmp_path, capsys):
    path = run(tmp_path, "smoke", 2)
    reference = read_arrays(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    assert read_status(path)["status"] == "damaged"
    run(tmp_path, "smoke", 2)
    kept = [p for p in (tmp_path / "trials").iterdir() if ".damaged-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == data[: len(data) // 3]
    assert "unreadable file" in capsys.readouterr().out
    after = read_arrays(path)
    assert all(np.array_equal(reference[k], after[k], equal_nan=True) for k in reference)


def test_a_different_grid_in_the_same_folder_is_refused(tmp_path):
    run(tmp_path, "smoke", 0)
    with pytest.raises(ConfigError, match=r"rot-equi-s000 exists in this folder with other settings \(epochs=2 there, 5 in"):
        run(tmp_path, "smoke", 0, ["epochs=5"])


def test_seed_packed_cnn_trials_each_write_their_own_complete_file(tmp_path):
    sets = {"groups.seeds": "1", "cnn.seeds": "3", "configs": "skew", "dtype": "float64"}
    grid = load_grid("smoke", sets)
    trials = grid.trials()
    write_manifest(tmp_path / "packed", grid, trials)
    write_manifest(tmp_path / "single", grid, trials)
    cnn = [t for t in trials if t.experiment == "cnn"]
    assert len(cnn) == 3
    outcomes = execute(tmp_path / "packed", cnn, checkpoint_every_s=0)
    assert outcomes == {t.trial_id: "ran" for t in cnn}
    for trial in cnn:
        execute(tmp_path / "single", [trial])
        packed = read_arrays(tmp_path / "packed" / "trials" / f"{trial.trial_id}.h5")
        single = read_arrays(tmp_path / "single" / "trials" / f"{trial.trial_id}.h5")
        assert sorted(packed) == sorted(single)
        for name in packed:
            assert np.allclose(packed[name], single[name], rtol=1e-10, atol=1e-12, equal_nan=True), name
        status = read_status(tmp_path / "packed" / "trials" / f"{trial.trial_id}.h5")
        assert status["status"] == "complete" and status["pack_size"] == 3
    assert execute(tmp_path / "packed", cnn) == {t.trial_id: "complete" for t in cnn}


def test_the_cost_model_knows_every_group_order():
    from pipeline.core.pixel_groups import get_group
    from pipeline.experiments import get
    from pipeline.experiments.groups import GROUP_NAMES

    for name in GROUP_NAMES:
        trial = load_grid("smoke", {"groups": name}).trials()[0].settings
        assert get("groups").group_order(trial) == len(get_group(name, trial.n))


def test_growing_a_grid_runs_only_the_new_trials_and_a_changed_one_is_refused(tmp_path):
    """More seeds, or another value of an axis, into a folder that holds a grid: the trials that ran keep
    their files and indices, only the new ones run; a setting that would change a trial that ran is one line
    naming it, and leaves the folder as it was."""
    out = tmp_path / "grown"
    base = ["groups=rot", "modes=aug", "seeds=1", "epochs=2", "configs=cross", "cnn.seeds=1"]

    def submit(values):
        return subprocess.run([sys.executable, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(out),
                               "--wait", *[a for v in values for a in ("--set", v)]],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)

    assert submit(base).returncode == 0
    first = {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("*.h5")}
    assert sorted(first) == ["cnn-cross-s000.h5", "rot-aug-s000.h5"]
    manifest = json.loads((out / "manifest.json").read_text())
    indices = {t["trial_id"]: t["index"] for t in manifest["trials"]}

    grown = submit([v for v in base if not v.startswith("seeds=")] + ["groups.seeds=2", "augment=sampled:2,orbit"])
    assert grown.returncode == 0, grown.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "trials").glob("*.h5")}
    # The trial that ran keeps its id and its file (augment=sampled:2 is the smoke grid's own value); the new
    # trials are named with the swept setting.
    assert after["rot-aug-s000.h5"] == first["rot-aug-s000.h5"]
    assert after["cnn-cross-s000.h5"] == first["cnn-cross-s000.h5"]
    assert set(after) - set(first) == {"rot-aug-sampled2-s001.h5", "rot-aug-orbit-s000.h5", "rot-aug-orbit-s001.h5"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert {t["trial_id"]: t["index"] for t in manifest["trials"] if t["trial_id"] in indices} == indices
    assert all(read_status(out / "trials" / name)["attempts"] == 1 for name in after)

    before = (out / "manifest.json").read_bytes()
    changed = submit([v for v in base if not v.startswith("epochs=")] + ["epochs=3"])
    assert changed.returncode == 2 and changed.stderr.count("\n") == 1
    assert "rot-aug-s000 exists in this folder with other settings (epochs=2 there, 3 in" in changed.stderr
    assert (out / "manifest.json").read_bytes() == before
