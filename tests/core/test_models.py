"""Both model families: invariance in E, compatibility of supports, transfer between parametrisations."""

import pytest
import torch

from pipeline.core.models import CNN, GroupNet
from pipeline.core.models.cnn import equivariant_basis, support_mask
from pipeline.core.pixel_groups import get_group
from pipeline.core.training import seeded_generator
from pipeline.experiments import get, make_trial
from pipeline.experiments.groups import GROUP_NAMES


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_group_net_with_layers_in_E_is_invariant(name):
    G = get_group(name, 6)
    model = GroupNet(G, channels=3).double()
    model.initialize(seeded_generator(0, "init"))
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    reference = model(x)
    for k in range(len(G)):
        assert (model(G.transform(x, k)) - reference).abs().max() <= 1e-10
    for layer_dist in model.layer_measurements(model.snapshot())["dist_E"]:
        assert layer_dist <= 1e-12


def test_group_net_off_E_is_not_invariant():
    """The invariance above is a property of E, not of the architecture."""
    G = get_group("rot", 6)
    model = GroupNet(G, channels=3).double()
    model.initialize(seeded_generator(0, "init"))
    with torch.no_grad():
        model.A1.weight.add_(torch.randn_like(model.A1.weight) * 0.1)
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64)
    assert (model(G.transform(x, 1)) - model(x)).abs().max() > 1e-4


build_model = get("groups").build_model


def test_same_seed_same_initial_point_for_every_mode():
    weights = []
    for mode in ("equi", "aug", "nom"):
        trial = make_trial("groups", {"group": "trans", "mode": mode, "n": "6", "channels": "3", "seed": "4"})
        weights.append(build_model(trial.settings).snapshot())
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    different_seed = build_model(make_trial("groups", {"n": "6", "channels": "3", "seed": "5"}).settings).snapshot()
    assert not torch.equal(weights[0]["A1"], different_seed["A1"])


def rotation_projector_3x3() -> torch.Tensor:
    basis = torch.eye(9, dtype=torch.float64).reshape(9, 3, 3)
    return sum(torch.rot90(basis, k, dims=(-2, -1)).reshape(9, 9).T for k in range(4)) / 4


@pytest.mark.parametrize("support,compatible", [("cross", True), ("skew", False)])
def test_support_compatibility(support, compatible):
    Pi_E = rotation_projector_3x3()
    Pi_L = torch.diag(support_mask(support).reshape(9))
    commutator = (Pi_L @ Pi_E - Pi_E @ Pi_L).abs().max()
    assert (commutator < 1e-12) == compatible


def test_equivariant_bases_are_orthonormal_with_edge_entries_one_half():
    cross, skew = equivariant_basis("cross"), equivariant_basis("skew")
    assert len(cross) == 2 and len(skew) == 1
    for basis in (cross, skew):
        flat = basis.reshape(len(basis), 9)
        assert torch.allclose(flat @ flat.T, torch.eye(len(basis), dtype=torch.float64))
    assert sorted(skew[0].unique().tolist()) == [0.0, 0.5]


@pytest.mark.parametrize("config,support,parametrization",
                         [("cross", "cross", "unitary"), ("skew", "skew", "unitary"),
                          ("nonunitary", "cross", "nonunitary")])
def test_transfer_to_unconstrained_keeps_the_function(config, support, parametrization):
    equi = CNN(support, "equivariant", channels=(4, 6, 6)).double()
    equi.initialize(seeded_generator(3, "init"))
    equi = equi.float()
    x = torch.randn(8, 1, 28, 28)
    free = equi.transferred(parametrization)
    assert free.parametrization == parametrization
    assert (free(x) - equi(x)).abs().max() <= 1e-5
    # The equivariant CNN is rotation invariant, and so is its transfer (it is the same function).
    assert (equi(torch.rot90(x, 1, dims=(-2, -1))) - equi(x)).abs().max() <= 1e-5
    for dist in free.layer_measurements(free.snapshot())["dist_E"]:
        assert dist <= 1e-6


def test_nonunitary_basis_is_not_orthogonal_and_is_seeded():
    a = CNN("cross", "nonunitary", channels=(2, 2, 2)).convs[0].basis.reshape(5, 9)
    b = CNN("cross", "nonunitary", channels=(2, 2, 2)).convs[0].basis.reshape(5, 9)
    assert torch.equal(a, b)
    gram = a @ a.T
    assert torch.allclose(gram.diagonal(), torch.ones(5, dtype=torch.float64))
    assert (gram - torch.diag(gram.diagonal())).abs().max() > 0.05


def test_pooled_kernel_convolution_equals_convolution_then_average_pooling():
    from torch.nn import functional as F

    from pipeline.core.models.cnn import pooled_kernel

    x = torch.randn(3, 2, 14, 14, dtype=torch.float64)
    kernel = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    reference = F.avg_pool2d(F.conv2d(x, kernel, padding=1), 2)
    fused = F.conv2d(x, pooled_kernel(kernel), stride=2, padding=1)
    assert fused.shape == reference.shape == (3, 5, 7, 7)
    assert torch.allclose(fused, reference, atol=1e-12)
