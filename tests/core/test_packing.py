"""Seed packing: k seeds trained together give each seed exactly its unpacked run, to round-off."""

import math
import os

import pytest
import torch

from pipeline import experiments
from pipeline.core import packing
from pipeline.core.packing import PackedCNN
from pipeline.experiments import Trial, check_packable, make_trial
from pipeline.experiments.cnn import VARIANTS
from pipeline.run.faults import FAULT_VARIABLE, InjectedFault
from pipeline.run.runner import CollectingSink, run_trial, run_trials

SEEDS = (0, 1, 2)
# `make gpu-check` runs this file again with PIPELINE_TEST_DEVICE=cuda: the per-input policy of packing
# (grouped minibatches, shared full batches seed after seed) only differs from the forced ones on CUDA.
DEVICE = os.environ.get("PIPELINE_TEST_DEVICE", "cpu")
NUM_SAMPLES = 96
CNN = experiments.get("cnn")


def tiny(seed=0, **settings) -> Trial:
    values = dict(cnn_channels="3,4,4", n_samples=NUM_SAMPLES, data_source="vendored", device=DEVICE, dtype="float64",
                  phase1_epochs=2, phase1_batch=32, phase2_epochs=2, chunk_size=100, seed=seed)
    values.update(settings)
    return make_trial("cnn", values)


def unpacked(trials):
    sinks = [CollectingSink() for _ in trials]
    for trial, sink in zip(trials, sinks):
        run_trial(trial, sink)
    return sinks


def packed(trials, vectorize=None):
    sinks = [CollectingSink() for _ in trials]
    previous, packing.VECTORIZE = packing.VECTORIZE, vectorize
    try:
        run_trials(trials, sinks)
    finally:
        packing.VECTORIZE = previous
    return sinks


def assert_close(actual, expected, tol, scale=None, what=""):
    """|actual - expected| <= tol * max(|expected|, scale): relative, with a floor where a value is round-off
    of a larger quantity (dist_E of an equivariant layer is ~1e-16 of the layer's norm)."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert actual.shape == expected.shape, what
    both_nan = actual.isnan() & expected.isnan()
    floor = torch.as_tensor(0.0 if scale is None else scale, dtype=torch.float64)
    bound = tol * torch.maximum(expected.abs(), floor)
    ok = both_nan | ((actual - expected).abs() <= bound)
    assert bool(ok.all()), f"{what}: {actual} vs {expected} (tol {tol})"


def assert_same_run(got: CollectingSink, want: CollectingSink, tol: float, exact: CollectingSink = None) -> None:
    """``got`` equals ``want`` to ``tol``. ``exact``: the same run in float64, for a float32 ``want``."""
    assert [r.epoch for r in got.records] == [r.epoch for r in want.records]
    assert [r.phase for r in got.records] == [r.phase for r in want.records]
    # Each series is compared on its own scale, its largest value over the run: the layer distances on the
    # layer's norm (dist_E in E is round-off of it), the gradient norm on its maximum.
    layer_scale = torch.stack([r.norm for r in want.records]).amax(0)
    grad_scale = max((r.grad_norm for r in want.records if not math.isnan(r.grad_norm)), default=0.0)
    for j, (g, w) in enumerate(zip(got.records, want.records)):
        at = f"epoch {w.epoch}"
        assert_close(g.loss, w.loss, tol, what=f"loss {at}")
        # In float32 two logits within round-off of each other may swap: at most one image changes class.
        assert abs(g.accuracy - w.accuracy) <= (0 if tol < 1e-9 else 1.01 / NUM_SAMPLES), f"accuracy {at}"
        assert math.isnan(g.grad_norm) == math.isnan(w.grad_norm), f"grad_norm {at}"
        # A minibatch gradient sums per-image terms that largely cancel: in float32 the unpacked gradient norm
        # itself can be ~1e-6 off the exact one, and two float32 implementations may be off in opposite
        # directions. Allowed on top of tol: twice the unpacked float32 run's own distance from float64.
        slack = 0.0 if exact is None else 2 * abs(w.grad_norm - exact.records[j].grad_norm)
        assert abs(g.grad_norm - w.grad_norm) <= tol * grad_scale + slack or math.isnan(w.grad_norm), \
            f"grad_norm {at}: {g.grad_norm} vs {w.grad_norm} (tol {tol}, slack {slack:.1e})"
        for name in ("dist_E", "dist_init", "norm"):
            assert_close(getattr(g, name), getattr(w, name), tol, layer_scale, what=f"{name} {at}")
    assert len(got.steps) == len(want.steps) > 0
    for g, w in zip(got.steps, want.steps):
        assert_close(g, w, tol, layer_scale, what="steps dist_E")
    assert len(got.weights) == len(want.weights)
    for g, w in zip(got.weights, want.weights):
        assert sorted(g) == sorted(w)
        for name in w:
            assert g[name].shape == w[name].shape and g[name].dtype == w[name].dtype
            assert_close(g[name], w[name], tol, w[name].abs().max(), what=f"weights {name}")


VECTORIZE = pytest.mark.parametrize("vectorize", [False, True, None], ids=["seed-after-seed", "grouped", "per-input"])


@VECTORIZE
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_packed_seeds_equal_their_unpacked_runs_in_float64(variant, vectorize):
    trials = [tiny(seed, variant=variant) for seed in SEEDS]
    for got, want in zip(packed(trials, vectorize), unpacked(trials)):
        assert_same_run(got, want, 1e-12)


@VECTORIZE
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_packed_seeds_equal_their_unpacked_runs_in_float32(variant, vectorize):
    trials = [tiny(seed, variant=variant, dtype="float32") for seed in SEEDS]
    exact = unpacked([tiny(seed, variant=variant) for seed in SEEDS])
    for got, want, want64 in zip(packed(trials, vectorize), unpacked(trials), exact):
        assert_same_run(got, want, 1e-6, want64)


@VECTORIZE
def test_packed_phase2_sgd_and_nom_give_every_seed_its_own_minibatches(vectorize):
    trials = [tiny(seed, variant="nonunitary", phase2_optimizer="sgd", phase2_batch=64, phase1_epochs=1)
              for seed in SEEDS]
    for got, want in zip(packed(trials, vectorize), unpacked(trials)):
        assert_same_run(got, want, 1e-12)
        assert len(got.steps) == 2 * 6  # 96 samples x 4 rotations / batch 64, per epoch
    trials = [tiny(seed, variant="cross", phase2_mode="nom", phase1_epochs=0, chunk_size=7) for seed in SEEDS[:2]]
    for got, want in zip(packed(trials, vectorize), unpacked(trials)):
        assert_same_run(got, want, 1e-12)


@VECTORIZE
def test_packed_forward_equals_each_model(vectorize):
    trial = tiny()
    x = CNN.load_data(trial.settings, DEVICE, torch.float64).images[:10]
    for variant in VARIANTS:
        for phase in (1, 2):  # the equivariant parametrisation, then the variant's unconstrained one
            models = [CNN.build_model(tiny(seed, variant=variant).settings, phase).to(DEVICE) for seed in SEEDS]
            expected = [model(x) for model in models]
            per_seed = torch.stack([x.flip(0), x, x.roll(3, 0)])
            expected_per_seed = [model(xi) for model, xi in zip(models, per_seed)]
            pack = PackedCNN(models, vectorize)
            for got, want in ((pack(x), expected), (pack(per_seed), expected_per_seed)):
                assert got.shape == (len(SEEDS), 10, 10)
                for i in range(len(SEEDS)):
                    assert_close(got[i].detach(), want[i].detach(), 1e-12, 1.0, what=f"{variant} phase {phase}")


class CheckpointingSink(CollectingSink):
    """Keeps every checkpoint; resumes from a given one."""

    def __init__(self, resume=None):
        super().__init__()
        self.resume, self.checkpoints = resume, []

    def resume_point(self):
        return self.resume

    def write_epoch(self, record, model, checkpoint):
        super().write_epoch(record, model, checkpoint)
        self.checkpoints.append(checkpoint())


def test_packed_checkpoints_resume_packed_and_unpacked():
    trials = [tiny(seed, variant="nonunitary") for seed in SEEDS[:2]]
    full = [CheckpointingSink() for _ in trials]
    run_trials(trials, full)
    reference = unpacked(trials)
    phase1 = trials[0].settings.phase1_epochs
    total = CNN.total_epochs(trials[0].settings)
    # Epoch 1 is inside phase 1 (the Equi model), epoch phase1 + 1 inside phase 2 (the unconstrained one).
    for at_epoch, phase in ((1, 1), (phase1 + 1, 2)):
        points = [sink.checkpoints[at_epoch] for sink in full]
        assert points[0]["epoch"] == at_epoch and points[0]["phase"] == phase
        assert sorted(points[0]["model"]) == sorted(CNN.build_model(trials[0].settings, phase).state_dict())

        resumed = [CheckpointingSink(point) for point in points]
        run_trials(trials, resumed)  # every sink resumes at the same epoch: packed
        one = CheckpointingSink(points[0])
        run_trial(trials[0], one)  # a packed checkpoint resumes unpacked
        for got, full_run in zip(resumed + [one], reference + reference[:1]):
            assert [r.epoch for r in got.records] == list(range(at_epoch + 1, total + 1))
            want = CollectingSink()
            want.records = full_run.records[at_epoch + 1:]
            want.weights = full_run.weights[at_epoch + 1:]
            want.steps = full_run.steps[max(0, at_epoch - phase1):]
            assert_same_run(got, want, 1e-12)

    mixed = [CheckpointingSink(points[0]), CheckpointingSink()]  # resume points differ: one by one
    run_trials(trials, mixed)
    assert [r.epoch for r in mixed[0].records][0] == phase1 + 2
    assert [r.epoch for r in mixed[1].records][0] == 0
    assert len(mixed[1].records) == total + 1


def test_an_injected_fault_stops_the_pack(monkeypatch):
    trials = [tiny(seed) for seed in SEEDS[:2]]
    monkeypatch.setenv(FAULT_VARIABLE, f"{trials[1].trial_id}@2")
    sinks = [CollectingSink() for _ in trials]
    with pytest.raises(InjectedFault):
        run_trials(trials, sinks)
    assert [[r.epoch for r in sink.records] for sink in sinks] == [[0, 1], [0, 1]]


def test_trials_that_differ_in_more_than_the_seed_are_refused():
    with pytest.raises(ValueError, match="phase2_lr"):
        check_packable([tiny(0), tiny(1, phase2_lr=1e-3)])
    with pytest.raises(ValueError, match="variant"):
        run_trials([tiny(0), tiny(1, variant="skew")], [CollectingSink(), CollectingSink()])
    with pytest.raises(ValueError, match="distinct seeds"):
        check_packable([tiny(0), tiny(0)])
    with pytest.raises(ValueError, match="one sink per trial"):
        run_trials([tiny(0), tiny(1)], [CollectingSink()])
