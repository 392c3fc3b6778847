"""Experiment S (docs/science.md §5): equivariant stationary points and their stability.

Setting. θ is the flat vector of every parameter of a network. A finite group G acts on the inputs by
pixel permutations, and through them on θ; E is the subspace of equivariant θ, Π_E the orthogonal
projector onto it *in parameter coordinates* and Π_⊥ = I − Π_E, so dist_E(θ) = ‖Π_⊥ θ‖. R is the mean loss
on the plain data (the Nom objective); R_aug is the mean over the samples and over every element g of G of
the loss on ρ(g)x, labels unchanged (exact orbit augmentation).

Why the stationary points are computable. If the admissible layers L are compatible with E and L is
parametrised by an orthonormal basis, showing the network ρ(g)x is the same as showing it x with the
weights moved by g⁻¹, an orthogonal map of θ that fixes E pointwise. R_aug is then the group average of
R(g·θ), and at every θ ∈ E three identities hold, exactly up to round-off:

1. ∇R_aug(θ) = Π_E ∇R(θ), because averaging gᵀ over G is the projection onto the vectors that G fixes.
   A point of E is stationary for Aug exactly when projected (Equi) gradient descent stops there: the
   equivariant stationary points of Equi and Aug coincide (claim 1).
2. H_aug, the Hessian of R_aug, commutes with the action, so it maps E into E and E⊥ into E⊥, and on E it
   agrees with the Equi Hessian H_E = Π_E ∇²R Π_E. All that Aug adds is the transversal block
   H_⊥ = Π_⊥ H_aug Π_⊥: a point that is stable for Equi (H_E ⪰ 0) is unstable for Aug when
   λ_min(H_⊥) < 0 (claim 3).
3. Linearised about a stationary θ* ∈ E, a step η of Aug gradient descent maps a small δ ∈ E⊥ to
   (I − η H_⊥) δ. Along the eigenvector of λ_min(H_⊥) dist_E is multiplied by |1 − η λ_min| per step.
   Adding (γ/2)‖Π_⊥ θ‖² to R_aug (regularised augmentation) adds γ Π_⊥ θ to the gradient and γ to H_⊥ and
   changes nothing on E; for γ > −λ_min the same perturbation decays, by |1 − η (λ_min + γ)| per step.

For a kernel support that the rotations do not preserve (CNN ``skew``) or a non-orthogonal basis of L
(CNN ``nonunitary``) the premises fail, and the same measurements show by how much the identities fail.

Where the parts live: the objectives R and R_aug (what is differentiated and how) are
``pipeline.core.objectives``; Lanczos (spectra from Hessian-vector products, never a dense Hessian) and the
certified spectra are ``pipeline.core.certificates``; the search for the stationary point A* is
``pipeline.core.stationary_search``. This module holds the measurements at A*, in the order of the
experiment: claim 1, the block structure, the spectra and the perturbation dynamics. Everything is meant
for float64: the identities are checked at round-off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.core.certificates import LanczosResult, lanczos
from pipeline.core.objectives import Objective, random_unit

# -- claim 1 ---------------------------------------------------------------------------------------


def relative(difference: float, scale: float) -> float:
    """difference / scale, where an exact zero over an exact zero (a convex model solved exactly) is 0."""
    if scale == 0:
        return 0.0 if difference == 0 else math.inf
    return difference / scale


def claim1(objective: Objective) -> dict[str, float]:
    """The identity ∇R_aug = Π_E ∇R at the current θ (in E).

    ``identity_residual`` is relative to ‖∇R_aug‖ as docs/science.md §5 states it. At a stationary point both sides
    vanish and that ratio divides round-off by a small number, so ``identity_residual_vs_plain`` also
    relates the difference to ‖∇R‖, the scale at which the gradients are computed. ``aug_grad_off_E`` is
    ‖Π_⊥ ∇R_aug‖: zero by the identity, and what keeps A* from being stationary for Aug when it fails.
    """
    _, _, plain = objective.loss_and_grad(augmented=False)
    _, _, aug = objective.loss_and_grad(augmented=True)
    projected = objective.project_E(plain)
    difference = float(torch.linalg.vector_norm(aug - projected))
    aug_norm, plain_norm = float(torch.linalg.vector_norm(aug)), float(torch.linalg.vector_norm(plain))
    theta = objective.get()
    return {
        "aug_grad_norm": aug_norm,
        "plain_grad_norm": plain_norm,
        "projected_grad_norm": float(torch.linalg.vector_norm(projected)),
        "identity_residual": relative(difference, aug_norm),
        "identity_residual_vs_plain": relative(difference, plain_norm),
        "aug_grad_off_E": float(torch.linalg.vector_norm(objective.project_perp(aug))),
        "dist_E": float(torch.linalg.vector_norm(objective.project_perp(theta)) / torch.linalg.vector_norm(theta)),
    }


# -- block structure of H_aug ----------------------------------------------------------------------


def block_structure(objective: Objective, generator: torch.Generator | None = None) -> dict[str, float]:
    """H_aug on one random unit vector of each side, at the current θ (in E); both are round-off when the
    premises hold.

    ``off_diagonal``: ‖Π_E H_aug v‖ / ‖H_aug v‖ for v ∈ E⊥ (H_aug maps E⊥ into E⊥; by symmetry then E into E).
    ``E_block``: ‖H_aug u − Π_E H u‖ / ‖H_aug u‖ for u ∈ E (the E-block is the Equi Hessian H_E).
    """
    v = random_unit(objective, objective.project_perp, generator)
    u = random_unit(objective, objective.project_E, generator)
    hv = objective.hvp(v, augmented=True)
    hu_aug = objective.hvp(u, augmented=True)
    hu = objective.hvp(u, augmented=False)
    norm = torch.linalg.vector_norm
    return {
        "off_diagonal": float(norm(objective.project_E(hv)) / norm(hv)),
        "E_block": float(norm(hu_aug - objective.project_E(hu)) / norm(hu_aug)),
    }


# -- spectra of H_E and H_⊥ ------------------------------------------------------------------------


@dataclass
class Spectrum:
    """The ends of the spectrum of one block, from one Lanczos run."""

    lowest: torch.Tensor  # (k,) the k lowest Ritz values, ascending
    lowest_vectors: torch.Tensor  # (k, dim)
    lowest_residuals: torch.Tensor  # (k,)
    largest: float
    largest_vector: torch.Tensor  # (dim,)
    largest_residual: float
    krylov_dim: int
    breakdown: bool

    @classmethod
    def of(cls, run: LanczosResult, k: int) -> Spectrum:
        return cls(run.values[:k], run.vectors[:k], run.residuals[:k], float(run.values[-1]), run.vectors[-1],
                   float(run.residuals[-1]), run.krylov_dim, run.breakdown)


def spectra(objective: Objective, k: int = 3, steps: int = 60,
            generator: torch.Generator | None = None) -> dict[str, Spectrum]:
    """``"E"``: H_E = Π_E ∇²R Π_E on E (from R: |G| times cheaper than H_aug, and equal to its E-block when
    the premises hold); ``"perp"``: H_⊥ = Π_⊥ H_aug Π_⊥ on E⊥, ``reg`` included. At the current θ."""
    blocks = {"E": (objective.project_E, False), "perp": (objective.project_perp, True)}
    result = {}
    for name, (project, augmented) in blocks.items():
        def restricted(v: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor] = project,
                       augmented: bool = augmented) -> torch.Tensor:
            return objective.hvp(project(v), augmented)

        run = lanczos(restricted, random_unit(objective, project, generator), steps, project)
        result[name] = Spectrum.of(run, k)
    return result


# -- perturbation dynamics -------------------------------------------------------------------------


def perturbation_run(objective: Objective, direction: torch.Tensor, epsilon: float, lr: float, steps: int,
                     reg: float = 0.0, anchored: bool = True) -> torch.Tensor:
    """dist_E = ‖Π_⊥ θ‖ along ``steps`` steps of Aug-orbit gradient descent from θ* + ε u, θ* the current θ.

    u is ``direction`` projected onto E⊥ and normalised (a Ritz vector lies in E⊥ only up to round-off).
    ``reg`` is the γ of the regularised augmentation for this run, in place of the objective's own.

    ``anchored``: every step subtracts g* = Π_E ∇R_aug(θ*), so that θ* is an exact fixed point of the steps.
    A* is never exactly stationary, and without the anchor the run drifts along E by η‖g*‖ a step (hundreds of
    times ε in practice), carrying the point to where H_⊥ differs: the growth measured is then mostly drift.
    With it the deviation from θ* obeys δ ← (I − η H_aug(θ*)) δ to first order in ε, and its E⊥ part grows
    by exactly |1 − η λ| per step along an eigenvector of H_⊥. Only the part in E is subtracted: where the
    premises fail, ∇R_aug(θ*) also has a part off E, which moves the point off E by itself, and that stays
    visible. Returns the steps + 1 distances, before the first step and after each; θ* and ``reg`` are restored.
    """
    theta_star, saved_reg = objective.get(), objective.reg
    u = objective.project_perp(direction)
    u = u / torch.linalg.vector_norm(u)
    distances = []
    try:
        objective.reg = reg
        anchor = objective.project_E(objective.loss_and_grad(augmented=True)[2]) if anchored else 0.0
        theta = theta_star + epsilon * u
        objective.set(theta)
        distances.append(torch.linalg.vector_norm(objective.project_perp(theta)))
        for _ in range(steps):
            _, _, grad = objective.loss_and_grad(augmented=True)
            theta = theta - lr * (grad - anchor)
            objective.set(theta)
            distances.append(torch.linalg.vector_norm(objective.project_perp(theta)))
    finally:
        objective.reg = saved_reg
        objective.set(theta_star)
    return torch.stack(distances).cpu().to(torch.float64)


def predicted_factor(lr: float, eigenvalue: float, reg: float = 0.0) -> float:
    """The linearised change of dist_E per step along the eigenvector of ``eigenvalue`` of H_⊥."""
    return abs(1.0 - lr * (eigenvalue + reg))


def measured_factor(series: torch.Tensor, skip: int = 0) -> float:
    """The geometric mean change per step of a ``perturbation_run`` series after its first ``skip`` steps,
    (d_K / d_skip)^(1 / (K − skip)). Along an eigenvector every step has the same factor, so this is it;
    from a random direction the lowest eigenvalue takes over only gradually, and a ``skip`` that leaves
    out the mixed start measures the rate it settles to."""
    steps = len(series) - 1 - skip
    if steps < 1:
        raise ValueError(f"need at least one step after skip={skip}, got a series of {len(series)}")
    return float((series[-1] / series[skip]) ** (1.0 / steps))
