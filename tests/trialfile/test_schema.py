"""The trial file's schema (pipeline/schema.py) is what the writer writes, the readers read and the README says,
and the step off E (step_perp) it carries is the quantity it names."""

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import read_results
from pipeline import experiments, schema
from pipeline.cli import main
from pipeline.experiments import make_trial
from pipeline.run.runner import CollectingSink, run_trial
from pipeline.trialfile.files import open_h5

ROOT = Path(__file__).resolve().parents[2]
TINY_GROUPS = ["--epochs", "3", "--n-samples", "32", "--channels", "2", "--set", "n=6", "--lr", "0.1"]


def test_the_readmes_table_of_the_trial_file_is_the_schema():
    documented = schema.readme_section((ROOT / "README.md").read_text())
    assert documented is not None, "README.md has no schema table"
    assert documented == schema.readme_table(), "README.md's table differs from pipeline/schema.py: run " \
                                                "python -m pipeline.schema"
    for series in schema.EPOCH_SERIES:
        assert f"`metrics/{series.name}`" in documented


@pytest.mark.parametrize("argv,multi_phase", [
    (["--group", "rot", "--mode", "nom", *TINY_GROUPS], False),
    (["--experiment", "cnn", "--variant", "skew", "--n-samples", "32", "--set", "cnn_channels=2,3,3",
      "--set", "phase1_epochs=1", "--set", "phase2_epochs=1", "--set", "phase1_lr=0.05", "--set", "phase2_lr=0.05"],
     True),
])
def test_a_trial_file_holds_exactly_the_declared_series_and_the_epochs_table_shows_them(tmp_path, argv, multi_phase):
    out = tmp_path / "out"
    assert main(["train", *argv, "--out", str(out)]) == 0
    (path,) = (out / "trials").glob("*.h5")
    with open_h5(path) as f:
        metrics = f[schema.METRICS]
        assert set(metrics) == {s.name for s in schema.series_of(multi_phase)}
        rows = metrics[schema.ROW_EPOCH].shape[0]
        layers = len(metrics["dist_E"].attrs[schema.LAYER_NAMES_ATTR])
        for series in schema.series_of(multi_phase):
            dataset = metrics[series.name]
            assert dataset.dtype == np.dtype(series.numpy_dtype()), series.name
            assert dataset.shape == ((rows, layers) if series.per_layer else (rows,)), series.name
        assert f.attrs["schema_version"] == schema.SCHEMA_VERSION
    epochs = read_results(out).epochs
    shown = [s.name for s in schema.EPOCH_SERIES if s.in_epochs_table]
    assert set(shown) <= set(epochs.columns) and "seconds" not in epochs.columns
    assert epochs["step_perp"].notna().all()


def test_a_file_of_an_older_schema_reads_with_its_missing_series_unknown(tmp_path):
    out = tmp_path / "out"
    assert main(["train", "--group", "rot", "--mode", "nom", *TINY_GROUPS, "--out", str(out)]) == 0
    (path,) = (out / "trials").glob("*.h5")
    with open_h5(path, "a") as f:
        del f["metrics/step_perp"]
        f.attrs["schema_version"] = 3
    results = read_results(out)
    assert results.trials["status"].tolist() == ["complete"]  # a file without the series is not damaged
    assert results.epochs["step_perp"].isna().all() and results.epochs["dist_E"].notna().all()


def test_step_perp_is_the_part_off_E_of_each_epochs_step():
    """Recomputed from the weights of consecutive epochs: ‖Π_⊥(A_e − A_(e−1))‖ per layer, 0 at row 0, round-off for
    Equi (projected steps), and for Nom the whole of dist_E's first step (it starts in E)."""
    for mode in ("nom", "equi"):
        trial = make_trial("groups", {"group": "rot", "mode": mode, "epochs": "3", "n_samples": "32", "channels": "2",
                                      "n": "6", "lr": "0.1", "dtype": "float64"})
        sink = CollectingSink()
        run_trial(trial, sink)
        model = experiments.of(trial).build_model(trial.settings)
        assert torch.equal(sink.records[0].step_perp, torch.zeros(3))
        for e in range(1, len(sink.records)):
            recomputed = torch.stack([model.layer_dist(name, sink.weights[e][name] - sink.weights[e - 1][name])
                                      for name in model.layer_weights()])
            assert torch.allclose(sink.records[e].step_perp, recomputed, rtol=1e-12, atol=1e-300), (mode, e)
        if mode == "nom":
            assert torch.allclose(sink.records[1].step_perp, sink.records[1].dist_E, rtol=1e-12)
            assert float(sink.records[1].step_perp.norm()) > 1e-3
        else:
            norm = float(sink.records[-1].norm.norm())
            assert all(float(r.step_perp.norm()) <= 1e-12 * norm for r in sink.records)


def test_the_console_line_names_every_series_that_has_a_label():
    trial = make_trial("groups", {"group": "rot", "mode": "nom", "epochs": "1", "n_samples": "32", "channels": "2",
                                  "n": "6", "lr": "0.1"})
    lines: list[str] = []
    run_trial(trial, CollectingSink(log=lines.append))
    rows = [line for line in lines if line.startswith("epoch")]
    assert len(rows) == 2
    for series in schema.EPOCH_SERIES:
        if series.console:
            assert all(f" {series.console} " in row for row in rows), series.name
