"""The trackers researchers use: W&B runs (offline) beside TensorBoard through one sink interface, a trial
resumed without its sink saying so, the tables as Parquet, and a trial's settings, model, data and evaluation
from its file in one call (pipeline.load_trial)."""

import json
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pipeline
from helpers import ROOT
from pipeline.cli import main
from pipeline.run.faults import FAULT_VARIABLE
from pipeline.run.wandb_sink import cell_group, run_id
from pipeline.trialfile.files import CURVE_GAPS_ATTR as GAPS_ATTR
from pipeline.trialfile.files import open_h5, read_status

TINY = ["--set", "groups=rot", "--set", "modes=nom,aug", "--set", "cnn.seeds=1", "--set", "configs=cross"]


def wandb_records(path):
    """The records of an offline W&B run file (``run-<id>.wandb``), parsed with W&B's own protobuf definitions.
    W&B 0.31 writes the file from its Go core and ships no Python reader of it; its framing is LevelDB's log
    format under a 7-byte header (":W&B", magic 0xBEE1, version): 32 KiB blocks of records, each with a
    checksum, a length and a kind (full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        body = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = body if kind == 2 else pending + body
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(folder, trial_id, out):
    """(config, group, {key: {step: value}}) of a trial's offline run."""
    (path,) = (folder / "wandb").glob(f"offline-run-*-{run_id(trial_id, out)}/run-*.wandb")
    config, group, history = {}, "", {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            group = record.run.run_group
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, {})[int(items["_step"])] = value
    return config, group, history


def test_wandb_offline_writes_a_run_per_trial_whose_history_is_the_trial_files_series(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["submit", "--exp", "smoke", "--out", str(out), "--wandb", *TINY]) == 0
    assert "W&B runs (offline unless WANDB_MODE says otherwise)" in capsys.readouterr().out
    trials = ["rot-aug-s000", "rot-nom-s000", "cnn-cross-s000"]
    assert len(list((out / "wandb" / "wandb").glob("offline-run-*"))) == len(trials)
    for trial_id in trials:
        config, group, history = wandb_run(out / "wandb", trial_id, out)
        attrs = read_status(out / "trials" / f"{trial_id}.h5")
        assert group == cell_group(trial_id) == trial_id.rsplit("-s", 1)[0]
        settings = json.loads(attrs["settings"])
        assert config["trial_id"] == trial_id and {k: config[k] for k in settings} == settings
        with open_h5(out / "trials" / f"{trial_id}.h5") as f:
            metrics = {name: f["metrics"][name][()] for name in f["metrics"]}
            layers = [n.decode() if isinstance(n, bytes) else n for n in f["metrics"]["dist_E"].attrs["layer_names"]]
        epochs = list(range(len(metrics["loss"])))
        for name in ("loss", "accuracy"):
            assert history[name] == {e: float(metrics[name][e]) for e in epochs}, (trial_id, name)
        assert history["grad_norm"] == {e: float(metrics["grad_norm"][e]) for e in epochs[1:]}  # NaN at row 0
        for series, tag in (("dist_E", "dist_E"), ("dist_init", "travelled"), ("step_perp", "step_perp")):
            for j, layer in enumerate(layers):
                assert history[f"{tag}/{layer}"] == {e: float(metrics[series][e][j]) for e in epochs}
            totals = np.sqrt((metrics[series] ** 2).sum(axis=1))
            assert np.allclose([history[f"{tag}/total"][e] for e in epochs], totals, rtol=1e-12, atol=0)


def test_a_trial_resumed_without_its_tensorboard_says_so_in_its_log_and_status(tmp_path):
    """A trial interrupted with --tensorboard and resumed without it: its curves end where it resumed, its
    log says so, its file keeps it and status shows it once the trial is complete."""
    out = tmp_path / "out"
    run = [sys.executable, "-m", "pipeline", "run-trial", "--exp", "smoke", "--trial", "rot-nom-s000", "--out",
           str(out), "--checkpoint-every", "0", "--set", "epochs=6", "--set", "groups=rot", "--set", "modes=nom",
           "--set", "configs=cross"]
    failed = subprocess.run([*run, "--tensorboard"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, FAULT_VARIABLE: "rot-nom-s000@4"})
    assert failed.returncode != 0
    assert subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=300).returncode == 0
    log = (out / "logs" / "rot-nom-s000.log").read_text()
    assert "resumed after epoch 3 without --tensorboard, which an earlier attempt had: its tensorboard curves end there" \
        in log
    assert json.loads(read_status(out / "trials" / "rot-nom-s000.h5")[GAPS_ATTR]) == {"tensorboard": 3}
    status = subprocess.run([sys.executable, "-m", "pipeline", "status", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120).stdout
    assert "complete     6/6 epochs on cpu; TensorBoard curves end at epoch 3 (an attempt ran without --tensorboard)" \
        in status


def test_tables_are_also_parquet_and_a_trial_loads_whole_from_its_file(tmp_path):
    out = tmp_path / "out"
    assert main(["submit", "--exp", "smoke", "--out", str(out), *TINY]) == 0
    assert main(["aggregate", "--out", str(out)]) == 0
    aggregate = out / "aggregate"
    for name in ("epochs", "trials", "summary"):
        csv, parquet = pd.read_csv(aggregate / f"{name}.csv"), pd.read_parquet(aggregate / f"{name}.parquet")
        assert list(parquet.columns) == list(csv.columns) and len(parquet) == len(csv)
    epochs = pd.read_parquet(aggregate / "epochs.parquet")
    assert epochs["dist_E"].dtype == float and np.allclose(epochs["dist_E"], pd.read_csv(aggregate / "epochs.csv")["dist_E"])
    for trial_id in ("rot-nom-s000", "cnn-cross-s000"):
        trial = pipeline.load_trial(out / "trials" / f"{trial_id}.h5")
        assert trial.trial_id == trial_id and trial.settings.n_samples == len(trial.data)
        measured = trial.evaluate()
        assert measured["loss"] == pytest.approx(measured["recorded_loss"], rel=1e-6)
        assert measured["accuracy"] == pytest.approx(measured["recorded_accuracy"])
    start = pipeline.load_trial(out / "trials" / "rot-nom-s000.h5", snapshot=0)
    assert start.epoch == 0 and start.evaluate()["recorded_loss"] != trial.evaluate()["recorded_loss"]
