"""Certified spectra (pipeline/core/certificates.py) and the search's endings
(pipeline/core/stationary_search.py), against dense linear algebra, the group's action built independently
(tests/independent_check.py) and objectives whose answers are known."""

import math

import pytest
import torch
from test_stationary import EIGENVALUES, CyclicQuartic, Kink, cnn_objective, dense_derivatives, group_objective

from independent_check import orbits, parameter_generators
from pipeline.core import certificates, stationarity
from pipeline.core import stationary_search as search
from pipeline.core.stationary_search import StationarySearch


@pytest.mark.parametrize("group", ["rot", "trans", "trans1d", "rototrans"])
def test_the_orbit_basis_spans_E_and_agrees_with_the_orbits_of_the_group_action(group):
    objective = group_objective(group, n=3, channels=2)
    basis = certificates.orbit_basis(objective.project_E, objective.get())
    independent = orbits(parameter_generators(objective.model, group, 3))
    assert basis is not None and basis.dim == int(independent.max()) + 1
    # The same partition of the coordinates, whatever the labels.
    pairs = set(zip(basis.orbit.tolist(), independent.tolist()))
    assert len(pairs) == basis.dim
    v = torch.randn(objective.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(basis.lift(basis.restrict(v)), objective.project_E(v), atol=1e-14)
    c = torch.randn(basis.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.allclose(basis.restrict(basis.lift(c)), c, atol=1e-14)  # orthonormal
    B = basis.complement()
    assert B.shape == (objective.dim, objective.dim - basis.dim)
    assert torch.allclose(B.T @ B, torch.eye(B.shape[1], dtype=torch.float64), atol=1e-13)
    assert float((basis.restrict(B.T).abs()).max()) <= 1e-14  # every column in E⊥


def test_a_draw_in_which_two_orbits_average_alike_is_drawn_again():
    # Among thousands of orbits two random averages can fall within the gap that joins orbits (a trans trial of
    # `stability` lost its dense H_E so): the first draw here has two orbits averaging exactly alike.
    objective = group_objective("trans", n=3, channels=2)
    independent = orbits(parameter_generators(objective.model, "trans", 3))
    first, second = (independent == 0), (independent == 1)
    calls = []

    def project_E(v):
        if not calls:
            v = v.clone()
            v[second] = v[first].mean()
            v[first] = v[first].mean()
        calls.append(1)
        return objective.project_E(v)

    basis = certificates.orbit_basis(project_E, objective.get())
    assert len(calls) > 3  # the merged basis was checked, refused, and a second draw made
    assert basis is not None and basis.dim == int(independent.max()) + 1


def test_no_orbit_basis_where_the_group_does_not_permute_the_coordinates():
    assert certificates.orbit_basis(cnn_objective("cross", "nonunitary").project_E,
                                    cnn_objective("cross", "nonunitary").get()) is None
    cross = cnn_objective("cross", "unitary")
    assert certificates.orbit_basis(cross.project_E, cross.get()) is not None


@pytest.mark.parametrize("network", ["rot", "cnn-cross"])
def test_dense_blocks_equal_the_dense_hessians_restricted_to_E_and_E_perp(network):
    objective = (group_objective("rot", n=3, channels=1, samples=16) if network == "rot"
                 else cnn_objective("cross", "unitary", channels="1,2,2", samples=12))
    _, (H, hessian_aug) = dense_derivatives(objective)
    basis = certificates.orbit_basis(objective.project_E, objective.get())
    Q = basis.lift(torch.eye(basis.dim, dtype=torch.float64)).T  # (D, k)
    B = basis.complement()
    found = certificates.certified_spectra(objective, 3, 50, dense_limit=10**6)
    for block, matrix, columns in (("E", H, Q), ("perp", hessian_aug, B)):
        spectrum = found[block]
        truth = torch.linalg.eigvalsh(columns.T @ matrix @ columns)
        assert spectrum.method == "dense" and spectrum.dim == columns.shape[1]
        scale = float(truth.abs().max())
        assert torch.allclose(spectrum.values, truth, atol=1e-12 * scale)
        assert spectrum.error <= 1e-12 * scale and spectrum.lower_bound <= float(truth[0])
        assert spectrum.negative == int((truth < -spectrum.error).sum())
        for value, vector in zip(spectrum.lowest, spectrum.lowest_vectors):  # eigenvectors of the whole space
            restricted = columns @ (columns.T @ vector)
            assert torch.allclose(restricted, vector, atol=1e-12)
            residual = columns @ (columns.T @ (matrix @ vector)) - value * vector
            assert float(torch.linalg.vector_norm(residual)) <= 1e-10 * scale


def test_a_block_too_large_to_form_is_reported_by_lanczos_and_not_certified():
    objective = group_objective("rot", n=3, channels=2)
    found = certificates.certified_spectra(objective, 2, 40, dense_limit=10)
    assert found["E"].method == found["perp"].method == "lanczos"
    assert found["E"].lower_bound == -math.inf and found["E"].negative == -1
    assert found["E"].dim > 10  # the dimension is known all the same


def drifting_problem(n=60, m=20, seed=0):
    """An operator whose restriction to a subspace S (dim n − m) is weight decay plus a low rank: Lanczos on it
    nearly breaks down after a few steps (tiny β), where round-off outside S is amplified. The projector onto S
    leaves a relative 1e-9 of the complement behind, standing in for round-off that the real Π_⊥ leaves."""
    generator = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    inside, outside = U[:, m:], U[:, :m]
    low_rank = torch.randn(n - m, 3, generator=generator, dtype=torch.float64)
    weights = torch.diag(torch.tensor([-2.0, 5.0, 40.0], dtype=torch.float64))
    T = 1e-3 * torch.eye(n - m, dtype=torch.float64) + low_rank @ weights @ low_rank.T / 10
    A = inside @ T @ inside.T + outside @ torch.diag(torch.linspace(1, 3, m, dtype=torch.float64)) @ outside.T

    def project(v):
        return v - (1 - 1e-9) * outside @ (outside.T @ v)

    truth = torch.linalg.eigvalsh(T)
    return A, project, inside, truth


def test_lanczos_keeps_its_ritz_vectors_in_the_blocks_space_and_computes_their_residuals():
    A, project, inside, truth = drifting_problem()
    start = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spectrum = certificates.lanczos_spectrum("perp", lambda v: A @ v, project, start, 3, 60, inside.shape[1])
    assert spectrum.rejected == 0 and spectrum.outside <= certificates.OUTSIDE_TOLERANCE
    # No spurious eigenvalue 0 of the projected operator: every Ritz value is one of the restriction's.
    for value, vector, residual in zip(spectrum.lowest, spectrum.lowest_vectors, spectrum.residuals):
        assert float((truth - value).abs().min()) <= 1e-8
        assert float(residual) == pytest.approx(float(torch.linalg.vector_norm(project(A @ vector) - value * vector)),
                                                rel=1e-6, abs=1e-15)
    assert float(spectrum.lowest[0]) == pytest.approx(float(truth[0]), rel=1e-8)


def test_a_ritz_vector_with_a_part_outside_the_blocks_space_is_rejected():
    A, _, inside, truth = drifting_problem()
    leaky = inside @ inside.T + 1e-3 * torch.eye(A.shape[0], dtype=torch.float64)  # not a projector onto S

    def project(v):
        return leaky @ v

    start = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spectrum = certificates.lanczos_spectrum("perp", lambda v: A @ v, project, start, 2, 30, inside.shape[1])
    assert spectrum.rejected > 0


# -- the search: how it ends --------------------------------------------------------------------------------


def newton_search(objective, **options):
    found = StationarySearch(objective, tolerance=1e-3, block=10, max_iterations=50, refine="newton",
                             newton_iterations=500, **options)
    norms = []
    while not found.done:
        found.step_block()
        if found.stage == "newton" and not found.done:
            norms.append(found.norm)
    return found, norms


def test_a_search_ends_by_its_criterion_on_its_best_iterate():
    problem = CyclicQuartic(EIGENVALUES)
    found, norms = newton_search(problem)
    assert found.ended == search.CURVATURE_CRITERION and found.ending == search.CRITERION and found.converged
    check = found.check
    assert check is not None and check.met and check.ratio <= found.target
    # The curvature judged is λ_min(H_E) = 0.2, clearly positive and smaller than |λ_min(H_⊥)| = 1.
    assert check.curvature == pytest.approx(0.2, rel=1e-6)
    assert found.norm <= found.target * 0.2 * float(torch.linalg.vector_norm(problem.get()))
    assert found.norm <= min(norms + [math.inf])


def test_a_search_that_cannot_progress_ends_by_a_certified_stall():
    found, _ = newton_search(Kink(), stall_window=20)
    assert found.ending == search.STALL and found.stalled and not found.converged
    assert found.ended in (search.NO_PROGRESS, search.RADIUS_AT_ROUNDOFF)


@pytest.mark.parametrize("budget, ended", [({"hessian_budget": 5}, search.HESSIAN_BUDGET),
                                           ({"time_budget": 1e-9}, search.TIME_BUDGET),
                                           ({"newton_iterations": 1}, search.NEWTON_CAP)])
def test_a_search_ends_by_its_budget_and_says_which(budget, ended):
    problem = CyclicQuartic(EIGENVALUES)
    options = {"tolerance": 1e-3, "block": 10, "max_iterations": 5, "refine": "newton", "newton_iterations": 500}
    options.update(budget)
    found = StationarySearch(problem, **options)
    while not found.done:
        found.step_block()
    assert found.ended == ended and found.ending == search.BUDGET


def test_the_best_iterate_is_kept_when_the_last_is_worse():
    problem = CyclicQuartic(EIGENVALUES)
    found = StationarySearch(problem, tolerance=1e-3, block=10, max_iterations=5, refine="newton",
                             newton_iterations=500)
    while found.stage != "newton":
        found.step_block()
    found.step_block()
    best = found.best["norm"]
    worse = found.theta + 0.5 * problem.project_E(torch.ones_like(found.theta))  # a point of E, further away
    problem.set(worse)
    found.theta = worse
    found.loss, found.accuracy, found.grad = found._projected_gradient()
    found.norm = float(torch.linalg.vector_norm(found.grad))
    assert found.norm > best
    found._end(search.NEWTON_CAP)
    assert found.norm == best and torch.equal(problem.get(), found.best["theta"])


def test_the_curvature_scale_and_the_points_that_have_none():
    assert stationarity.curvature_scale(0.5, -0.1, 10.0) == pytest.approx(0.1)
    assert stationarity.curvature_scale(0.01, -0.1, 10.0) == pytest.approx(0.01)
    assert stationarity.curvature_scale(1e-14, -0.1, 10.0) == pytest.approx(0.1)  # a zero of H_E has no scale
    assert stationarity.curvature_scale(0.5, math.nan, 10.0) == pytest.approx(0.5)  # H_⊥ not known
    assert math.isnan(stationarity.curvature_scale(1e-14, 1e-13, 10.0))  # degenerate
    assert stationarity.point_kind(math.nan, 1.0, 1.0) == stationarity.DEGENERATE
    assert stationarity.point_kind(0.1, 1e-13, 1.0) == stationarity.ZERO_POINT
    assert stationarity.point_kind(0.1, 0.5, 1.0) == ""
    assert math.isnan(stationarity.stationarity(1e-9, math.nan, 1.0))
    assert math.isnan(stationarity.stationarity(1e-9, 0.1, 0.0))
