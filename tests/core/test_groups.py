"""The four groups of Experiment G and their projections, against explicit permutation matrices."""

import pytest
import torch

from pipeline.core.pixel_groups import get_group
from pipeline.experiments.groups import GROUP_NAMES

ORDERS_14 = {"rot": 4, "trans": 196, "trans1d": 14, "rototrans": 784}


def permutation_matrices(G) -> torch.Tensor:
    """P_g for every element, built by transforming the standard basis images one at a time."""
    N = G.num_pixels
    basis = torch.eye(N, dtype=torch.float64).reshape(N, G.n, G.n)
    # Column j of P_g is the image of basis vector e_j.
    return torch.stack([G.transform(basis, k).reshape(N, N).T for k in range(len(G))])


CASES = [(name, 6) for name in GROUP_NAMES] + [("rot", 14), ("trans1d", 14), ("trans", 14)]


@pytest.mark.parametrize("name,n", CASES)
def test_projections_equal_the_brute_force_group_average(name, n):
    G = get_group(name, n)
    P = permutation_matrices(G)
    generator = torch.Generator().manual_seed(1)
    A = torch.randn(2, 3, G.num_pixels, G.num_pixels, generator=generator, dtype=torch.float64)
    w = torch.randn(2, 3, G.num_pixels, generator=generator, dtype=torch.float64)
    expected_A = torch.einsum("gij,abjk,glk->abil", P, A, P) / len(G)
    expected_w = torch.einsum("abj,gjk->abk", w, P) / len(G)
    assert torch.allclose(G.project(A), expected_A, atol=1e-12)
    assert torch.allclose(G.project_invariant(w), expected_w, atol=1e-12)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_projections_are_idempotent_self_adjoint_and_land_in_E(name):
    G = get_group(name, 6)
    P = permutation_matrices(G)
    generator = torch.Generator().manual_seed(2)
    A, B = torch.randn(2, 4, G.num_pixels, G.num_pixels, generator=generator, dtype=torch.float64)
    v, u = torch.randn(2, 4, G.num_pixels, generator=generator, dtype=torch.float64)
    projected = G.project(A)
    assert torch.allclose(G.project(projected), projected, atol=1e-12)
    assert torch.allclose((G.project(A) * B).sum(), (A * G.project(B)).sum(), atol=1e-10)
    assert torch.allclose(G.project_invariant(G.project_invariant(v)), G.project_invariant(v), atol=1e-12)
    assert torch.allclose((G.project_invariant(v) * u).sum(), (v * G.project_invariant(u)).sum(), atol=1e-10)
    # In E: commutes with every group element; invariant weights are fixed by every element.
    for p_g in P:
        assert torch.allclose(p_g @ projected, projected @ p_g, atol=1e-12)
        assert torch.allclose(G.project_invariant(v) @ p_g, G.project_invariant(v), atol=1e-12)
    # A generic layer is not in E, so the tests above are not vacuous.
    assert float(G.dist(A)) > 0.1 * float(A.norm())


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_orders_on_the_paper_grid(name):
    assert len(get_group(name, 14)) == ORDERS_14[name]


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_elements_form_a_group_and_act_by_permutations(name):
    G = get_group(name, 6)
    sources = {tuple(s.tolist()) for s in G.sources}
    assert len(sources) == len(G)  # distinct elements
    for s in list(sources)[:8]:  # closed under composition
        for t in list(sources)[:8]:
            assert tuple(torch.tensor(s)[torch.tensor(t)].tolist()) in sources


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_batched_transform_matches_elementwise_transform(name):
    G = get_group(name, 6)
    x = torch.randn(5, 3, 6, 6)
    elements = torch.tensor([0, 1, len(G) - 1, 2 % len(G), 3 % len(G)])
    batched = G.transform_each(x, elements)
    for b, k in enumerate(elements.tolist()):
        assert torch.equal(batched[b], G.transform(x[b], k))


def test_rototranslation_projection_is_rotation_after_translation_average():
    G, R, T = get_group("rototrans", 6), get_group("rot", 6), get_group("trans", 6)
    A = torch.randn(3, 36, 36, dtype=torch.float64)
    assert torch.allclose(G.project(A), R.project(T.project(A)), atol=1e-12)
    assert torch.allclose(R.project(T.project(A)), T.project(R.project(A)), atol=1e-12)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_the_gpu_evaluation_of_the_projection_agrees_with_the_cpu_one(name):
    """The GPU path (a gather over all group elements) is checked here on the CPU."""
    G = get_group(name, 6)
    A = torch.randn(3, 2, 36, 36, dtype=torch.float64)
    w = torch.randn(3, 36, dtype=torch.float64)
    for values, orbits, trailing in ((A, G._pair_orbits, 2), (w, G._pixel_orbits, 1)):
        flat = G._pixels_first(values, trailing)
        assert torch.allclose(G._orbit_means(flat, orbits, gather=True), G._orbit_means(flat, orbits, gather=False),
                              atol=1e-12)


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_dist_is_the_norm_of_the_component_orthogonal_to_E_and_leaves_its_input_alone(name):
    G = get_group(name, 6)
    storage = torch.randn(4 * 36, 3 * 36, dtype=torch.float64)
    A = storage.view(4, 36, 3, 36).permute(0, 2, 1, 3)  # a transposed view, as the network stores its layers
    before = storage.clone()
    assert torch.allclose(G.dist(A), torch.linalg.vector_norm(A - G.project(A)), rtol=1e-12)
    w = torch.randn(36, dtype=torch.float64)
    w_before = w.clone()
    assert torch.allclose(G.dist_invariant(w), torch.linalg.vector_norm(w - G.project_invariant(w)), rtol=1e-12)
    assert torch.equal(storage, before) and torch.equal(w, w_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_keeps_dtype(dtype):
    G = get_group("trans", 6)
    assert G.project(torch.randn(2, 36, 36, dtype=dtype)).dtype == dtype


def test_bad_group_and_shapes_give_clear_errors():
    with pytest.raises(ValueError, match="unknown group 'mirror'; accepted: rot, trans, trans1d, rototrans"):
        get_group("mirror", 6)
    G = get_group("rot", 6)
    with pytest.raises(ValueError, match="must end in 2 axes of size 36"):
        G.project(torch.zeros(35, 35))
    with pytest.raises(ValueError, match="out of range"):
        G.transform(torch.zeros(6, 6), 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_projection_on_cuda_matches_cpu():
    G = get_group("rototrans", 6)
    A = torch.randn(2, 36, 36, dtype=torch.float64)
    assert torch.allclose(G.project(A.cuda()).cpu(), G.project(A), atol=1e-12)
