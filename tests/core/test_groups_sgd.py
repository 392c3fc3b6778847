"""Experiment G's extension that trains: minibatch SGD, labelled as an extension, under the same claims."""

import pytest
import torch

from pipeline.cli import main
from pipeline.core.training import SingleStepper, minibatch_epoch, seeded_generator
from pipeline.experiments import get, make_trial
from pipeline.experiments.claims import BELOW_REFERENCE, LEAVES_E, STAYS_IN_E, GridCell
from pipeline.launch.grid import load_grid
from pipeline.run.runner import CollectingSink, run_trial
from pipeline.settings import Augmentation, ConfigError

TINY = {"optimizer": "sgd", "n": "6", "channels": "4", "n_samples": "64", "batch_size": "16", "epochs": "3",
        "lr": "0.1", "device": "cpu", "dtype": "float64", "weights_every": "0"}


def train(**values):
    sink = CollectingSink()
    run_trial(make_trial("groups", {**TINY, **values}), sink)
    return sink


def relative_dist_E(record) -> float:
    return float(record.dist_E.norm() / record.norm.norm())


@pytest.mark.parametrize("values, message", [
    ({"optimizer": "adam"}, "unknown optimizer 'adam'; accepted: gd, sgd"),
    ({"optimizer": "sgd", "batch_size": "0"}, "batch_size must be"),
    ({"optimizer": "sgd", "batch_size": "65", "n_samples": "64"},
     "batch_size 65 is more than n_samples 64: a minibatch would be the whole data; accepted: 1..64"),
])
def test_bad_sgd_settings_fail_in_one_line(values, message, capsys):
    with pytest.raises(ConfigError, match=message):
        make_trial("groups", values)
    argv = ["train", "--group", "rot", "--mode", "nom"] + [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.split(";")[0] in err and err.count("\n") == 1


def test_full_batch_settings_do_not_name_or_split_trials_of_the_paper_arm():
    gd = make_trial("groups", {"batch_size": "7", "mode": "aug", "augment": "sampled:2", "aug_batch": "5"})
    assert gd.settings.batch_size == 50 and gd.settings.aug_batch == 5  # batch_size: only SGD uses it
    sgd = make_trial("groups", {"optimizer": "sgd", "mode": "aug", "augment": "sampled:2", "aug_batch": "5"})
    assert sgd.settings.aug_batch == 25 and sgd.trial_id == "rot-aug-sgd-s000"  # SGD draws per minibatch


def test_sgd_equi_stays_in_E_to_round_off_and_its_loss_falls():
    sink = train(mode="equi")
    assert max(relative_dist_E(r) for r in sink.records) <= 1e-14
    assert sink.records[-1].loss < 0.7 * sink.records[0].loss  # it learns
    assert float(sink.records[-1].dist_init.norm()) > 0.1  # and travels: E is not left for want of moving


def test_sgd_nom_leaves_E_at_a_rate_comparable_to_the_distance_travelled():
    last = train(mode="nom").records[-1]
    assert float(last.dist_E.norm() / last.dist_init.norm()) >= 0.05  # NOM_MIN_RATIO of analysis/claims.py


def test_sgd_on_whole_orbits_follows_equi_and_one_element_per_minibatch_does_not():
    """Each orbit step is the exact Aug gradient of its samples, which from a point of E is Π_E of the plain
    gradient (claim 1): the same trajectory as Equi, to round-off. Sampled Aug leaves E, less than Nom."""
    equi, orbit = train(mode="equi"), train(mode="aug", augment="orbit")
    for a, b in zip(equi.records, orbit.records):
        assert abs(a.loss - b.loss) <= 1e-10 * abs(a.loss) and relative_dist_E(b) <= 1e-13
    for name, value in equi.weights[-1].items():
        assert torch.allclose(orbit.weights[-1][name], value, rtol=0, atol=1e-10), name
    sampled = train(mode="aug", augment="sampled:1").records[-1]
    nom = train(mode="nom").records[-1]
    assert 1e-6 < relative_dist_E(sampled) < relative_dist_E(nom)


class ElementLog(torch.nn.Module):
    """Stands in for a model: records the group elements of every batch it is shown."""

    group_order = 8

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches = []

    def transform_inputs(self, x, elements):
        self.batches.append(elements.tolist())
        return x


class FakeStepper(SingleStepper):
    def __init__(self, model):
        super().__init__(model, [0])
        self.steps = 0

    def backward(self, x, labels, num_rows, loss, stats=False):
        self.model_rows = getattr(self, "model_rows", []) + [len(x)]

    def descend(self, lr, mode, reg=0.0):
        self.steps += 1
        return [0.0]


def test_sampled_aug_draws_one_element_per_minibatch_and_orbit_aug_shows_each_minibatch_every_element():
    from pipeline.core.data import Dataset

    data = Dataset(torch.zeros(40, 1, 4, 4), torch.zeros(40, dtype=torch.long), "test")
    sampled = ElementLog()
    stepper = FakeStepper(sampled)
    minibatch_epoch(stepper, data, "aug", Augmentation.parse("sampled:3"), 0.1, "mse", 16, 1000,
                    [seeded_generator(0, "elements")])
    assert stepper.steps == 3 * 3  # three passes of ceil(40 / 16) minibatches
    drawn = [set(batch) for batch in sampled.batches]
    assert all(len(elements) == 1 for elements in drawn)  # one element for the whole minibatch...
    assert len(set.union(*drawn)) > 1  # ... drawn afresh for each (identity minibatches are not transformed)
    orbit = ElementLog()
    stepper = FakeStepper(orbit)
    minibatch_epoch(stepper, data, "aug", Augmentation("orbit"), 0.1, "mse", 16, 40, [seeded_generator(0)])
    assert stepper.steps == 3 and sum(stepper.model_rows) == 40 * 8  # every sample, through every element
    assert sorted(set(e for batch in orbit.batches for e in batch)) == list(range(8))


def test_the_extension_is_labelled_wherever_it_shows():
    groups = get("groups")
    trials = [t for t in load_grid("demo").trials() if t.experiment == "groups"]
    extension = [t for t in trials if t.settings.optimizer == "sgd"]
    assert extension and all("-sgd-" in t.trial_id for t in extension)
    assert all("-sgd-" not in t.trial_id for t in trials if t.settings.optimizer == "gd")
    # The arms differ in learning rate, epochs and size, which name no trial: ids stay those of the paper's arm.
    assert {"rot-equi-s000", "rot-aug-sampled10-s000", "rot-aug-orbit-s002", "rototrans-nom-s002"} <= \
        {t.trial_id for t in trials}
    assert all("lr" not in t.swept and "epochs" not in t.swept for t in trials)
    assert groups.series_words("nom", {"optimizer": "sgd"}) == "Nom, extension: minibatch SGD"
    assert groups.series_words("nom", {"optimizer": "gd"}) == "Nom"  # the paper's own scheme goes unnamed
    assert groups.arm_title("sgd") == "Experiment G, extension: minibatch SGD" and groups.arm_title("gd") == ""


def test_the_claims_apply_to_the_extension_as_to_the_paper_arm():
    sgd = {"optimizer": ("sgd",), "reg": (0.0,)}
    cells = [GridCell("rot", "equi", {"optimizer": "sgd"}, sgd),
             GridCell("rot", "aug", {"optimizer": "sgd", "augment": "orbit"}, {**sgd, "augment": ("orbit",)}),
             GridCell("rot", "aug", {"optimizer": "sgd", "augment": "sampled:1"}, {**sgd, "augment": ("sampled:1",)}),
             GridCell("rot", "nom", {"optimizer": "sgd"}, sgd),
             GridCell("rot", "nom", {"optimizer": "gd"}, {"optimizer": ("gd",), "reg": (0.0,)})]
    claims = get("groups").claims(cells)
    by_cell = {(c.cell.mode, c.cell.swept.get("augment"), c.cell.swept["optimizer"]): c for c in claims}
    assert by_cell["equi", None, "sgd"].kind == STAYS_IN_E
    assert by_cell["aug", "orbit", "sgd"].kind == STAYS_IN_E
    sampled = by_cell["aug", "sampled:1", "sgd"]
    assert sampled.kind == BELOW_REFERENCE and sampled.reference == cells[3]  # the SGD Nom cell, not the GD one
    assert by_cell["nom", None, "sgd"].kind == LEAVES_E
    assert by_cell["nom", None, "sgd"].subject == "rot (extension: minibatch SGD)"
    assert by_cell["nom", None, "gd"].subject == "rot"
    alone = GridCell("rot", "equi", {}, sgd)  # a grid of the extension only: nothing swept, still named
    assert get("groups").claims([alone])[0].subject == "rot (extension: minibatch SGD)"


def test_only_the_sgd_arm_of_experiment_g_is_meant_to_learn():
    from pipeline.experiments import get

    groups = get("groups")
    # The paper's full-batch cells probe the dynamics near A⁰: the report says so rather than "did not learn".
    assert not groups.meant_to_learn({"optimizer": "gd"}) and not groups.meant_to_learn({})
    assert groups.meant_to_learn({"optimizer": "sgd"})
    assert "probes the dynamics near the equivariant start" in groups.probe_words()
