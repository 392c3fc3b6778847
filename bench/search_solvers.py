"""Inner solvers of Experiment S's Newton stage, side by side, per Hessian-vector product.

    .venv/bin/python bench/search_solvers.py rototrans 0 gltr steihaug --seconds 600

For one network of the `stability` preset and one seed, the first stage of the search (L-BFGS on E) runs once;
from its end point each named solver then takes trust-region steps on E until its wall-clock limit, and the
table gives the Hessian-vector products (and steps) it needed to bring its best ‖Π_E∇R‖ below each decade,
with its last R. Wall time on a shared machine says little; products do not depend on the load.

Solvers (the trust-region logic of ``pipeline.core.stationary_search`` around each; forcing: how exactly a subproblem is
solved, relative to ‖g‖):

- ``gltr``: the pipeline's (``StationarySearch._newton_step``): the subproblem solved exactly on a Lanczos
  Krylov space (Gould, Lucidi, Roma, Toint), forcing min(0.5, √(‖g‖/‖g₀‖)), at most ``cg`` products a step, a
  rejected step retried with a smaller radius on the same space;
- ``gltr-fresh``: the same, the Krylov space built again for every retry (the first version);
- ``gltr-linear``: forcing min(0.1, ‖g‖/‖g₀‖), at most 200 products;
- ``steihaug``: truncated conjugate gradients (Steihaug–Toint), stopping at the boundary or at the first
  direction of negative curvature, forcing min(0.1, ‖g‖/‖g₀‖), at most 200 products;
- ``dense``: H_E formed in the orbit basis of E at every accepted point (dim E products), the subproblem solved
  exactly by its eigendecomposition.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core import certificates  # noqa: E402
from pipeline.core import stationary_search as stationary  # noqa: E402
from pipeline.core.objectives import ModelObjective  # noqa: E402
from pipeline.core.trust_region import KrylovModel  # noqa: E402
from pipeline.experiments.stability import EXPERIMENT, StabilitySettings  # noqa: E402
from pipeline.launch.grid import load_grid  # noqa: E402

SOLVERS = ("gltr", "gltr-fresh", "gltr-linear", "steihaug", "dense")
DECADES = (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9)


def objective_of(network: str, seed: int) -> tuple[StabilitySettings, ModelObjective]:
    """The network's objective at the seed's A⁰, with the `stability` preset's settings for it."""
    preset = [t.settings for t in load_grid("stability").trials() if isinstance(t.settings, StabilitySettings)]
    settings = dataclasses.replace(next(s for s in preset if s.network == network), seed=seed)
    data = EXPERIMENT.load_data(settings, torch.device("cpu"), torch.float64)
    model = EXPERIMENT.build_model(settings).to(dtype=torch.float64)
    return settings, ModelObjective(model, data, EXPERIMENT.evaluation_loss(settings),
                                    settings.chunk_size, weight_decay=settings.weight_decay)


def accept(search: stationary.StationarySearch, p: torch.Tensor, predicted: float) -> bool:
    """The pipeline's trust-region acceptance and radius update for the step p."""
    candidate = search.objective.project_E(search.theta + p)
    search.objective.set(candidate)
    loss, accuracy, grad = search._projected_gradient()
    norm, step_norm = float(torch.linalg.vector_norm(grad)), float(torch.linalg.vector_norm(p))
    if predicted <= stationary.LOSS_ROUNDOFF * max(abs(search.loss), 1e-300):
        ratio, accepted = math.nan, norm < search.norm
        good = accepted
    else:
        ratio = (search.loss - loss) / predicted
        accepted, good = ratio > stationary.ACCEPT_RATIO, ratio > stationary.GROW_RATIO
    if not accepted or (not good and ratio == ratio and ratio < stationary.SHRINK_RATIO):
        search.radius = stationary.SHRINK_RATIO * step_norm
    elif good and search.radius is not None and step_norm >= 0.99 * search.radius:
        search.radius *= 2.0
    if accepted:
        search.theta, search.loss, search.accuracy, search.grad, search.norm = candidate, loss, accuracy, grad, norm
        search.newton_iterations += 1
        return True
    search.objective.set(search.theta)
    return False


def steihaug(hessian: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor, radius: float, products: int,
             tolerance: float) -> tuple[torch.Tensor, float]:
    z, r = torch.zeros_like(g), g.clone()
    d, norm_g = -r, float(torch.linalg.vector_norm(g))

    def to_boundary(z: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        a, b, c = float(d @ d), 2 * float(z @ d), float(z @ z) - radius**2
        return z + (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a) * d

    p = z
    for _ in range(products):
        Hd = hessian(d)
        curvature = float(d @ Hd)
        if curvature <= 0:
            p = to_boundary(z, d)
            break
        alpha = float(r @ r) / curvature
        if float(torch.linalg.vector_norm(z + alpha * d)) >= radius:
            p = to_boundary(z, d)
            break
        z, r_next = z + alpha * d, r + alpha * Hd
        p = z
        if float(torch.linalg.vector_norm(r_next)) <= tolerance * norm_g:
            break
        d, r = -r_next + float(r_next @ r_next) / float(r @ r) * d, r_next
    return p, -(float(g @ p) + 0.5 * float(p @ hessian(p)))


def step(search: stationary.StationarySearch, solver: str, state: dict, attempts: int = 10) -> None:
    if search.radius is None:
        search.radius = 0.1 * max(float(torch.linalg.vector_norm(search.theta)), 1e-3)
    if solver == "gltr":
        search._newton_step()
        return
    linear = min(0.1, search.norm / search.start_norm)
    for _ in range(attempts):
        if solver in ("gltr-fresh", "gltr-linear"):
            cap, forcing = (search.cg_iterations, search._forcing()) if solver == "gltr-fresh" else (200, linear)
            model = KrylovModel(search.hessian_E, search.grad, cap, forcing)
            p, predicted, _ = model.step(search.radius)
        elif solver == "steihaug":
            p, predicted = steihaug(search.hessian_E, search.grad, search.radius, 200, linear)
        else:
            p, predicted = dense_step(search, state)
        if accept(search, p, predicted):
            return


def dense_step(search: stationary.StationarySearch, state: dict[str, Any]) -> tuple[torch.Tensor, float]:
    basis = state.setdefault("basis", certificates.orbit_basis(search.objective.project_E, search.theta))
    # The networks this solver is compared on act by permutations (an orbit basis spans E), and a Newton step has
    # a trust radius.
    assert basis is not None and search.radius is not None, "the dense solver needs an orbit basis and a radius"
    radius = search.radius
    if state.get("at") is not search.theta:
        M, _ = certificates.dense_block(lambda v: search.objective.hvp(v, False), basis.lift, basis.restrict,
                                        basis.dim, search.theta)
        search.hessian_products += basis.dim
        state.update(at=search.theta, M=M, eig=torch.linalg.eigh(M))
    values, vectors = state["eig"]
    g = basis.restrict(search.grad)
    b = vectors.T @ g
    low = max(0.0, -float(values[0]))
    y = -(vectors @ (b / values)) if float(values[0]) > 0 else None
    if y is None or float(torch.linalg.vector_norm(y)) > radius:
        high = low + float(torch.linalg.vector_norm(b)) / radius + float(values.abs().max())
        low += 1e-300
        for _ in range(200):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if float(torch.linalg.vector_norm(b / (values + middle))) > radius \
                else (low, middle)
        y = -(vectors @ (b / (values + high)))
    return basis.lift(y), -(float(g @ y) + 0.5 * float(y @ (state["M"] @ y)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network")
    parser.add_argument("seed", type=int)
    parser.add_argument("solvers", nargs="+", choices=SOLVERS)
    parser.add_argument("--seconds", type=float, default=600.0, help="wall-clock limit of each solver's steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for solver in args.solvers:
        settings, objective = objective_of(args.network, args.seed)
        search = stationary.StationarySearch(objective, settings.tolerance, "lbfgs", settings.block,
                                             max_iterations=settings.max_iterations, refine="newton",
                                             newton_iterations=10**9, cg_iterations=settings.cg_iterations)
        while search.stage == "first order":
            search.step_block()
        state: dict[str, Any] = {}
        start, began = search.hessian_products, time.monotonic()
        best, reached = search.norm, {}
        while time.monotonic() - began < args.seconds and best > 0:
            step(search, solver, state)
            best = min(best, search.norm)
            for decade in DECADES:
                if best <= decade and decade not in reached:
                    reached[decade] = (search.hessian_products - start, search.newton_iterations)
        rows.append((solver, search.hessian_products - start, search.newton_iterations, best, search.loss, reached))
        print(f"{solver}: {search.hessian_products - start} products, {search.newton_iterations} steps, best "
              f"‖Π_E∇R‖ {best:.2g}, R {search.loss:.12g}", flush=True)
    print(f"\n{args.network} s{args.seed}, from the end of the first stage; products (steps) to a best ‖Π_E∇R‖ below:")
    print("solver       " + "".join(f"{d:>16.0e}" for d in DECADES) + "   products (steps)  best      R")
    for solver, products, steps, best, loss, reached in rows:
        cells = "".join(f"{f'{reached[d][0]} ({reached[d][1]})' if d in reached else '–':>16}" for d in DECADES)
        print(f"{solver:12s} {cells}   {products:8d} ({steps})  {best:.2g}  {loss:.12g}")


if __name__ == "__main__":
    main()
