"""The paper's claims as tests, on configurations small enough to run in seconds.

All modes of a seed start from the same A0 in E and take several full-batch steps with a learning rate
large enough to move the weights by O(1). The configurations are those ``bench/theory_ratios.py`` prints
the ratios of.
"""

import sys
from pathlib import Path

import pytest
import torch

from pipeline.experiments.groups import GROUP_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from theory_ratios import SMALL_CNN, SMALL_GROUPS, train  # noqa: E402


def relative_to_travelled(sink) -> float:
    last = sink.records[-1]
    return float(last.dist_E.norm() / last.dist_init.norm())


@pytest.fixture(scope="module", params=GROUP_NAMES)
def runs(request):
    group = request.param
    common = dict(SMALL_GROUPS, group=group)
    return {
        "equi": train("groups", **common, mode="equi", dtype="float32"),
        "orbit": train("groups", **common, mode="aug", augment="orbit", dtype="float64"),
        "sampled": train("groups", **common, mode="aug", augment="sampled:3", dtype="float64"),
        "nom": train("groups", **common, mode="nom", dtype="float64"),
    }


def test_all_modes_start_from_the_same_point_in_E(runs):
    start = runs["nom"].weights[0]
    for sink in runs.values():
        assert all(torch.allclose(sink.weights[0][k].double(), start[k], atol=1e-6) for k in start)
        assert float(sink.records[0].dist_E.norm()) <= 1e-6 * float(sink.records[0].norm.norm())
    assert all(torch.equal(runs["orbit"].weights[0][k], start[k]) for k in start)


def test_every_mode_moves(runs):
    for sink in runs.values():
        assert float(sink.records[-1].dist_init.norm()) > 0.5


def test_equi_stays_in_E_to_float32_round_off(runs):
    for record in runs["equi"].records:
        assert float(record.dist_E.norm() / record.norm.norm()) <= 1e-6


def test_aug_orbit_stays_in_E_to_float64_round_off(runs):
    for record in runs["orbit"].records[1:]:
        assert float(record.dist_E.norm() / record.dist_init.norm()) <= 1e-10


def test_nom_leaves_E_at_a_rate_comparable_to_the_distance_travelled(runs):
    assert relative_to_travelled(runs["nom"]) >= 0.05


def test_sampled_augmentation_lies_strictly_between_orbit_and_nom(runs):
    orbit, sampled, nom = (relative_to_travelled(runs[k]) for k in ("orbit", "sampled", "nom"))
    assert orbit < sampled < nom
    assert sampled > 1e-6  # a Monte-Carlo gradient really leaves E, beyond round-off


@pytest.mark.parametrize("variant,stays", [("cross", True), ("skew", False), ("nonunitary", False)])
def test_cnn_phase_2_with_orbit_augmentation(variant, stays):
    sink = train("cnn", **SMALL_CNN, variant=variant)
    phase2 = [r for r in sink.records if r.phase == 2]
    assert len(phase2) == 3 and len(sink.steps) == 3
    assert float(phase2[-1].dist_init.norm()) > 0.1
    ratio = relative_to_travelled(sink)
    if stays:
        assert ratio <= 1e-10
    else:
        assert ratio >= 1e-4
    # Phase 1 is the equivariant model: exactly in E.
    assert all(float(r.dist_E.norm()) <= 1e-12 for r in sink.records if r.phase == 1)


def test_cnn_phase_2_nominal_leaves_E_even_for_the_compatible_support():
    sink = train("cnn", **SMALL_CNN, variant="cross", phase2_mode="nom")
    assert relative_to_travelled(sink) >= 1e-4
