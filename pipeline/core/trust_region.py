"""Trust-region steps on a Krylov space (Gould, Lucidi, Roma and Toint 1999): the Newton stage of the search
for A* (``pipeline.core.stationary_search``) takes its steps from a :class:`KrylovModel` of R on E, built from
Hessian-vector products only, and each trust-region subproblem on it is solved exactly
(:func:`trust_region_on`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class NewtonStep:
    """What one trust-region Newton iteration did (for the record and for tests)."""

    accepted: bool
    ratio: float  # actual over predicted decrease of R (NaN when both are below round-off)
    step_norm: float
    radius: float  # the trust radius for the next iteration
    hessian_products: int
    negative_curvature: bool  # the Krylov space held a direction of negative curvature of R on E


class KrylovModel:
    """The quadratic model m(p) = g·p + ½ p·H p of R at one point, on a Krylov space of H from g, from which
    trust-region steps of any radius are taken (the generalised Lanczos trust-region method of Gould, Lucidi,
    Roma and Toint 1999).

    Lanczos builds an orthonormal basis Q of the Krylov space with H restricted to it tridiagonal (T), and each
    subproblem (minimise m over ‖p‖ ≤ radius) is solved exactly on that space. Unlike truncated CG, which stops
    at the first direction of negative curvature it happens to meet and otherwise ignores it, the exact solution
    uses every negative direction the space holds, and Lanczos finds the extreme eigenvalues, the most negative
    among them, first: that is what takes the search off a saddle of R on E, however weakly curved. The space
    grows until the model's gradient along the next Lanczos vector, β_j |y_j|, has fallen below
    ``relative_tolerance`` × ‖g‖ for the radius asked (then the solution is nearly that of the whole space), or
    to ``max_iterations`` products. A step that the trust region rejects is retried with a smaller radius on
    the same space: its products are not taken again.
    """

    def __init__(self, hessian: Callable[[torch.Tensor], torch.Tensor], grad: torch.Tensor, max_iterations: int,
                 relative_tolerance: float):
        self.hessian, self.relative_tolerance = hessian, relative_tolerance
        self.norm_g = float(torch.linalg.vector_norm(grad))
        self.basis = grad.new_empty(min(max_iterations, len(grad)), len(grad))  # rows filled before they are read
        self.alphas: list[float] = []
        self.betas: list[float] = []
        self.exhausted = self.norm_g == 0
        if not self.exhausted:
            self.basis[0] = grad / self.norm_g

    @property
    def products(self) -> int:
        return len(self.alphas)

    def step(self, radius: float) -> tuple[torch.Tensor, float, float]:
        """(p, the model's predicted decrease −m(p), the lowest eigenvalue of T: an upper bound of λ_min(H)) for
        this radius, the space extended as far as the radius needs."""
        if self.norm_g == 0:
            return torch.zeros_like(self.basis[0]), 0.0, math.nan
        y = self._solve(radius) if self.alphas else None
        while not self.exhausted and (y is None or self._beta_last * abs(float(y[-1])) > self.relative_tolerance
                                      * self.norm_g):
            self._extend()
            y = self._solve(radius)
        assert y is not None  # the space has at least one vector once extended
        T = _tridiagonal(self.alphas, self.betas)
        p = self.basis[: len(self.alphas)].T @ y.to(self.basis.dtype)
        predicted = -float(self.norm_g * y[0] + 0.5 * (y @ (T @ y)))
        return p, predicted, float(torch.linalg.eigvalsh(T)[0])

    @property
    def _beta_last(self) -> float:
        return self.betas[len(self.alphas) - 1] if len(self.betas) >= len(self.alphas) else 0.0

    def _extend(self) -> None:
        j = len(self.alphas)
        w = self.hessian(self.basis[j])
        self.alphas.append(float(self.basis[j] @ w))
        span = self.basis[: j + 1]
        for _ in range(2):  # full re-orthogonalisation, twice (see ``lanczos``)
            w = w - span.T @ (span @ w)
        beta = float(torch.linalg.vector_norm(w))
        self.betas.append(beta)
        if beta <= 1e-14 * max(map(abs, self.alphas)) or j + 1 == len(self.basis):
            self.exhausted = True  # the space is invariant, or as large as allowed
            self.betas[-1] = 0.0 if beta <= 1e-14 * max(map(abs, self.alphas)) else beta
        else:
            self.basis[j + 1] = w / beta

    def _solve(self, radius: float) -> torch.Tensor:
        return _trust_region_on(_tridiagonal(self.alphas, self.betas), self.norm_g, radius)


def _tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T


def _trust_region_on(T: torch.Tensor, norm_g: float, radius: float) -> torch.Tensor:
    """argmin over ‖y‖ ≤ radius of norm_g·y₀ + ½ yᵀ T y, exactly (T small and symmetric).

    The solution is y(σ) = −(T + σI)⁻¹ norm_g e₁ with σ ≥ max(0, −λ_min(T)) and σ (‖y‖ − radius) = 0. In the
    eigenbasis of T, ‖y(σ)‖ falls monotonically in σ, so σ is found by bisection. In the "hard case", where e₁
    has no component along the lowest eigenvector, the boundary is reached by adding that eigenvector.
    """
    values, vectors = torch.linalg.eigh(T)
    b = norm_g * vectors[0]  # the coefficients of norm_g e₁ in the eigenbasis
    if values[0] > 0:
        inside = -(vectors @ (b / values))
        if float(torch.linalg.vector_norm(inside)) <= radius:
            return inside
    low = max(0.0, -float(values[0]))

    def length(sigma: float) -> float:
        return float(torch.linalg.vector_norm(b / (values + sigma)))

    scale = max(1.0, float(values.abs().max()))
    if abs(float(b[0])) <= 1e-12 * norm_g and length(low + 1e-14 * scale) < radius:  # the hard case
        shifted = values[1:] - values[0]
        y = -(vectors[:, 1:] @ (b[1:] / shifted)) if len(shifted) else torch.zeros_like(b)
        extra = math.sqrt(max(radius**2 - float(y @ y), 0.0))
        return y + extra * vectors[:, 0]
    high = low + float(torch.linalg.vector_norm(b)) / radius + scale
    low = low + 1e-300
    for _ in range(200):
        middle = 0.5 * (low + high)
        if length(middle) > radius:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * high:
            break
    return -(vectors @ (b / (values + high)))
