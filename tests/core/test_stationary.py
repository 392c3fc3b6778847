"""Experiment S (pipeline/core/objectives.py, stationary.py, stationary_search.py): the parameter-space
projections, the identities of claim 1 and of the Hessian's block structure against dense linear algebra on
tiny models, Lanczos against dense spectra, and the stationary point, spectra and perturbation dynamics on a
constructed problem whose answers are known."""

import math

import pytest
import torch

from pipeline import experiments
from pipeline.core.certificates import lanczos
from pipeline.core.data import load_mnist
from pipeline.core.objectives import ModelObjective, Objective, random_unit
from pipeline.core.stationary import (
    block_structure,
    claim1,
    measured_factor,
    perturbation_run,
    predicted_factor,
    spectra,
)
from pipeline.core.stationary_search import find_stationary_point
from pipeline.core.training import loss_sum
from pipeline.experiments import make_trial
from pipeline.experiments.cnn import VARIANTS as CONFIGS
from pipeline.experiments.groups import GROUP_NAMES

# -- tiny models -----------------------------------------------------------------------------------


def group_objective(group, n=3, channels=2, samples=32, loss="mse", chunk_size=48, seed=0):
    """A GroupNet at its seeded initial point, which is in E. A chunk size that does not divide the rows
    makes the objectives sum several unequal chunks."""
    model = experiments.get("groups").build_model(
        make_trial("groups", dict(group=group, n=n, channels=channels, seed=seed)).settings)
    data = load_mnist(samples, size=n, source="vendored").to("cpu", torch.float64)
    return ModelObjective(model, data, loss, chunk_size)


def cnn_objective(config, parametrization=None, channels="2,2,2", image_size=12, samples=24, chunk_size=40):
    """A CNN at its seeded equivariant initial point, moved to the configuration's free parametrisation:
    the same function, and a point of E in the new coordinates.

    Not image_size 8: its final map is 2 x 2, where an invariant head is constant and sums a map that the
    layer norm has centred, so every logit vanishes on E (R is constant there and H_E = 0)."""
    trial = make_trial("cnn", dict(variant=config, cnn_channels=channels, image_size=image_size, seed=0)).settings
    model = experiments.get("cnn").build_model(trial)
    parametrization = parametrization or CONFIGS[config][1]
    if parametrization != "equivariant":
        model = model.transferred(parametrization, trial.basis_seed)
    data = load_mnist(samples, size=image_size, normalize=True, source="vendored").to("cpu", torch.float64)
    return ModelObjective(model, data, "mse", chunk_size)


def dense_projector(objective):
    eye = torch.eye(objective.dim, dtype=torch.float64)
    return torch.stack([objective.project_E(e) for e in eye]).T


def dense_derivatives(objective):
    """∇R, ∇R_aug, ∇²R and ∇²R_aug by torch.func on the whole (augmented) data set at once: no RowLayout, no
    chunks, no double backward."""
    model, data = objective.model, objective.data
    shapes = [p.shape for p in objective.parameters]

    def R(theta, x, y):
        params = {name: t.view(shape) for name, t, shape in zip(objective.names, theta.split(objective.sizes), shapes)}
        return loss_sum(torch.func.functional_call(model, params, (x,)), y, objective.loss) / len(y)

    x, y = data.images, data.labels
    orbit = [model.transform_inputs(x, torch.full((len(x),), g)) for g in range(model.group_order)]
    theta, x_aug, y_aug = objective.get(), torch.cat(orbit), y.repeat(model.group_order)
    gradients = torch.func.grad(R)(theta, x, y), torch.func.grad(R)(theta, x_aug, y_aug)
    hessians = torch.func.hessian(R)(theta, x, y), torch.func.hessian(R)(theta, x_aug, y_aug)
    return gradients, hessians


def subspace_bases(P):
    """Orthonormal bases (columns) of the range of the projector P and of its complement."""
    values, vectors = torch.linalg.eigh(P)
    return vectors[:, values > 0.5], vectors[:, values <= 0.5]


@pytest.fixture(scope="module", params=["groupnet-rot", "groupnet-trans", "cnn-cross"])
def dense(request):
    if request.param == "cnn-cross":
        objective = cnn_objective("cross")
    else:
        objective = group_objective(request.param.removeprefix("groupnet-"))
    P = dense_projector(objective)
    gradients, (H, hessian_aug) = dense_derivatives(objective)
    return objective, P, H, hessian_aug, gradients


# -- the projection in parameter coordinates -------------------------------------------------------

PROJECTED_MODELS = [("groupnet", g) for g in GROUP_NAMES] + [
    ("cnn", "cross", "unitary"), ("cnn", "skew", "unitary"), ("cnn", "cross", "nonunitary"),
    ("cnn", "cross", "equivariant")]


def model_objective(spec):
    return group_objective(spec[1], n=4) if spec[0] == "groupnet" else cnn_objective(spec[1], spec[2])


def random_parameters(objective, seed):
    return torch.randn(objective.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("spec", PROJECTED_MODELS, ids=lambda s: "-".join(s))
def test_project_parameters_is_an_orthogonal_projection(spec):
    objective = model_objective(spec)
    u, v = random_parameters(objective, 1), random_parameters(objective, 2)
    u_copy = u.clone()
    p_u, p_v = objective.project_E(u), objective.project_E(v)
    assert torch.equal(u, u_copy)  # the input is left alone
    assert torch.linalg.vector_norm(objective.project_E(p_u) - p_u) <= 1e-13 * torch.linalg.vector_norm(u)
    assert abs(float(p_u @ v - u @ p_v)) <= 1e-13 * float(u.norm() * v.norm())
    if spec[-1] == "equivariant":
        assert torch.equal(p_u, u)  # parametrised inside E
    else:
        assert 0.05 < float(p_u.norm() / u.norm()) < 0.95  # a proper subspace, neither 0 nor everything
    # Whatever the coordinates, the projected parameters make every measured layer equivariant.
    objective.set(p_u)
    with torch.no_grad():
        weights = objective.model.layer_weights()
    for name, weight in weights.items():
        assert objective.model.layer_dist(name, weight) <= 1e-12 * float(weight.norm()), name


@pytest.mark.parametrize("spec", [s for s in PROJECTED_MODELS if s[-1] != "nonunitary" and s[-1] != "equivariant"],
                         ids=lambda s: "-".join(s))
def test_project_parameters_agrees_with_project_layer_in_weight_space(spec):
    """For an orthonormal parametrisation, projecting the parameters is projecting the layers."""
    objective = model_objective(spec)
    u = random_parameters(objective, 3)
    objective.set(u)
    model = objective.model
    expected = {name: model.project_layer(name, w).detach() for name, w in model.layer_weights().items()}
    objective.set(objective.project_E(u))
    for name, weight in model.layer_weights().items():
        assert torch.allclose(weight, expected[name], rtol=0, atol=1e-13 * float(expected[name].abs().max())), name


# -- claim 1 and the block structure ---------------------------------------------------------------


@pytest.mark.parametrize("group", GROUP_NAMES)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_claim1_identity_holds_to_round_off_for_every_group(group, loss):
    objective = group_objective(group, n=4, channels=3, loss=loss)
    result = claim1(objective)
    assert result["dist_E"] <= 1e-15
    assert result["aug_grad_norm"] > 1e-3  # a generic point of E, far from stationary
    assert result["identity_residual"] <= 1e-12
    assert result["aug_grad_off_E"] <= 1e-12 * result["aug_grad_norm"]
    # The Nom gradient itself does leave E: the identity is a property of the orbit average.
    assert result["plain_grad_norm"] >= result["projected_grad_norm"] * (1 + 1e-6)


@pytest.mark.parametrize("config,holds", [("cross", True), ("skew", False), ("nonunitary", False)])
def test_claim1_identity_for_the_cnn_configurations(config, holds):
    result = claim1(cnn_objective(config, channels="2,3,3"))
    assert result["dist_E"] <= 1e-15
    if holds:
        assert result["identity_residual"] <= 1e-12
        assert result["aug_grad_off_E"] <= 1e-12 * result["aug_grad_norm"]
    else:
        assert result["identity_residual"] >= 1e-4
    if config == "skew":
        # The incompatible support: the augmented gradient has a part off E ∩ L.
        assert result["aug_grad_off_E"] >= 1e-4 * result["aug_grad_norm"]


def test_gradients_and_hessian_vector_products_match_dense_autograd(dense):
    objective, _, H, hessian_aug, gradients = dense
    v = random_parameters(objective, 4)
    for augmented, gradient, hessian in ((False, gradients[0], H), (True, gradients[1], hessian_aug)):
        _, accuracy, grad = objective.loss_and_grad(augmented)
        assert torch.linalg.vector_norm(grad - gradient) <= 1e-13 * torch.linalg.vector_norm(gradient)
        assert 0.0 <= accuracy <= 1.0
        hv = objective.hvp(v, augmented)
        assert torch.linalg.vector_norm(hv - hessian @ v) <= 1e-11 * torch.linalg.vector_norm(hessian @ v)
    assert torch.allclose(H, H.T, atol=1e-10 * float(H.abs().max()))


def test_hessian_block_structure_dense_and_on_random_vectors(dense):
    objective, P, H, hessian_aug, _ = dense
    Q = torch.eye(objective.dim, dtype=torch.float64) - P
    scale = torch.linalg.matrix_norm(hessian_aug, ord=2)
    assert torch.linalg.matrix_norm(P @ hessian_aug @ Q, ord=2) <= 1e-12 * scale
    assert torch.linalg.matrix_norm(P @ (hessian_aug - H) @ P, ord=2) <= 1e-12 * scale
    # The blocks are not trivially zero: the Nom Hessian does couple E and E⊥.
    assert torch.linalg.matrix_norm(P @ H @ Q, ord=2) >= 1e-3 * scale
    result = block_structure(objective, torch.Generator().manual_seed(5))
    assert result["off_diagonal"] <= 1e-12
    assert result["E_block"] <= 1e-12


def test_block_structure_fails_for_the_skew_support():
    result = block_structure(cnn_objective("skew"), torch.Generator().manual_seed(5))
    assert max(result.values()) >= 1e-4


# -- Lanczos against dense spectra -----------------------------------------------------------------


def assert_ritz_values_match(ritz, dense_values, k, tolerance):
    """The lowest and the largest Ritz values are the dense extremes, each of the k lowest is a dense
    eigenvalue, and no distinct dense eigenvalue below the k-th Ritz value was skipped (a single Krylov
    space finds one copy of each repeated eigenvalue)."""
    assert abs(float(ritz[0] - dense_values[0])) <= tolerance
    assert abs(float(ritz[-1] - dense_values[-1])) <= tolerance
    for value in ritz[:k]:
        assert float((dense_values - value).abs().min()) <= tolerance
    below = dense_values[dense_values <= ritz[k - 1] + tolerance]
    for value in below:
        assert float((ritz[:k] - value).abs().min()) <= tolerance


def test_lanczos_spectra_equal_the_dense_spectra_of_the_blocks(dense):
    objective, P, H, hessian_aug, _ = dense
    U_E, u_perp = subspace_bases(P)
    blocks = {"E": torch.linalg.eigvalsh(U_E.T @ H @ U_E), "perp": torch.linalg.eigvalsh(u_perp.T @ hessian_aug @ u_perp)}
    result = spectra(objective, k=3, steps=60, generator=torch.Generator().manual_seed(6))
    for name, values in blocks.items():
        spectrum = result[name]
        scale = float(values.abs().max())
        ritz = torch.cat([spectrum.lowest, torch.tensor([spectrum.largest], dtype=torch.float64)])
        assert_ritz_values_match(ritz, values, 3, 1e-8 * scale)
        # Ritz vectors: unit, inside their subspace, with the residuals that the tridiagonal predicts.
        project = objective.project_E if name == "E" else objective.project_perp
        hessian = H if name == "E" else hessian_aug
        for value, vector, residual in zip(spectrum.lowest, spectrum.lowest_vectors, spectrum.lowest_residuals):
            assert abs(float(vector.norm()) - 1) <= 1e-12
            assert torch.linalg.vector_norm(vector - project(vector)) <= 1e-12
            true_residual = torch.linalg.vector_norm(project(hessian @ vector) - value * vector)
            assert float(true_residual) <= float(residual) + 1e-9 * scale


def test_lanczos_breaks_down_on_an_invariant_subspace_and_finds_each_distinct_eigenvalue():
    generator = torch.Generator().manual_seed(7)
    eigenvalues = torch.tensor([-2.0, -2.0, 0.5, 1.0, 1.0, 1.0, 3.0, 7.0], dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator, dtype=torch.float64))
    A = basis @ torch.diag(eigenvalues) @ basis.T
    run = lanczos(lambda v: A @ v, torch.randn(8, generator=generator, dtype=torch.float64), steps=8)
    assert run.breakdown and run.krylov_dim == 5
    assert torch.allclose(run.values, eigenvalues.unique(), atol=1e-12)
    for value, vector, residual in zip(run.values, run.vectors, run.residuals):
        assert float(torch.linalg.vector_norm(A @ vector - value * vector)) <= 1e-12
        assert float(residual) <= 1e-12
    # Restricted by a projector, the spectrum is that of the compression, without the complement's zeros.
    keep = basis[:, 2:5]  # the eigenvectors of 0.5, 1.0, 1.0
    restricted = lanczos(lambda v: A @ v, torch.ones(8, dtype=torch.float64), steps=8,
                         project=lambda v: keep @ (keep.T @ v))
    assert torch.allclose(restricted.values, torch.tensor([0.5, 1.0], dtype=torch.float64), atol=1e-12)


# -- a constructed problem with known answers ------------------------------------------------------


def fourier_projectors(m):
    """Projectors onto the real isotypic components of Z_m acting on R^m by cyclic shifts (m odd): the
    constants, then the (cos, sin) planes of frequencies 1 .. (m-1)/2. They are circulant, so they commute
    with the shifts."""
    shift = torch.arange(m)[:, None] - torch.arange(m)[None, :]
    projectors = [torch.full((m, m), 1.0 / m, dtype=torch.float64)]
    for j in range(1, (m - 1) // 2 + 1):
        projectors.append(2.0 / m * torch.cos(2 * math.pi * j * shift.double() / m))
    return projectors


class CyclicQuartic(Objective):
    """R(θ) = ½ θᵀQθ − bᵀθ + ¼ Σ_i c_i (θ_i − a_i)⁴ on θ ∈ R^{r×m}, G = Z_m shifting the m axis (r copies of
    the regular representation); E is the θ constant along m, and R_aug(θ) = mean_g R(gθ) literally.

    Q = Q̄ + S with Q̄ = Σ_j A_j ⊗ Π_j commuting with G (Π_j the isotypic projectors, A_j symmetric r×r
    with chosen eigenvalues) and S = Z − mean_g gᵀZg, whose group average vanishes; a ∈ E, b = Qa + w with
    w ∈ E⊥, c_i > 0 not constant along orbits. Then:
    - ∇R(a) = −w ∈ E⊥, so a is stationary on E (Nom is pushed off E there; Aug is not: mean_g gᵀw = Π_E w = 0);
    - R on E is ½θᵀQ̄θ − bᵀθ + a convex quartic, with Q̄|_E = A_0 ≻ 0: a is its unique minimiser;
    - the quartic's Hessian vanishes at a, so H(a) = Q and hessian_aug(a) = mean_g gᵀQg = Q̄: H_E has the
      eigenvalues of A_0, H_⊥ those of A_1, A_2, ... each twice (frequencies j ≥ 1 are 2-dimensional).
    R is not invariant (S, w and c break the symmetry), so every identity is exercised, and it is not
    quadratic, so the stationary point is found by genuine minimisation.
    """

    def __init__(self, eigenvalues, m=5, seed=0):
        generator = torch.Generator().manual_seed(seed)
        r = len(eigenvalues[0])

        def randn(*shape):
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        projectors = fourier_projectors(m)
        q_bar = torch.zeros(r * m, r * m, dtype=torch.float64)
        for values, projector in zip(eigenvalues, projectors):
            V, _ = torch.linalg.qr(randn(r, r))
            q_bar += torch.kron(V @ torch.diag(torch.tensor(values, dtype=torch.float64)) @ V.T, projector)
        eye_r, eye_m = torch.eye(r, dtype=torch.float64), torch.eye(m, dtype=torch.float64)
        self.elements = [torch.kron(eye_r, torch.roll(eye_m, k, 0)) for k in range(m)]  # element 0: identity
        Z = randn(r * m, r * m)
        Z = Z + Z.T
        S = Z - sum(g.T @ Z @ g for g in self.elements) / m
        self.Q, self.Q_bar = q_bar + S, q_bar
        self.Pi_E = torch.kron(eye_r, projectors[0])
        self.a = self.Pi_E @ randn(r * m)
        w = randn(r * m)
        self.b = self.Q @ self.a + w - self.Pi_E @ w
        self.c = 0.5 + torch.rand(r * m, generator=generator, dtype=torch.float64)
        self.dim = r * m
        self.theta = self.a + 0.3 * self.Pi_E @ randn(r * m)  # a start in E, away from the minimiser

    def get(self):
        return self.theta.clone()

    def set(self, theta):
        self.theta = theta.clone()

    def project_E(self, v):
        return self.Pi_E @ v

    def _orbit(self, augmented):
        return self.elements if augmented else self.elements[:1]

    def _loss_and_grad(self, augmented):
        loss, grad = 0.0, torch.zeros(self.dim, dtype=torch.float64)
        for g in self._orbit(augmented):
            x = g @ self.theta
            off = x - self.a
            loss += float(0.5 * x @ self.Q @ x - self.b @ x + 0.25 * (self.c * off**4).sum())
            grad += g.T @ (self.Q @ x - self.b + self.c * off**3)
        count = len(self._orbit(augmented))
        return loss / count, float("nan"), grad / count

    def _hvp(self, v, augmented):
        hv = torch.zeros(self.dim, dtype=torch.float64)
        for g in self._orbit(augmented):
            curvature = 3 * self.c * (g @ self.theta - self.a) ** 2
            hv += g.T @ (self.Q @ (g @ v) + curvature * (g @ v))
        return hv / len(self._orbit(augmented))


EIGENVALUES = [[0.2, 0.7, 1.2, 3.0, 5.0, 7.0], [-1.0, 0.5, 1.0, 2.0, 4.0, 8.0], [0.3, 1.5, 2.5, 3.0, 6.0, 9.0]]
PERP_DISTINCT = sorted(set(EIGENVALUES[1] + EIGENVALUES[2]))


@pytest.fixture(scope="module")
def stationary_problem():
    problem = CyclicQuartic(EIGENVALUES)
    result = find_stationary_point(problem, tolerance=1e-12, max_iterations=500)
    return problem, result


def test_constructed_problem_satisfies_the_premises():
    problem = CyclicQuartic(EIGENVALUES)
    result = claim1(problem)
    assert result["identity_residual"] <= 1e-13
    assert result["plain_grad_norm"] >= 1.5 * result["projected_grad_norm"]  # Nom leaves E
    assert max(block_structure(problem, torch.Generator().manual_seed(8)).values()) <= 1e-13
    assert float((problem.Q - problem.Q_bar).abs().max()) > 0.5  # R itself is far from invariant


@pytest.mark.parametrize("method", ["lbfgs", "gd"])
def test_find_stationary_point_converges_to_the_known_minimiser_on_E(method):
    problem = CyclicQuartic(EIGENVALUES)
    start_distance = float((problem.get() - problem.a).norm())
    calls = []
    result = find_stationary_point(problem, tolerance=1e-10, max_iterations=3000, method=method, block=7,
                                   on_block=lambda *args: calls.append(args))
    assert result.converged and not result.stalled
    assert result.final_grad_norm <= 1e-10 * result.start_grad_norm
    theta = problem.get()
    assert float((theta - problem.a).norm()) <= 1e-8 * start_distance
    assert float((theta - problem.project_E(theta)).norm()) <= 1e-14 * float(theta.norm())
    iterations = [c[0] for c in calls]
    assert iterations[0] == 0 and iterations[-1] == result.iterations
    assert iterations == sorted(iterations) and all(b - a <= 7 for a, b in zip(iterations, iterations[1:]))
    assert calls[-1][3] == result.final_grad_norm and math.isnan(calls[-1][2])
    if method == "gd":  # 1/λ_max(H_E) at the start, where the quartic term adds to the curvature
        start = CyclicQuartic(EIGENVALUES)
        U_E, _ = subspace_bases(start.Pi_E)
        H = start.Q + torch.diag(3 * start.c * (start.theta - start.a) ** 2)
        assert result.lr == pytest.approx(1 / float(torch.linalg.eigvalsh(U_E.T @ H @ U_E)[-1]), rel=1e-10)
    # Claim 1 at the stationary point: Aug is stationary there too, Nom is not.
    c1 = claim1(problem)
    assert c1["aug_grad_norm"] <= 1e-9 and c1["plain_grad_norm"] > 0.1


def test_spectra_recover_the_known_eigenvalues(stationary_problem):
    problem, _ = stationary_problem
    result = spectra(problem, k=3, steps=40, generator=torch.Generator().manual_seed(9))
    E, perp = result["E"], result["perp"]
    # The Krylov spaces are invariant after one copy of each distinct eigenvalue (6 on E, 12 on E⊥).
    assert E.breakdown and E.krylov_dim == 6
    assert perp.breakdown and perp.krylov_dim == len(PERP_DISTINCT) == 12
    assert torch.allclose(E.lowest, torch.tensor(EIGENVALUES[0][:3], dtype=torch.float64), atol=1e-10)
    assert abs(E.largest - 7.0) <= 1e-10
    assert torch.allclose(perp.lowest, torch.tensor(PERP_DISTINCT[:3], dtype=torch.float64), atol=1e-10)
    assert abs(perp.largest - 9.0) <= 1e-10
    # Regularised augmentation shifts H_⊥ by γ and leaves H_E alone.
    problem.reg = 1.5
    try:
        shifted = spectra(problem, k=3, steps=40, generator=torch.Generator().manual_seed(9))
    finally:
        problem.reg = 0.0
    assert torch.allclose(shifted["perp"].lowest, perp.lowest + 1.5, atol=1e-10)
    assert torch.allclose(shifted["E"].lowest, E.lowest, atol=1e-10)


LR = 0.1


def test_perturbation_along_the_lowest_transversal_eigenvector_grows_at_the_predicted_rate(stationary_problem):
    problem, _ = stationary_problem
    theta_star = problem.get()
    perp = spectra(problem, k=1, steps=40, generator=torch.Generator().manual_seed(10))["perp"]
    lam_min = float(perp.lowest[0])
    series = perturbation_run(problem, perp.lowest_vectors[0], 1e-7, LR, 40)
    assert series.shape == (41,) and abs(float(series[0]) - 1e-7) <= 1e-12
    predicted = predicted_factor(LR, lam_min)
    assert predicted == pytest.approx(1.1, abs=1e-9)
    assert measured_factor(series) == pytest.approx(predicted, rel=1e-2)
    steps = series[1:] / series[:-1]
    assert torch.allclose(steps, torch.full_like(steps, predicted), rtol=1e-2)  # every step, not only on average
    assert torch.equal(problem.get(), theta_star) and problem.reg == 0.0  # restored

    # With γ > -λ_min the same perturbation decays, at |1 - η(λ_min + γ)| per step.
    gamma = 1.5
    damped = perturbation_run(problem, perp.lowest_vectors[0], 1e-7, LR, 40, reg=gamma)
    assert predicted_factor(LR, lam_min, gamma) == pytest.approx(0.95, abs=1e-9)
    assert measured_factor(damped) == pytest.approx(predicted_factor(LR, lam_min, gamma), rel=1e-2)
    assert float(damped[-1]) < 0.2 * float(damped[0])
    assert problem.reg == 0.0


def test_a_random_transversal_perturbation_grows_and_settles_to_the_lowest_rate(stationary_problem):
    problem, _ = stationary_problem
    direction = random_unit(problem, problem.project_perp, torch.Generator().manual_seed(11))
    series = perturbation_run(problem, direction, 1e-8, LR, 100)
    assert float(series[-1]) > 10 * float(series[0])
    assert measured_factor(series, skip=70) == pytest.approx(predicted_factor(LR, -1.0), rel=1e-3)
    # Early on the stable eigen-directions still weigh in: the first steps are slower than λ_min's rate.
    assert measured_factor(series[:6]) < 0.99 * predicted_factor(LR, -1.0)


class Kink(Objective):
    """R(θ) = |θ_0| + θ_1² with E everything: the minimiser is on a kink, where no gradient vanishes (as
    on the kinks of a leaky ReLU)."""

    dim = 2

    def __init__(self):
        self.theta = torch.tensor([0.7, 0.3], dtype=torch.float64)

    def get(self):
        return self.theta.clone()

    def set(self, theta):
        self.theta = theta.clone()

    def project_E(self, v):
        return v

    def _loss_and_grad(self, augmented):
        t = self.theta
        return float(t[0].abs() + t[1] ** 2), float("nan"), torch.stack([torch.sign(t[0]), 2 * t[1]])

    def _hvp(self, v, augmented):
        return torch.stack([torch.zeros_like(v[0]), 2 * v[1]])


def test_lbfgs_reports_a_stall_at_a_kink_instead_of_running_to_the_cap():
    problem = Kink()
    result = find_stationary_point(problem, tolerance=1e-8, max_iterations=5000, block=10)
    assert result.stalled and not result.converged
    assert result.iterations < 100 and result.evaluations < 1000
    assert abs(float(problem.get()[0])) <= 1e-6  # it did get to the kink


# -- a real model ----------------------------------------------------------------------------------


def test_find_stationary_point_on_a_group_net_stays_in_E():
    objective = group_objective("rot", n=4, channels=4, samples=32, chunk_size=64)
    calls = []
    result = find_stationary_point(objective, tolerance=1e-2, max_iterations=300, block=10,
                                   on_block=lambda *args: calls.append(args))
    assert not result.stalled
    assert result.converged or result.iterations == 300
    assert result.final_grad_norm <= 1e-2 * result.start_grad_norm or result.iterations == 300
    assert calls[-1][1] < 0.1 * calls[0][1]  # the loss came down
    assert 0.0 <= calls[-1][2] <= 1.0
    theta = objective.get()
    assert float(objective.project_perp(theta).norm()) <= 1e-12 * float(theta.norm())
