"""Certified ends of the spectra of H_E and H_⊥ at a point of E (Experiment S, docs/science.md §5 and §7).

A verdict on claim 3 rests on two signs, and they are certified differently:

- **λ_min(H_⊥) < 0** is proved by any unit vector u of E⊥ with uᵀ H_⊥ u < 0: the Rayleigh quotient bounds
  λ_min from above. Lanczos gives such vectors, but only if they really lie in E⊥: Π_⊥ H_aug Π_⊥ maps the
  E-part of a vector to 0, so a Krylov basis that drifts into E (round-off amplified where the Lanczos
  coefficient β is small) produces a spurious eigenvalue 0 whose "eigenvector" lies in E. Here every Krylov
  vector is projected onto the block's space again after its re-orthogonalisation, every Ritz vector's
  content outside the space is measured and a vector with any is rejected, and the reported residuals
  ‖H u − θ u‖ are computed with a Hessian-vector product of their own, not estimated from the recurrence.
- **H_E ⪰ 0** needs a *lower* bound on λ_min(H_E), which no Krylov method gives: a Ritz value is an upper
  bound, and a Ritz value minus its residual bounds *some* eigenvalue, not the lowest. Where forming it costs
  at most ``dense_limit`` products, H_E is formed in an orthonormal basis of E, one Hessian-vector product per
  basis vector, and its whole spectrum computed (``torch.linalg.eigh``): exact up to the round-off of the
  products, which the asymmetry of the formed matrix measures. Where it does not, the block is reported by
  Lanczos with ``method = "lanczos"`` and its sign is *not* certified.

Lanczos finds the extreme eigenvalues of a block first; eigenvalues near 0 that are tiny against λ_max
converge slowly (in the first version, 80 steps missed two negative eigenvalues of H_⊥ of a CNN at −4e-7
and −7e-7 × λ_max). So a Lanczos run continues until its lowest Ritz pairs have converged or its step
limit is reached, and what it did not find is never read as absent: only a dense spectrum says that a block
has no negative eigenvalue. H_⊥ is formed densely too where that costs at most ``dense_limit`` products of
H_E (its dimension times |G|: each of its products runs over the orbit).

The orthonormal bases come from the group's action itself: where G permutes the parameters (every network
here whose premises hold), E is spanned by the indicator vectors of the orbits, and one projection of a
random vector reveals them (coordinates of one orbit get the same average). The basis is checked against
the projection on fresh random vectors before it is used; where it fails (a parametrisation in which G does
not act by permutations, e.g. the CNN's non-orthogonal basis), no dense block is formed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline import stopping
from pipeline.core.objectives import Objective
from pipeline.core.stationarity import OUTSIDE_TOLERANCE

# Lanczos stops once the estimated residual of each of its lowest Ritz pairs is at most this fraction of the
# Ritz value (or of λ_max, for a Ritz value at round-off): enough to fix a sign and to predict a growth rate.
RITZ_TOLERANCE = 1e-6
RITZ_FLOOR = 1e-12
# Lanczos checks its convergence every this many steps (an eigen-decomposition of the tridiagonal matrix each).
CHECK_EVERY = 10
# Two orbit averages closer than this (relative) belong to one orbit: the averages of one orbit differ by the
# round-off of a sum of |G| terms (about 1e-16). Averages of distinct orbits are random, and among thousands of
# orbits two of them fall within 1e-9 of each other in about one draw of 40 (trans at width 12: 2,760 orbits);
# such a draw merges two orbits, fails the check below and is drawn again (ORBIT_DRAWS times at most).
ORBIT_GAP = 1e-12
ORBIT_DRAWS = 3
BASIS_CHECK = 1e-12


class OrbitBasis:
    """An orthonormal basis of E made of normalised orbit indicators, for a group that permutes coordinates.

    ``orbit[i]`` is the orbit of coordinate i (0 .. dim − 1). The basis vector of orbit o is 1/√|o| on its
    coordinates: ``lift`` maps coefficients to a vector of the whole space, ``restrict`` is its transpose
    (the coefficients of the projection onto E).
    """

    def __init__(self, orbit: torch.Tensor):
        self.orbit = orbit
        self.dim = int(orbit.max()) + 1 if len(orbit) else 0
        self.sizes = torch.bincount(orbit, minlength=self.dim)
        self.scale = self.sizes.double().rsqrt()

    def lift(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Coefficients (..., dim) to vectors (..., D)."""
        scale = self.scale.to(coefficients)
        return (coefficients * scale)[..., self.orbit.to(coefficients.device)]

    def restrict(self, v: torch.Tensor) -> torch.Tensor:
        """Vectors (..., D) to the coefficients (..., dim) of their projections onto E."""
        sums = v.new_zeros(*v.shape[:-1], self.dim).index_add_(-1, self.orbit.to(v.device), v)
        return sums * self.scale.to(v)

    def maps(self, inside: bool, like: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                              Callable[[torch.Tensor], torch.Tensor]]:
        """(coefficients → vector, vector → coefficients) for the orthonormal basis of E (``inside``) or of E⊥."""
        if inside:
            return self.lift, self.restrict
        columns = self.complement(like.dtype, like.device)
        return columns.__matmul__, columns.T.__matmul__

    def complement(self, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
        """An orthonormal basis of E⊥ as the columns of a dense matrix: within every orbit of m coordinates, the
        m − 1 Helmert contrasts (1, …, 1, −j, 0, …)/√(j(j+1)), orthogonal to the orbit's indicator."""
        total = len(self.orbit)
        columns = torch.zeros(total, total - self.dim, dtype=dtype, device=device)
        order = torch.argsort(self.orbit, stable=True)
        members = torch.split(order, self.sizes.tolist())
        column = 0
        for coordinates in members:
            for j in range(1, len(coordinates)):
                norm = math.sqrt(j * (j + 1))
                columns[coordinates[:j], column] = 1.0 / norm
                columns[coordinates[j], column] = -j / norm
                column += 1
        return columns


def orbit_basis(project_E: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor,
                generator: torch.Generator | None = None) -> OrbitBasis | None:
    """The orbit basis of E (see :class:`OrbitBasis`) found from the projection alone, or None where the group
    does not act by permutations of the coordinates (then no such basis spans E)."""
    generator = generator or torch.Generator().manual_seed(0)

    def draw() -> torch.Tensor:
        return (1.0 + torch.rand(like.shape, generator=generator, dtype=torch.float64)).to(like)

    def spans_E(basis: OrbitBasis) -> bool:
        for _ in range(2):
            v = draw() - 1.5
            if float(torch.linalg.vector_norm(project_E(v) - basis.lift(basis.restrict(v)))) > \
                    BASIS_CHECK * float(torch.linalg.vector_norm(v)):
                return False
        return True

    for _ in range(ORBIT_DRAWS):
        averages = project_E(draw())
        values, order = torch.sort(averages.cpu())
        if len(values) == 0 or float(values[0]) <= 0.5:  # a permutation average of entries in [1, 2] lies in [1, 2]
            return None
        gaps = values[1:] - values[:-1] > ORBIT_GAP * values[1:].abs()
        labels = torch.zeros(len(values), dtype=torch.long)
        labels[1:] = torch.cumsum(gaps.long(), 0)
        orbit = torch.empty_like(labels)
        orbit[order] = labels
        basis = OrbitBasis(orbit)
        if spans_E(basis):
            return basis
    return None


@dataclass
class BlockSpectrum:
    """The ends of one block's spectrum, and how they were found.

    ``method``: "dense" (the whole spectrum of the block formed in an orthonormal basis: the lowest value is
    exact up to ``error``, and ``negative`` counts the eigenvalues below −``error``) or "lanczos" (Ritz pairs:
    values are upper bounds of the lowest eigenvalues, lower bounds of the largest; nothing certifies that no
    eigenvalue lies below the lowest). ``residuals`` are ‖H u − θ u‖ computed with products of their own
    (Lanczos) or the round-off bound ``error`` (dense). ``outside``: the largest part outside the block's space
    of any reported vector; ``rejected``: Ritz vectors left out for having such a part."""

    block: str
    method: str
    dim: int  # dimension of the block's space
    lowest: torch.Tensor  # (k,) ascending
    lowest_vectors: torch.Tensor  # (k, D) unit vectors of the whole parameter space
    residuals: torch.Tensor  # (k,)
    largest: float
    largest_vector: torch.Tensor
    largest_residual: float
    steps: int  # Lanczos steps, or the dimension formed densely
    products: int  # Hessian-vector products used
    converged: bool  # Lanczos: its lowest pairs met RITZ_TOLERANCE; dense: always
    breakdown: bool = False
    outside: float = 0.0
    rejected: int = 0
    error: float = 0.0  # dense: the round-off of the formed matrix (its asymmetry, in the spectral norm)
    negative: int = -1  # dense: eigenvalues below −error; -1 where unknown
    values: torch.Tensor | None = None  # dense: the whole spectrum, ascending

    @property
    def lower_bound(self) -> float:
        """A certified lower bound of the block's lowest eigenvalue; −inf where none is known (Lanczos)."""
        return float(self.lowest[0]) - self.error if self.method == "dense" else -math.inf


def dense_block(matvec: Callable[[torch.Tensor], torch.Tensor], lift: Callable[[torch.Tensor], torch.Tensor],
                restrict: Callable[[torch.Tensor], torch.Tensor], dim: int, like: torch.Tensor,
                progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, float]:
    """The block M = Bᵀ H B in an orthonormal basis B (``lift`` = B, ``restrict`` = Bᵀ), one product per basis
    vector, symmetrised; and its round-off, the spectral norm of the asymmetry of the formed matrix (the
    symmetric part of the products' errors is of the same order)."""
    M = like.new_zeros(dim, dim)
    unit = like.new_zeros(dim)
    for i in range(dim):
        stopping.check()
        unit[i] = 1.0
        M[:, i] = restrict(matvec(lift(unit)))
        unit[i] = 0.0
        if progress is not None and (i + 1) % 200 == 0:
            progress(i + 1, dim)
    asymmetry = float(torch.linalg.matrix_norm(M - M.T, ord=2)) / 2 if dim else 0.0
    return (M + M.T) / 2, asymmetry


def dense_spectrum(block: str, M: torch.Tensor, asymmetry: float, lift: Callable[[torch.Tensor], torch.Tensor],
                   k: int) -> BlockSpectrum:
    values, vectors = torch.linalg.eigh(M)
    scale = float(values.abs().max()) if len(values) else 0.0
    # eigh is backward stable: its own error is a small multiple of ε‖M‖ on top of the products' round-off.
    error = asymmetry + len(values) * torch.finfo(M.dtype).eps * scale
    lowest_vectors = torch.stack([lift(vectors[:, i]) for i in range(min(k, len(values)))])
    return BlockSpectrum(block, "dense", len(values), values[:k].clone(), lowest_vectors,
                         torch.full((min(k, len(values)),), error, dtype=M.dtype), float(values[-1]),
                         lift(vectors[:, -1]), error, len(values), len(values), True, error=error,
                         negative=int((values < -error).sum()), values=values)


@dataclass
class LanczosRun:
    values: torch.Tensor  # (m,) Ritz values, ascending
    vectors: torch.Tensor  # (m, D) unit Ritz vectors, projected onto the range
    estimated_residuals: torch.Tensor  # (m,) β_m |s_mi|, the residual in exact arithmetic
    outside: torch.Tensor  # (m,) the part of each Ritz vector outside the range, before its projection
    breakdown: bool
    converged: bool

    @property
    def steps(self) -> int:
        return len(self.values)


def lanczos_run(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
                project: Callable[[torch.Tensor], torch.Tensor] | None = None, lowest: int = 0,
                breakdown_tolerance: float = 1e-10) -> LanczosRun:
    """Lanczos with full re-orthogonalisation on the range of the orthogonal projector ``project``, every Krylov
    vector projected onto that range again after it is re-orthogonalised (a basis vector that carries round-off
    outside the range would otherwise hand it on, amplified by 1/β, to the next).

    With ``lowest`` > 0 the run stops as soon as its ``lowest`` lowest Ritz pairs have converged (estimated
    residual ≤ RITZ_TOLERANCE × |θ|, or RITZ_FLOOR × the largest |θ|), checked every CHECK_EVERY steps;
    otherwise it takes ``steps`` steps. It stops early, too, where the Krylov space becomes invariant
    (``breakdown``): its Ritz pairs are then exact.
    """
    project = project or (lambda v: v)
    steps = min(steps, len(start))
    q = project(start)
    q = q / torch.linalg.vector_norm(q)
    basis = start.new_zeros(steps, len(q))
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    scale, breakdown, converged = 0.0, False, False
    for j in range(steps):
        stopping.check()
        basis[j] = q
        w = project(matvec(q))
        alpha = torch.dot(q, w)
        span = basis[: j + 1]
        for _ in range(2):  # one classical Gram-Schmidt pass is not enough when w is almost in the span
            w = w - span.T @ (span @ w)
        w = project(w)
        beta = torch.linalg.vector_norm(w)
        alphas.append(alpha)
        betas.append(beta)
        scale = max(scale, abs(float(alpha)), float(beta))
        if float(beta) <= breakdown_tolerance * scale:
            breakdown = j + 1 < steps
            break
        if lowest and (j + 1) % CHECK_EVERY == 0 and j + 1 > lowest:
            values, S = _tridiagonal_eigh(alphas, betas)
            if _lowest_converged(values, float(beta) * S[-1].abs(), lowest):
                converged = True
                break
        q = w / beta
    values, S = _tridiagonal_eigh(alphas, betas)
    m = len(values)
    estimated = betas[-1] * S[-1].abs()
    if breakdown:
        converged = True
    elif lowest and not converged:
        converged = _lowest_converged(values, estimated, lowest)
    raw = S.T @ basis[:m]
    raw = raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True)
    vectors = torch.stack([project(v) for v in raw])
    outside = torch.linalg.vector_norm(raw - vectors, dim=1)
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    return LanczosRun(values, vectors, estimated, outside, breakdown, converged)


def _tridiagonal_eigh(alphas: list[torch.Tensor], betas: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    m = len(alphas)
    off = torch.stack(betas[: m - 1]) if m > 1 else alphas[0].new_zeros(0)
    T = torch.diag(torch.stack(alphas)) + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(T)


def _lowest_converged(values: torch.Tensor, residuals: torch.Tensor, count: int) -> bool:
    floor = RITZ_FLOOR * float(values.abs().max())
    wanted = range(min(count, len(values)))
    return all(float(residuals[i]) <= max(RITZ_TOLERANCE * abs(float(values[i])), floor) for i in wanted)


def lanczos_spectrum(block: str, matvec: Callable[[torch.Tensor], torch.Tensor],
                     project: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, k: int, steps: int,
                     dim: int) -> BlockSpectrum:
    """The k lowest Ritz pairs and the largest of one block by :func:`lanczos_run`, Ritz vectors with a part
    outside the block's space left out, and each reported pair's residual computed with a product of its own."""
    run = lanczos_run(matvec, start, steps, project, lowest=k)
    keep = [i for i in range(run.steps) if float(run.outside[i]) <= OUTSIDE_TOLERANCE]
    rejected = run.steps - len(keep)
    chosen = keep[:k]
    top = keep[-1] if keep else run.steps - 1
    vectors = run.vectors[chosen] if chosen else run.vectors[:0]
    values, residuals = [], []
    for v in [*vectors, run.vectors[top]]:
        hv = project(matvec(v))
        theta = torch.dot(v, hv)  # the Rayleigh quotient of the vector as it is, in the block's space
        values.append(theta)
        residuals.append(torch.linalg.vector_norm(hv - theta * v))
    lowest = torch.stack(values[:-1]) if chosen else start.new_zeros(0)
    order = torch.argsort(lowest)
    outside = float(run.outside[chosen + [top]].max()) if run.steps else 0.0
    return BlockSpectrum(block, "lanczos", dim, lowest[order], vectors[order],
                         torch.stack(residuals[:-1])[order] if chosen else start.new_zeros(0), float(values[-1]),
                         run.vectors[top], float(residuals[-1]), run.steps, run.steps + len(chosen) + 1,
                         run.converged, run.breakdown, outside, rejected)


def certified_spectra(objective: Objective, k: int, steps: int, dense_limit: int, generator: torch.Generator | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> dict[str, BlockSpectrum]:
    """``"E"``: H_E = Π_E ∇²R Π_E on E (from R: |G| times cheaper than H_aug, and equal to its E-block where the
    premises hold); ``"perp"``: H_⊥ = Π_⊥ H_aug Π_⊥ on E⊥; at the objective's current θ (``pipeline.core.stationary``
    ``Objective``). Each block is dense where an orbit basis of E exists and forming it costs at most
    ``dense_limit`` products of R's Hessian: its dimension, times |G| for H_⊥, whose products run over the
    orbit (``Objective.orbit_size``). Otherwise by Lanczos (:func:`lanczos_spectrum`, at most ``steps`` steps).
    ``progress(block, done, total)`` hears of the products of a dense block as they are taken."""
    like = objective.get()
    basis = orbit_basis(objective.project_E, like, generator)
    total = len(like)
    result: dict[str, BlockSpectrum] = {}
    blocks = {"E": (objective.project_E, False), "perp": (objective.project_perp, True)}
    for block, (project, augmented) in blocks.items():
        def matvec(v: torch.Tensor, project: Callable[[torch.Tensor], torch.Tensor] = project,
                   augmented: bool = augmented) -> torch.Tensor:
            return objective.hvp(project(v), augmented)

        dim = -1 if basis is None else (basis.dim if block == "E" else total - basis.dim)
        report = (lambda done, whole, block=block: progress(block, done, whole)) if progress else None
        cost = dim * (objective.orbit_size if augmented else 1)
        if basis is not None and 0 < dim and cost <= dense_limit:
            lift, restrict = basis.maps(block == "E", like)
            M, asymmetry = dense_block(matvec, lift, restrict, dim, like, report)
            result[block] = dense_spectrum(block, M, asymmetry, lift, k)
        else:
            v = project(torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device))
            result[block] = lanczos_spectrum(block, matvec, project, v / torch.linalg.vector_norm(v), k, steps, dim)
    return result


@dataclass
class LanczosResult:
    values: torch.Tensor  # (m,) Ritz values, ascending
    vectors: torch.Tensor  # (m, dim) unit Ritz vectors, row i belonging to values[i]
    # (m,) ‖A v_i − values[i] v_i‖, so |values[i] − λ| ≤ residual for some eigenvalue λ. The estimate of
    # exact arithmetic: for a converged pair it can read 0 where round-off leaves about 1e-16 ‖A‖.
    residuals: torch.Tensor
    breakdown: bool  # the Krylov space became invariant before the requested number of steps

    @property
    def krylov_dim(self) -> int:
        return len(self.values)


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    steps: int,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    breakdown_tolerance: float = 1e-10,
) -> LanczosResult:
    """Ritz pairs of the symmetric operator ``matvec`` on a Krylov space of at most ``steps`` dimensions.

    ``project`` (an orthogonal projector, e.g. Π_⊥) is applied to the start vector and to every product, so
    the Krylov space stays inside its range and the spectrum is that of the operator restricted there,
    without the zero eigenvalues of the complement. Every new vector is re-orthogonalised against the whole
    basis, twice: plain Lanczos loses orthogonality as Ritz values converge and then reports the same
    eigenvalue again and again, and one classical Gram-Schmidt pass is not enough when the new vector is
    almost in the span, while two are; after them the vector is projected again, so that round-off outside the
    range cannot accumulate in the basis (``certificates.lanczos_run``). The run stops early when the next
    vector's norm falls below ``breakdown_tolerance`` times the largest coefficient seen: the space is
    invariant and its Ritz pairs are exact. A single start vector finds one copy of each repeated eigenvalue
    (repeats are common here: they come from the group's irreducible representations). Memory: ``steps``
    vectors of the full size.
    """
    run = lanczos_run(matvec, start, steps, project, breakdown_tolerance=breakdown_tolerance)
    return LanczosResult(run.values, run.vectors, run.estimated_residuals, run.breakdown)
