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

The module reads top to bottom: the objectives (what is differentiated and how), Lanczos (spectra from
Hessian-vector products, never a dense Hessian), then the measurements in the order of the experiment:
the stationary point A*, claim 1, the block structure, the spectra and the perturbation dynamics.
Everything is meant for float64: the identities are checked at round-off.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline import stopping
from pipeline.core import stationarity
from pipeline.core.certificates import lanczos_run, lanczos_spectrum
from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.core.training import RowLayout, batch_rows, correct_count, loss_sum
from pipeline.settings import CHUNK_SIZE, Augmentation

# -- objectives ------------------------------------------------------------------------------------


class Objective(ABC):
    """R (``augmented=False``) and R_aug (``augmented=True``) as functions of a flat vector θ held inside.

    Subclasses provide the evaluations of the data term, ``_loss_and_grad`` and ``_hvp``; two penalties are
    added here, once for every objective:

    - the weight decay (λ/2)‖θ‖², λ = ``weight_decay``, on both R and R_aug. It is part of the objective being
      studied: ‖g·θ‖ = ‖θ‖ for every g, so it is G-invariant and claims 1 and 3 hold for R + (λ/2)‖θ‖² exactly
      as for R; it shifts every eigenvalue of both Hessian blocks by λ, and it gives R finite minimisers
      where the data term alone improves for ever by growing the weights (docs/science.md §5);
    - the regularisation (γ/2)‖Π_⊥ θ‖² of the augmented objective, γ = ``reg`` (regularised augmentation).

    Accuracy is on the plain data, NaN where there is none (a regression target).
    """

    dim: int
    reg: float = 0.0
    weight_decay: float = 0.0
    orbit_size: int = 1  # how many times R's rows R_aug's evaluations touch (|G| for exact orbit augmentation)

    @abstractmethod
    def get(self) -> torch.Tensor:
        """A copy of the current θ."""

    @abstractmethod
    def set(self, theta: torch.Tensor) -> None:
        ...

    @abstractmethod
    def project_E(self, v: torch.Tensor) -> torch.Tensor:
        ...

    def project_perp(self, v: torch.Tensor) -> torch.Tensor:
        return v - self.project_E(v)

    @abstractmethod
    def _loss_and_grad(self, augmented: bool) -> tuple[float, float, torch.Tensor]:
        ...

    @abstractmethod
    def _hvp(self, v: torch.Tensor, augmented: bool) -> torch.Tensor:
        ...

    def loss_and_grad(self, augmented: bool) -> tuple[float, float, torch.Tensor]:
        """(loss, accuracy, gradient) at the current θ."""
        loss, accuracy, grad = self._loss_and_grad(augmented)
        if self.weight_decay:
            theta = self.get()
            loss += 0.5 * self.weight_decay * float(theta @ theta)
            grad = grad + self.weight_decay * theta
        if augmented and self.reg:
            off = self.project_perp(self.get())
            loss += 0.5 * self.reg * float(off @ off)
            grad = grad + self.reg * off
        return loss, accuracy, grad

    def hvp(self, v: torch.Tensor, augmented: bool) -> torch.Tensor:
        """The Hessian of the objective at the current θ applied to v."""
        hv = self._hvp(v, augmented)
        if self.weight_decay:
            hv = hv + self.weight_decay * v
        if augmented and self.reg:
            hv = hv + self.reg * self.project_perp(v)
        return hv


class ModelObjective(Objective):
    """R and R_aug of a MeasuredModel on a data set; θ is every parameter, in ``named_parameters`` order.

    Both objectives are means over the rows of a training ``RowLayout`` (Nom: every sample once; Aug-orbit:
    every (sample, element) pair), accumulated over chunks of ``chunk_size`` rows as training does, so the
    gradient is the one a training step would apply. A Hessian-vector product differentiates each chunk's
    gradient·v once more (double backward) and adds the chunks up, so memory is bounded by one chunk's graph.
    Π_E is the model's ``project_parameters``, the projection in these very coordinates.
    """

    def __init__(self, model: MeasuredModel, data: Dataset, loss: str, chunk_size: int = CHUNK_SIZE, reg: float = 0.0,
                 weight_decay: float = 0.0):
        self.model, self.data, self.loss, self.chunk_size, self.reg = model, data, loss, chunk_size, reg
        self.weight_decay = weight_decay
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.parameters = [p for _, p in named]
        self.sizes = [p.numel() for p in self.parameters]
        self.dim = sum(self.sizes)
        self.orbit_size = model.group_order
        self.layouts = {
            False: RowLayout(len(data), "nom", None, model.group_order),
            True: RowLayout(len(data), "aug", Augmentation("orbit"), model.group_order),
        }

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [part.view_as(p) for part, p in zip(v.split(self.sizes), self.parameters)]

    @staticmethod
    def _flat(tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def get(self) -> torch.Tensor:
        return self._flat([p.detach() for p in self.parameters])

    @torch.no_grad()
    def set(self, theta: torch.Tensor) -> None:
        for p, value in zip(self.parameters, self._split(theta)):
            p.copy_(value)

    def project_E(self, v: torch.Tensor) -> torch.Tensor:
        projected = self.model.project_parameters(dict(zip(self.names, self._split(v))))
        return self._flat([projected[name] for name in self.names])

    def _chunks(self, augmented: bool):
        """(inputs, labels, which rows are plain data, rows in the objective) for every chunk."""
        layout = self.layouts[augmented]
        rows = torch.arange(layout.num_rows)
        for start in range(0, layout.num_rows, self.chunk_size):
            index = rows[start : start + self.chunk_size]
            x, y = batch_rows(self.model, self.data, layout, index)
            # Element 0 is the identity, so these rows are the plain data, each sample exactly once.
            plain = (layout.rows(index)[1] == 0).to(y.device)
            yield x, y, plain, layout.num_rows

    def _grad(self, output: torch.Tensor, create_graph: bool = False):
        return torch.autograd.grad(output, self.parameters, create_graph=create_graph, allow_unused=True,
                                   materialize_grads=True)

    def _loss_and_grad(self, augmented: bool) -> tuple[float, float, torch.Tensor]:
        loss = 0.0
        correct: float = 0  # NaN where there are no classes (a regression)
        grad = torch.zeros(self.dim, dtype=self.parameters[0].dtype, device=self.parameters[0].device)
        for x, y, plain, rows in self._chunks(augmented):
            logits = self.model(x)
            chunk_loss = loss_sum(logits, y, self.loss) / rows
            grad += self._flat(self._grad(chunk_loss))
            loss += chunk_loss.item()
            correct += correct_count(logits[plain], y[plain], self.loss)
        return loss, correct / len(self.data), grad

    def _hvp(self, v: torch.Tensor, augmented: bool) -> torch.Tensor:
        directions = self._split(v)
        hv = torch.zeros_like(v)
        for x, y, _, rows in self._chunks(augmented):
            chunk_loss = loss_sum(self.model(x), y, self.loss) / rows
            grads = self._grad(chunk_loss, create_graph=True)
            hv += self._flat(self._grad(sum((g * d).sum() for g, d in zip(grads, directions))))
        return hv


# -- Lanczos ---------------------------------------------------------------------------------------


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


def random_unit(objective: Objective, project: Callable[[torch.Tensor], torch.Tensor],
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A random unit vector in the range of ``project`` (drawn on the CPU, so seeded draws reproduce)."""
    like = objective.get()
    v = project(torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device))
    return v / torch.linalg.vector_norm(v)


# -- 1. the stationary point A* --------------------------------------------------------------------


@dataclass
class StationaryResult:
    iterations: int  # of the first-order search
    evaluations: int  # gradient evaluations, line searches and Newton trials included
    start_grad_norm: float  # ‖Π_E ∇R‖ at the start
    final_grad_norm: float  # at the point the search ended on: its best iterate
    loss: float
    accuracy: float
    converged: bool  # the search ended by its criterion (see StationarySearch.ending)
    stalled: bool = False  # it ended by a stall
    lr: float | None = None  # the step of gradient descent; None for L-BFGS
    newton_iterations: int = 0
    ended: str = ""  # why the search ended, in words
    ending: str = ""  # CRITERION, STALL or BUDGET
    hessian_products: int = 0


# How a search ends: by its criterion, a certified stall, or its budget (``StationarySearch.ending``), and
# why, in words (``StationarySearch.ended``).
CRITERION, STALL, BUDGET = "criterion", "stall", "budget"
FIRST_ORDER_CONVERGED = "first-order tolerance reached"
FIRST_ORDER_STALLED = "first-order search stalled"
FIRST_ORDER_CAP = "first-order iteration cap"
CURVATURE_CRITERION = "stationary on the curvature scale"
EXACTLY_STATIONARY = "gradient exactly zero"
NO_PROGRESS = "stalled: neither R nor ‖Π_E∇R‖ decreased beyond round-off over the stall window"
RADIUS_AT_ROUNDOFF = "stalled: the trust region shrank to round-off of A"
HESSIAN_BUDGET = "Hessian-vector product budget spent"
TIME_BUDGET = "time budget spent"
NEWTON_CAP = "Newton step cap"
ENDINGS = {FIRST_ORDER_CONVERGED: CRITERION, CURVATURE_CRITERION: CRITERION, EXACTLY_STATIONARY: CRITERION,
           FIRST_ORDER_STALLED: STALL, NO_PROGRESS: STALL, RADIUS_AT_ROUNDOFF: STALL,
           FIRST_ORDER_CAP: BUDGET, HESSIAN_BUDGET: BUDGET, TIME_BUDGET: BUDGET, NEWTON_CAP: BUDGET}
# Trust-region constants (Nocedal & Wright, Algorithm 4.1): accept a step when R falls by at least this fraction
# of the decrease the quadratic model predicts; shrink below the first ratio, grow above the second.
ACCEPT_RATIO, SHRINK_RATIO, GROW_RATIO = 1e-4, 0.25, 0.75
# Below this fraction of |R| a decrease is round-off: steps are then judged by the gradient they reach.
LOSS_ROUNDOFF = 1e-13
# ‖Π_E∇R‖ "decreased" when it fell below this fraction of its lowest value so far: a gradient at its round-off
# floor is a sum of rounding errors whose norm wanders by about this factor from one point to the next.
GRADIENT_PROGRESS = 0.5
# Gradient descent's default step is 1/λ_max(H_E), λ_max from this many Lanczos steps at the start.
STEP_LANCZOS_STEPS = 20
# L-BFGS's evaluations per iteration of a block, at most: every line search keeps its full 25 evaluations,
# even in a block's last iteration.
EVALUATIONS_PER_ITERATION = 30
# A trust radius below this fraction of ‖θ‖ moves θ by its own round-off: the search can do no more.
RADIUS_ROUNDOFF = 1e-15
# A curvature check runs each time ‖Π_E∇R‖ has fallen by this factor since the last (or reaches the target on the
# curvature the last one found, whichever comes first): a few checks per search, on a logarithmic schedule.
RECHECK_FACTOR = 0.1


@dataclass
class CurvatureCheck:
    """The search's estimate, at one iterate, of the curvatures its criterion is judged on (Lanczos from warm
    starts; the measurements at A* certify them afterwards)."""

    lowest_E: float
    lowest_perp: float
    lambda_max: float
    curvature: float  # stationarity.curvature_scale of the three; NaN at a degenerate point
    ratio: float  # ‖Π_E∇R‖ / (curvature ‖θ‖)
    grad_norm: float
    met: bool


class StationarySearch:
    """Minimising R over E from the current θ, one block at a time (so that a trial can record and checkpoint
    every block, and resume where it stopped: see :meth:`state_dict`).

    Two stages. **First order**: blocks of ``block`` iterations of L-BFGS (or gradient descent) on projected
    gradients Π_E ∇R, until ‖Π_E ∇R‖ ≤ ``tolerance`` times its start value, a stall, or ``max_iterations``.
    On these networks a first-order search slows to a crawl long before the gradient is small on the scale of
    the curvature whose sign the experiment judges (docs/science.md §5), so it is only the approach.
    **Newton** (``refine="newton"``): trust-region Newton on E, one step per block, each trust-region
    subproblem solved on a Krylov space of Hessian-vector products (:class:`KrylovModel`; no dense
    Hessian), which uses the directions of negative curvature on E that the space holds, so that the search
    leaves saddles of R on E and ends at a minimum (where Equi is stable). Every iterate is projected onto E.

    The Newton stage ends in one of three ways (``ending``, and ``ended`` in words):

    - by its **criterion** (CURVATURE_CRITERION): ‖Π_E∇R‖ ≤ ``target`` × |λ| × ‖θ‖, |λ| the curvature scale
      of ``pipeline.core.stationarity``, estimated by a *curvature check* (Lanczos on H_E and on H_⊥, warm-started
      from the previous check's vectors). A check runs at a new best iterate whose gradient has fallen tenfold
      (RECHECK_FACTOR) since the last check (the first: since the Newton stage began) or has reached the target
      on the curvature the last check found. A check that finds a
      clearly negative eigenvalue of H_E (a saddle of R on E) hands its eigenvector to the next step, which
      moves along it. ``target`` lies below the verdict's tolerance by a margin for the difference between
      these estimates and the certified spectra; or the gradient is exactly zero (EXACTLY_STATIONARY);
    - by a certified **stall**: for ``stall_window`` steps neither R fell by more than its round-off
      (LOSS_ROUNDOFF |R|) below its lowest value, nor ‖Π_E∇R‖ below GRADIENT_PROGRESS times its lowest
      value (NO_PROGRESS); or the trust radius shrank to round-off of θ, so that no step changes θ;
    - by its **budget**: ``hessian_budget`` Hessian-vector products (its steps' and its checks' alike; a
      check's products of H_⊥ run over the |G|-fold orbit and cost |G| times more time), ``time_budget``
      seconds (measured here: a time budget makes the search depend on the machine), or ``newton_iterations``
      steps.

    With 1–2 products per step the gradient of an iterate swings by orders of magnitude from one step to the
    next, so the search keeps its **best iterate**, the one of least ‖Π_E∇R‖, and ends on it, whatever ended it.

    ``method="lbfgs"``: torch's L-BFGS with a strong-Wolfe line search on a flat copy of θ, its own stopping
    rules switched off. A block that lowers neither the loss nor ‖Π_E ∇R‖ restarts it from steepest descent:
    a poor quasi-Newton direction can leave the line search no acceptable step, and L-BFGS would then retry
    the same direction for ever. A second such block in a row ends the first stage (a stall): R is not
    smooth there (a kink of a piecewise-linear activation), or round-off hides any further progress.
    ``method="gd"``: gradient descent with step ``lr``, by default 1/λ_max(H_E) from ``STEP_LANCZOS_STEPS`` Lanczos steps at
    the start. Lanczos approaches λ_max from below, so that step is at most slightly longer than 1/λ_max,
    far from the stability limit 2/λ_max, but the curvature can grow along the way: pass ``lr`` to choose.
    """

    def __init__(self, objective: Objective, tolerance: float = 1e-6, method: str = "lbfgs", block: int = 10,
                 lr: float | None = None, history_size: int = 20, max_iterations: int | None = None,
                 refine: str = "none", newton_iterations: int = 50, cg_iterations: int = 100,
                 target: float = 0.1 * stationarity.STATIONARITY_TOLERANCE, hessian_budget: int | None = None,
                 time_budget: float | None = None, stall_window: int = 100, check_steps: int = 60,
                 generator: torch.Generator | None = None):
        if method not in ("lbfgs", "gd"):
            raise ValueError(f"unknown method {method!r}; accepted: lbfgs, gd")
        if refine not in ("none", "newton"):
            raise ValueError(f"unknown refine {refine!r}; accepted: none, newton")
        self.objective, self.tolerance, self.method, self.block = objective, tolerance, method, block
        self.history_size, self.max_iterations = history_size, max_iterations
        self.refine, self.max_newton, self.cg_iterations = refine, newton_iterations, cg_iterations
        self.target, self.hessian_budget, self.time_budget = target, hessian_budget, time_budget
        self.stall_window, self.check_steps = stall_window, check_steps
        self.generator = generator or torch.Generator().manual_seed(0)
        self.evaluations = self.iterations = self.newton_iterations = 0
        self.hessian_products = self.orbit_products = self.checks = 0
        self.restarted = self.first_order_stalled = False
        self.stage, self.ended = "first order", ""
        self.elapsed = 0.0
        self.radius: float | None = None  # the trust region's, once Newton steps begin
        self.lowest_ritz = math.nan  # the lowest Ritz value of the last trust-region subproblem
        self.newton_start_norm = math.nan  # ‖Π_E∇R‖ where the Newton stage began
        self.check: CurvatureCheck | None = None
        self.warm: dict[str, torch.Tensor] = {}  # the last check's lowest eigenvectors, to start the next from
        self.escape: tuple[torch.Tensor, float] | None = None  # a direction of negative curvature on E, and it
        self.theta = objective.project_E(objective.get())
        objective.set(self.theta)
        self.loss, self.accuracy, self.grad = self._projected_gradient()
        self.start_norm = self.norm = float(torch.linalg.vector_norm(self.grad))
        self.best = self._iterate()
        self.progress = (self.newton_iterations, self.loss, self.norm)  # (step, lowest R, lowest ‖Π_E∇R‖) then
        self.flat = self.theta.clone()
        self.optimizer: torch.optim.LBFGS | None = self._fresh_lbfgs() if method == "lbfgs" else None
        if method == "gd" and lr is None:
            def hessian_E(v):
                return objective.hvp(objective.project_E(v), augmented=False)

            start = random_unit(objective, objective.project_E, torch.Generator().manual_seed(0))
            lr = 1.0 / float(lanczos(hessian_E, start, STEP_LANCZOS_STEPS, objective.project_E).values[-1])
        self.lr = lr
        self._end_stage_if_due()

    @property
    def ending(self) -> str:
        """CRITERION, STALL or BUDGET once the search has ended; "" before."""
        return ENDINGS.get(self.ended, "")

    @property
    def converged(self) -> bool:
        """The search ended by its criterion: with Newton, stationary on the curvature scale (or exactly)."""
        return self.ending == CRITERION

    @property
    def stalled(self) -> bool:
        return self.ending == STALL

    @property
    def done(self) -> bool:
        return bool(self.ended)

    @property
    def products(self) -> int:
        """The Hessian-vector products counted against ``hessian_budget``: of H_E and of H_⊥ alike."""
        return self.hessian_products + self.orbit_products

    def _iterate(self) -> dict:
        return {"theta": self.theta, "loss": self.loss, "accuracy": self.accuracy, "grad": self.grad,
                "norm": self.norm}

    def _projected_gradient(self):
        self.evaluations += 1
        loss, accuracy, grad = self.objective.loss_and_grad(augmented=False)
        return loss, accuracy, self.objective.project_E(grad)

    def _fresh_lbfgs(self) -> torch.optim.LBFGS:
        return torch.optim.LBFGS([self.flat], lr=1.0, max_iter=self.block, max_eval=EVALUATIONS_PER_ITERATION * self.block,
                                 tolerance_grad=0.0, tolerance_change=0.0, history_size=self.history_size,
                                 line_search_fn="strong_wolfe")

    def _closure(self):
        # A stop request (cancel, preemption) is acted on between evaluations: the block is redone from the
        # checkpoint of the row before it, where the search's state was saved whole.
        stopping.check()
        self.objective.set(self.flat.detach())
        value, _, g = self._projected_gradient()
        self.flat.grad = g
        return torch.tensor(value, dtype=self.flat.dtype)

    def _end_stage_if_due(self) -> None:
        """Move from the first stage to Newton, or end the search, once the current stage is over."""
        if self.stage == "first order":
            if self.norm <= self.tolerance * self.start_norm:
                why = FIRST_ORDER_CONVERGED
            elif self.first_order_stalled:
                why = FIRST_ORDER_STALLED
            elif self.max_iterations is not None and self.iterations >= self.max_iterations:
                why = FIRST_ORDER_CAP
            else:
                return
            if self.refine == "newton":
                self.stage = "newton"
                self.newton_start_norm = self.norm
                self.best = self._iterate()
                self.progress = (self.newton_iterations, self.loss, self.norm)
            else:
                self.ended = why
                return
        if self.norm == 0:
            self._end(EXACTLY_STATIONARY)
        elif self._check_due() and self._curvature_check().met:
            self._end(CURVATURE_CRITERION)
        elif self.radius is not None and self.radius <= RADIUS_ROUNDOFF * float(torch.linalg.vector_norm(self.theta)):
            self._end(RADIUS_AT_ROUNDOFF)
        elif self.newton_iterations - self.progress[0] >= self.stall_window:
            self._end(NO_PROGRESS)
        elif self.hessian_budget is not None and self.products >= self.hessian_budget:
            self._end(HESSIAN_BUDGET)
        elif self.time_budget is not None and self.elapsed >= self.time_budget:
            self._end(TIME_BUDGET)
        elif self.newton_iterations >= self.max_newton:
            self._end(NEWTON_CAP)

    def _end(self, why: str) -> None:
        """End on the best iterate."""
        self.ended = why
        best = self.best
        self.theta, self.loss, self.accuracy, self.grad, self.norm = (best[k] for k in ("theta", "loss", "accuracy",
                                                                                          "grad", "norm"))
        self.objective.set(self.theta)

    def _check_due(self) -> bool:
        """Whether to run a curvature check at the current iterate: it is the best so far, and its gradient has
        fallen by RECHECK_FACTOR since the last check (the first: since the Newton stage began), or reached the
        target on the curvature that check found."""
        if self.norm > self.best["norm"]:
            return False
        last = self.check.grad_norm if self.check is not None else self.newton_start_norm
        if self.norm <= RECHECK_FACTOR * last:
            return True
        if self.check is None or self.norm >= self.check.grad_norm or not math.isfinite(self.check.curvature):
            return False
        return bool(self.norm <= self.target * self.check.curvature * float(torch.linalg.vector_norm(self.theta)))

    def _curvature_check(self) -> CurvatureCheck:
        """Estimate λ_min(H_E), λ_min(H_⊥) and λ_max at the current iterate and judge the criterion there."""
        self.checks += 1
        objective = self.objective

        def perp(v):
            stopping.check()
            self.orbit_products += 1
            return objective.hvp(objective.project_perp(v), augmented=True)

        lowest, largest = {}, []
        for block, matvec, project in (("E", self.hessian_E, objective.project_E),
                                       ("perp", perp, objective.project_perp)):
            like = self.theta
            start = project(torch.randn(like.shape, generator=self.generator, dtype=like.dtype).to(like.device))
            if not float(torch.linalg.vector_norm(start)):
                # A model parametrised inside E (the CNN's Equi model) has no E⊥ in its own coordinates: its H_⊥ is
                # measured after the search, in the variant's, and the check judges on H_E alone.
                lowest[block] = math.nan
                continue
            if block in self.warm:
                start = project(start / torch.linalg.vector_norm(start) + self.warm[block])
            found = lanczos_spectrum(block, matvec, project, start / torch.linalg.vector_norm(start), 1,
                                     self.check_steps, -1)
            lowest[block] = float(found.lowest[0]) if len(found.lowest) else math.nan
            largest.append(found.largest)
            if len(found.lowest):
                self.warm[block] = found.lowest_vectors[0]
                if block == "E":
                    escape = (found.lowest_vectors[0], lowest[block])
        lowest_E, lowest_perp = lowest["E"], lowest["perp"]
        lambda_max = max(largest)
        curvature = stationarity.curvature_scale(lowest_E, lowest_perp, lambda_max)
        theta_norm = float(torch.linalg.vector_norm(self.theta))
        ratio = stationarity.stationarity(self.norm, curvature, theta_norm)
        saddle = lowest_E < -stationarity.PSD_TOLERANCE * lambda_max
        if saddle:  # R falls along this direction of E: the next step takes it
            self.escape = escape
        self.check = CurvatureCheck(lowest_E, lowest_perp, lambda_max, curvature, ratio, self.norm,
                                    bool(not saddle and ratio <= self.target))
        return self.check

    def step_block(self, count: int | None = None) -> None:
        """One block: up to ``count`` (default: ``block``) first-order iterations, or one Newton step; then θ,
        loss, accuracy and norm are those of the new point (of the best iterate, once the search has ended)."""
        if self.done:
            return
        began = time.monotonic()
        if self.stage == "newton":
            self._newton_step()
            self._note_progress()
        else:
            if count is None:
                count = self.block
            if self.max_iterations is not None:
                count = min(count, self.max_iterations - self.iterations)
            self._first_order_block(count)
        self.elapsed += time.monotonic() - began
        self._end_stage_if_due()

    def _note_progress(self) -> None:
        """Keep the best iterate, and the last step that made progress beyond round-off (see NO_PROGRESS)."""
        if self.norm < self.best["norm"]:
            self.best = self._iterate()
        step, lowest_loss, lowest_norm = self.progress
        if self.loss < lowest_loss - LOSS_ROUNDOFF * abs(lowest_loss) or self.norm < GRADIENT_PROGRESS * lowest_norm:
            self.progress = (self.newton_iterations, min(lowest_loss, self.loss), min(lowest_norm, self.norm))

    def _first_order_block(self, count: int) -> None:
        previous = (self.loss, self.norm)
        if self.method == "lbfgs":
            assert self.optimizer is not None, "an L-BFGS search has its optimizer from the start"
            self.optimizer.param_groups[0]["max_iter"] = count
            before = self.optimizer.state[self.flat].get("n_iter", 0)
            self.optimizer.step(self._closure)
            count = self.optimizer.state[self.flat]["n_iter"] - before
            with torch.no_grad():
                self.flat.copy_(self.objective.project_E(self.flat))
            self.theta = self.flat.detach().clone()
        else:
            grad = self.grad
            for step in range(count):
                if step:  # the block's first gradient is the one measured after the previous block
                    _, _, grad = self._projected_gradient()
                self.theta = self.theta - self.lr * grad
                self.objective.set(self.theta)
            self.theta = self.objective.project_E(self.theta)
        self.objective.set(self.theta)
        self.iterations += count
        self.loss, self.accuracy, self.grad = self._projected_gradient()
        self.norm = float(torch.linalg.vector_norm(self.grad))
        if self.method == "lbfgs":
            if self.loss < previous[0] or self.norm < previous[1]:
                self.restarted = False
            elif self.restarted or count == 0:  # count 0: L-BFGS saw an exactly zero gradient
                self.first_order_stalled = True
            else:
                self.optimizer, self.restarted = self._fresh_lbfgs(), True

    def hessian_E(self, v: torch.Tensor) -> torch.Tensor:
        """H_E v = Π_E ∇²R Π_E v at the current θ."""
        stopping.check()  # between products, as between evaluations (see _closure)
        self.hessian_products += 1
        objective = self.objective
        return objective.project_E(objective.hvp(objective.project_E(v), augmented=False))

    def _forcing(self) -> float:
        """How exactly a step solves its trust-region subproblem: the relative size of the model's gradient
        left (an inexact Newton method converges superlinearly when this falls with the gradient)."""
        return min(0.5, math.sqrt(self.norm / self.start_norm)) if self.start_norm > 0 else 0.5

    def _newton_step(self, attempts: int = 10) -> NewtonStep:
        """Trust-region iterations until one is accepted (at most ``attempts``): a block is one step taken."""
        theta_norm = float(torch.linalg.vector_norm(self.theta))
        if self.radius is None:
            self.radius = 0.1 * max(theta_norm, 1e-3)
        model = KrylovModel(self.hessian_E, self.grad, self.cg_iterations, self._forcing())
        for _ in range(attempts):
            if self.escape is not None:
                direction, curvature = self.escape
                self.escape = None
                p = direction * (-self.radius if float(direction @ self.grad) > 0 else self.radius)
                predicted = -float(self.grad @ p) - 0.5 * curvature * self.radius**2
                lowest = curvature
            else:
                p, predicted, lowest = model.step(self.radius)
                self.lowest_ritz = lowest
            products = model.products
            candidate = self.objective.project_E(self.theta + p)
            self.objective.set(candidate)
            loss, accuracy, grad = self._projected_gradient()
            norm = float(torch.linalg.vector_norm(grad))
            step_norm = float(torch.linalg.vector_norm(p))
            if predicted <= LOSS_ROUNDOFF * max(abs(self.loss), 1e-300):
                # Both decreases are below round-off of R: the gradient, which is still resolved, decides.
                ratio, accepted = float("nan"), norm < self.norm
                good = accepted
            else:
                ratio = (self.loss - loss) / predicted
                accepted, good = ratio > ACCEPT_RATIO, ratio > GROW_RATIO
            if not accepted or (not good and ratio == ratio and ratio < SHRINK_RATIO):
                self.radius = SHRINK_RATIO * step_norm
            elif good and step_norm >= 0.99 * self.radius:
                self.radius *= 2.0
            if accepted:
                self.theta, self.loss, self.accuracy, self.grad, self.norm = candidate, loss, accuracy, grad, norm
                self.newton_iterations += 1
                return NewtonStep(True, ratio, step_norm, self.radius, products, lowest < 0)
            self.objective.set(self.theta)
            if self.radius <= RADIUS_ROUNDOFF * theta_norm:
                break
        self.newton_iterations += 1
        return NewtonStep(False, ratio, step_norm, self.radius, products, lowest < 0)

    _STATE = ("loss", "accuracy", "norm", "start_norm", "iterations", "evaluations", "restarted",
              "first_order_stalled", "lr", "stage", "ended", "radius", "newton_iterations", "hessian_products",
              "orbit_products", "checks", "elapsed", "lowest_ritz", "newton_start_norm", "check", "progress")

    def state_dict(self) -> dict:
        """Everything a resumed search needs to take exactly the steps this one would (θ is the model's)."""
        return {"flat": self.flat.detach().clone(), "theta": self.theta.clone(), "grad": self.grad.clone(),
                **{name: getattr(self, name) for name in self._STATE},
                "best": {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.best.items()},
                "warm": {k: v.clone() for k, v in self.warm.items()}, "escape": self.escape,
                "generator": self.generator.get_state(),
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.flat.copy_(state["flat"])
        self.theta, self.grad = state["theta"].clone(), state["grad"].clone()
        for name in self._STATE:
            if name in state:  # checkpoints of older searches lack the newer fields
                setattr(self, name, state[name])
        if "best" in state:
            self.best = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state["best"].items()}
            self.warm = {k: v.clone() for k, v in state["warm"].items()}
            self.escape = state["escape"]
            self.generator.set_state(state["generator"])
        if state["optimizer"] is not None:
            self.optimizer = self._fresh_lbfgs()
            self.optimizer.load_state_dict(state["optimizer"])
        self.objective.set(self.theta)

    def result(self) -> StationaryResult:
        return StationaryResult(self.iterations, self.evaluations, self.start_norm, self.norm, self.loss,
                                self.accuracy, self.converged, self.stalled, self.lr, self.newton_iterations,
                                self.ended, self.ending, self.hessian_products)


def find_stationary_point(
    objective: Objective,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
    method: str = "lbfgs",
    block: int = 10,
    on_block: Callable[[int, float, float, float], None] | None = None,
    lr: float | None = None,
    history_size: int = 20,
    refine: str = "none",
    newton_iterations: int = 50,
    **newton,
) -> StationaryResult:
    """Minimise R over E from the current θ (projected onto E first), leaving θ at the result: a
    :class:`StationarySearch` run to its end (``newton``: its Newton stage's other options). ``on_block(iteration,
    loss, accuracy, projected_grad_norm)`` is called at the start and after every block (``iteration`` counts
    first-order iterations, then goes on by one per Newton step)."""
    search = StationarySearch(objective, tolerance, method, block, lr, history_size, max_iterations, refine,
                              newton_iterations, **newton)
    if on_block is not None:
        on_block(0, search.loss, search.accuracy, search.norm)
    while not search.done:
        search.step_block()
        if on_block is not None:
            on_block(search.iterations + search.newton_iterations, search.loss, search.accuracy, search.norm)
    return search.result()


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


# -- 2. claim 1 ------------------------------------------------------------------------------------


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


# -- 3. block structure of H_aug -------------------------------------------------------------------


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


# -- 4. spectra of H_E and H_⊥ ---------------------------------------------------------------------


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
        def restricted(v, project=project, augmented=augmented):
            return objective.hvp(project(v), augmented)

        run = lanczos(restricted, random_unit(objective, project, generator), steps, project)
        result[name] = Spectrum.of(run, k)
    return result


# -- 5. perturbation dynamics ----------------------------------------------------------------------


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
