"""The search for Experiment S's stationary point A* (docs/science.md §5): minimising R over E from A⁰.

:class:`StationarySearch` runs in stages (first order, then trust-region Newton on E), one block at a time,
so that a trial records, checkpoints and resumes it block by block (``state_dict``); how it ends (its
criterion, a certified stall, its budget) is named by the constants below. The objective is
``pipeline.core.objectives``; the Newton steps' subproblems are ``pipeline.core.trust_region``'s. A trial
runs the search in a loop of its own (``pipeline.experiments.stability_loop``), a block of the current
stage per row.

Over 500 lines for one reason: the stages are one class, as they share one state (θ, the best iterate, the
counts and budgets, the L-BFGS memory and trust radius that checkpoints keep), and splitting them would
spread that state over modules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pipeline import stopping
from pipeline.core import stationarity
from pipeline.core.certificates import lanczos, lanczos_spectrum
from pipeline.core.objectives import Objective, random_unit
from pipeline.core.trust_region import KrylovModel, NewtonStep


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


# The search's stages, in order (``StationarySearch.stage``; checkpoints keep these words).
FIRST_ORDER, NEWTON = "first order", "newton"
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
        self.stage, self.ended = FIRST_ORDER, ""
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
            def hessian_E(v: torch.Tensor) -> torch.Tensor:
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

    def _projected_gradient(self) -> tuple[float, float, torch.Tensor]:
        self.evaluations += 1
        loss, accuracy, grad = self.objective.loss_and_grad(augmented=False)
        return loss, accuracy, self.objective.project_E(grad)

    def _fresh_lbfgs(self) -> torch.optim.LBFGS:
        return torch.optim.LBFGS([self.flat], lr=1.0, max_iter=self.block, max_eval=EVALUATIONS_PER_ITERATION * self.block,
                                 tolerance_grad=0.0, tolerance_change=0.0, history_size=self.history_size,
                                 line_search_fn="strong_wolfe")

    def _closure(self) -> torch.Tensor:
        # A stop request (cancel, preemption) is acted on between evaluations: the block is redone from the
        # checkpoint of the row before it, where the search's state was saved whole.
        stopping.check()
        self.objective.set(self.flat.detach())
        value, _, g = self._projected_gradient()
        self.flat.grad = g
        return torch.tensor(value, dtype=self.flat.dtype)

    def _end_stage_if_due(self) -> None:
        """Move from the first stage to Newton, or end the search, once the current stage is over."""
        if self.stage == FIRST_ORDER:
            why = self._first_order_end()
            if not why:
                return
            if self.refine != "newton":
                self.ended = why
                return
            self.stage = NEWTON
            self.newton_start_norm = self.norm
            self.best = self._iterate()
            self.progress = (self.newton_iterations, self.loss, self.norm)
        self._end_newton_if_due()

    def _first_order_end(self) -> str:
        """Why the first stage is over at the current iterate ("" while it goes on)."""
        if self.norm <= self.tolerance * self.start_norm:
            return FIRST_ORDER_CONVERGED
        if self.first_order_stalled:
            return FIRST_ORDER_STALLED
        if self.max_iterations is not None and self.iterations >= self.max_iterations:
            return FIRST_ORDER_CAP
        return ""

    def _end_newton_if_due(self) -> None:
        """End the Newton stage by its criterion, a stall or its budget, in that order of precedence."""
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

        def perp(v: torch.Tensor) -> torch.Tensor:
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
        """One block of the current stage: :meth:`first_order_block` or :meth:`newton_block`."""
        if self.stage == NEWTON:
            self.newton_block()
        else:
            self.first_order_block(count)

    def first_order_block(self, count: int | None = None) -> None:
        """Up to ``count`` (default: ``block``) first-order iterations, as one block (:meth:`_block`)."""
        count = self.block if count is None else count
        if self.max_iterations is not None:
            count = min(count, self.max_iterations - self.iterations)
        self._block(lambda: self._first_order_block(count))

    def newton_block(self) -> None:
        """One trust-region Newton step on E, as one block (:meth:`_block`)."""
        def step() -> None:
            self._newton_step()
            self._note_progress()

        self._block(step)

    def _block(self, work: Callable[[], object]) -> None:
        """Do one block's ``work``, timed, unless the search has ended; then θ, loss, accuracy and norm are those
        of the new point (of the best iterate, once the search has ended), and a stage that is over ends."""
        if self.done:
            return
        began = time.monotonic()
        work()
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
            assert self.lr is not None, "gradient descent has its step from the start"
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
    **newton: Any,
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
