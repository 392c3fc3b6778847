"""Whole models in trial files: every snapshot holds every parameter, and ``pipeline.load_model`` rebuilds the
trial's model from its file alone, at any stored epoch, for every experiment."""

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import analysis
from helpers import assert_same_results
from pipeline import experiments, load_model
from pipeline.core import numerics
from pipeline.core.models.base import MeasuredModel
from pipeline.core.training import evaluate
from pipeline.experiments import make_trial
from pipeline.launch.grid import load_grid
from pipeline.run.execute import execute
from pipeline.run.faults import FAULT_VARIABLE, InjectedFault
from pipeline.run.runner import run_trial
from pipeline.trialfile.files import SnapshotError, open_h5
from pipeline.trialfile.manifest import write_manifest
from pipeline.trialfile.store import TrialFile

SMALL_G = {"n": "6", "channels": "3", "n_samples": "48", "epochs": "3", "lr": "0.05", "aug_batch": "8",
           "device": "cpu"}
SGD = {**SMALL_G, "optimizer": "sgd", "batch_size": "16", "lr": "0.1"}
SMALL_CNN = {"cnn_channels": "2,3,3", "n_samples": "48", "phase1_epochs": "2", "phase1_lr": "0.05",
             "phase1_batch": "16", "phase2_epochs": "2", "phase2_lr": "0.05", "device": "cpu"}
SMALL_S = {"n": "4", "channels": "3", "cnn_channels": "2,3,3", "n_samples": "48", "max_iterations": "20",
           "block": "10", "newton_iterations": "5", "hessian_budget": "200", "check_steps": "8", "dense_limit": "300",
           "eigenpairs": "2", "lanczos_steps": "6", "perturbation_steps": "3", "device": "cpu"}

CASES = {
    "groups rot equi": ("groups", {**SMALL_G, "group": "rot", "mode": "equi"}),
    "groups rot aug sampled": ("groups", {**SMALL_G, "group": "rot", "mode": "aug", "augment": "sampled:2"}),
    "groups rot aug orbit": ("groups", {**SMALL_G, "group": "rot", "mode": "aug", "augment": "orbit"}),
    "groups rot nom": ("groups", {**SMALL_G, "group": "rot", "mode": "nom"}),
    "groups trans1d nom float64": ("groups", {**SMALL_G, "group": "trans1d", "mode": "nom", "dtype": "float64"}),
    "groups sgd equi": ("groups", {**SGD, "group": "rot", "mode": "equi"}),
    "groups sgd aug sampled": ("groups", {**SGD, "group": "rot", "mode": "aug", "augment": "sampled:1"}),
    "groups sgd aug orbit": ("groups", {**SGD, "group": "rot", "mode": "aug", "augment": "orbit"}),
    "groups sgd nom": ("groups", {**SGD, "group": "trans", "mode": "nom"}),
    "cnn cross": ("cnn", {**SMALL_CNN, "variant": "cross"}),
    "cnn skew nom": ("cnn", {**SMALL_CNN, "variant": "skew", "phase2_mode": "nom"}),
    "cnn nonunitary float64": ("cnn", {**SMALL_CNN, "variant": "nonunitary", "dtype": "float64"}),
    "stability rot": ("stability", {**SMALL_S, "network": "rot"}),
    "stability cnn-cross": ("stability", {**SMALL_S, "network": "cnn-cross"}),
    "stability rot weight decay": ("stability", {**SMALL_S, "network": "rot", "weight_decay": "0.01"}),
    "stability toy-z2": ("stability", {"network": "toy-z2", "max_iterations": "20", "block": "5",
                                       "newton_iterations": "2"}),
}
# Reloaded and recorded losses come from the same parameters through the same arithmetic, up to the order of
# sums (the loss of an epoch can come from its gradient pass); "to round-off" in each dtype.
RTOL = {"float32": 1e-5, "float64": 1e-12}


class RecordingFile(TrialFile):
    """The trial file, plus a copy of the live parameters at every epoch (to compare the reloaded ones with)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.live = {}

    def write_epoch(self, record, model, checkpoint):
        super().write_epoch(record, model, checkpoint)
        self.live[record.epoch] = (record.phase, {k: v.detach().clone() for k, v in model.named_parameters()})


def run_recorded(out, experiment, values):
    trial = make_trial(experiment, values)
    sink = RecordingFile(out, trial, log=lambda line: None)
    assert sink.prepare() == "fresh"
    run_trial(trial, sink)
    return trial, sink


def recorded_loss(trial, model, data):
    """The loss as the file records it: for Experiment S that is R with its weight decay (λ/2)‖θ‖²."""
    experiment = experiments.of(trial)
    loss = evaluate(model, data, experiment.evaluation_loss(trial.settings), trial.settings.chunk_size)[0]
    decay = getattr(trial.settings, "weight_decay", 0.0)
    return loss + 0.5 * decay * sum(float((p.detach() ** 2).sum()) for p in model.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_a_reloaded_snapshot_is_the_live_model_and_reproduces_its_recorded_loss(tmp_path, case):
    experiment_name, values = CASES[case]
    trial, sink = run_recorded(tmp_path, experiment_name, {**values, "weights_every": "1"})
    experiment, settings = experiments.get(experiment_name), trial.settings
    data = experiment.load_data(settings, torch.device("cpu"), numerics.resolve_dtype(settings.dtype))
    with open_h5(sink.path) as f:
        epochs = list(f["weights/epochs"][()])
        phases = list(f["weights/phase"][()])
        losses = f["metrics/loss"][()]
    assert epochs == sorted(sink.live) and len(epochs) >= 2  # every epoch, with weights_every=1
    for k, epoch in enumerate(epochs):
        phase, live = sink.live[epoch]
        model = load_model(sink.path, k)
        assert phases[k] == phase
        reloaded = dict(model.named_parameters())
        assert sorted(reloaded) == sorted(live)
        for name, value in live.items():
            assert reloaded[name].dtype == value.dtype and torch.equal(reloaded[name], value), (epoch, name)
        assert np.isclose(recorded_loss(trial, model, data), losses[epoch], rtol=RTOL[settings.dtype], atol=0)
        assert load_model(sink.path, epoch=epoch) is not model  # the same snapshot, named by its epoch
    if experiment_name == "cnn":  # each phase's snapshots rebuild the model that phase trained
        parametrizations = [load_model(sink.path, k).parametrization for k in range(len(epochs))]
        free = "unitary" if values["variant"] != "nonunitary" else "nonunitary"
        assert parametrizations == ["equivariant" if p == 1 else free for p in phases] and 2 in phases
    if experiment_name == "stability":  # the last snapshot is A*: the point the measurements were made at
        with open_h5(sink.path) as f:
            assert epochs[-1] == len(losses) - 1 and f["results"].attrs["dimension"] > 0
        star = load_model(sink.path)
        assert all(torch.equal(p, sink.live[epochs[-1]][1][n]) for n, p in star.named_parameters())


def test_seeds_trained_packed_reload_each_to_its_own_loss(tmp_path):
    grid = load_grid("smoke", {"groups.seeds": "1", "cnn.seeds": "2", "configs": "cross", "dtype": "float64"})
    trials = [t for t in write_manifest(tmp_path, grid, grid.trials()) if t.experiment == "cnn"]
    execute(tmp_path, trials)
    settings = trials[0].settings
    data = experiments.of(trials[0]).load_data(settings, torch.device("cpu"), torch.float64)
    for trial in trials:
        path = tmp_path / "trials" / f"{trial.trial_id}.h5"
        with open_h5(path) as f:
            assert f.attrs["pack_size"] == 2
            losses, epochs = f["metrics/loss"][()], f["weights/epochs"][()]
        for k, epoch in enumerate(epochs):
            assert np.isclose(recorded_loss(trial, load_model(path, k), data), losses[epoch], rtol=1e-12, atol=0)


def test_a_resumed_trial_stores_the_same_snapshots_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """Truncation after a failure keeps each phase's parameters in step with weights/epochs."""
    grid_sets = {"groups.seeds": "1", "configs": "nonunitary", "cnn.phase1_epochs": "2", "cnn.phase2_epochs": "3",
                 "weights_every": "1"}

    def run(out):
        grid = load_grid("smoke", grid_sets)
        trial = [t for t in write_manifest(out, grid, grid.trials()) if t.experiment == "cnn"][0]
        execute(out, [trial], checkpoint_every_s=0)
        return out / "trials" / f"{trial.trial_id}.h5"

    reference = run(tmp_path / "reference")
    monkeypatch.setenv(FAULT_VARIABLE, "cnn-nonunitary-s000@5")
    with pytest.raises(InjectedFault):
        run(tmp_path / "faulty")
    monkeypatch.delenv(FAULT_VARIABLE)
    path = run(tmp_path / "faulty")
    assert_same_results(reference, path)
    with open_h5(path) as f:
        assert list(f["weights/phase"][()]) == [1, 1, 1, 2, 2, 2] and len(f["weights/phase2/convs.0.coefficients"]) == 3


def downgrade_to_schema_2(path):
    """Rewrite a trial file as schema 2 wrote it: the measured layers' snapshots only."""
    with h5py.File(path, "a", locking=False) as f:
        weights = f["weights"]
        for name in [n for n in weights if n.startswith("phase")]:
            del weights[name]
        del weights.attrs["layer_names"]
        f.attrs["schema_version"] = 2


def test_a_file_of_schema_2_is_read_by_the_analysis_and_refused_by_load_model_in_one_line(tmp_path):
    grid = load_grid("smoke", {"groups": "rot", "modes": "nom", "configs": "cross"})
    trials = write_manifest(tmp_path, grid, grid.trials())
    for trial in trials:
        execute(tmp_path, [trial])
    before = analysis.load(tmp_path)
    for trial in trials:
        downgrade_to_schema_2(tmp_path / "trials" / f"{trial.trial_id}.h5")
    after = analysis.load(tmp_path)
    assert len(after) == len(before) > 0 and after["dist_E"].equals(before["dist_E"])
    for trial in trials:
        with pytest.raises(SnapshotError) as raised:
            load_model(tmp_path / "trials" / f"{trial.trial_id}.h5")
        message = str(raised.value)
        assert "schema_version 2 predates whole-model snapshots" in message and "\n" not in message


def test_load_model_names_what_it_cannot_give(tmp_path):
    trial, sink = run_recorded(tmp_path, "groups", {**SMALL_G, "group": "rot", "mode": "nom", "weights_every": "0"})
    for call, words in [(lambda: load_model(sink.path, 2), "snapshot 2 out of range: 2 stored"),
                        (lambda: load_model(sink.path, epoch=1), "no snapshot of epoch 1; stored epochs: 0, 3"),
                        (lambda: load_model(tmp_path / "nothing.h5"), "unreadable trial file")]:
        with pytest.raises(SnapshotError, match=words) as raised:
            call()
        assert "\n" not in str(raised.value)
    assert load_model(sink.path, -2).head.weight.shape == (10, 3)


def test_an_unfinished_file_of_schema_2_restarts_rather_than_mixing_layouts(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_VARIABLE, "rot-nom-s000@2")
    grid = load_grid("smoke", {"groups": "rot", "modes": "nom", "cnn.seeds": "1", "configs": "cross"})
    trial = write_manifest(tmp_path, grid, grid.trials())[0]
    with pytest.raises(InjectedFault):
        execute(tmp_path, [trial], checkpoint_every_s=0)
    path = tmp_path / "trials" / "rot-nom-s000.h5"
    downgrade_to_schema_2(path)
    monkeypatch.delenv(FAULT_VARIABLE)
    lines = []
    store = TrialFile(tmp_path, trial, log=lines.append)
    assert store.prepare() == "fresh" and not path.exists()
    assert any("schema 2" in line and "restarting from scratch" in line for line in lines)


class Toy(MeasuredModel):
    """A model whose parameters are its measured layers (like Experiment S's small controls), and one more."""

    def __init__(self, extra: bool = False):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([0.5]))
        self.w = nn.Parameter(torch.tensor([1.0, -2.0]))
        if extra:
            self.bias = nn.Parameter(torch.zeros(3))

    def layer_weights(self):
        return {"a": self.a, "w": self.w}


def test_a_model_whose_parameters_are_its_layers_snapshots_without_code_of_its_own():
    toy = Toy()
    assert toy.layer_parameters() == {"a": "a", "w": "w"}
    assert toy.snapshot_names() == (["a", "w"], [])
    snapshot = toy.snapshot()
    other = Toy()
    with torch.no_grad():
        other.w.mul_(3)
    other.load_snapshot(snapshot)
    assert torch.equal(other.w, toy.w) and torch.equal(other.a, toy.a)
    extended = Toy(extra=True)
    assert extended.snapshot_names() == (["a", "w"], ["bias"]) and set(extended.snapshot()) == {"a", "w", "bias"}


def test_load_snapshot_is_strict_about_names_and_shapes():
    toy = Toy(extra=True)
    snapshot = toy.snapshot()
    for broken, words in [({k: v for k, v in snapshot.items() if k != "bias"}, "missing bias"),
                          ({**snapshot, "gamma": torch.zeros(1)}, "unexpected gamma"),
                          ({**snapshot, "w": torch.zeros(3)}, r"w has shape \(3,\), expected \(2,\)")]:
        with pytest.raises(ValueError, match=words):
            toy.load_snapshot(broken)


def test_the_experiment_g_snapshot_adds_only_the_head_to_the_layers_it_stored_before():
    model = experiments.get("groups").build_model(make_trial("groups", SMALL_G).settings)
    layers, others = model.snapshot_names()
    assert layers == ["A0", "A1", "A2"] and others == ["head.weight"]  # A0-A2 are stored once, in weight space
    assert model.layer_parameters() == {"A0": "A0.weight", "A1": "A1.weight", "A2": "A2.weight"}


@pytest.mark.parametrize("experiment_name, values", [
    ("groups", SMALL_G), ("groups", {**SMALL_G, "group": "rototrans", "channels": "5"}),
    ("cnn", {**SMALL_CNN, "variant": "cross"}), ("cnn", {**SMALL_CNN, "variant": "skew", "image_size": "20"}),
    ("cnn", {**SMALL_CNN, "variant": "nonunitary"}),
    ("stability", {**SMALL_S, "network": "trans"}), ("stability", {**SMALL_S, "network": "cnn-skew"}),
    ("stability", {"network": "toy-z2"}), ("stability", {"network": "toy-linear"})])
def test_the_cost_model_counts_the_values_of_every_snapshot(experiment_name, values):
    experiment = experiments.get(experiment_name)
    settings = make_trial(experiment_name, values).settings
    phases = (1, 2) if experiment_name == "cnn" else (1,)
    for phase in phases:
        model = experiment.build_model(settings, phase)
        assert experiment.snapshot_values(settings, phase) == sum(t.numel() for t in model.snapshot().values())
