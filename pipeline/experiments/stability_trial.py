"""What an Experiment S trial runs (docs/science.md §5): the search for A* behind the stepper interface, and
what is measured once it has ended (the ``results/`` of a trial file).

The search (``pipeline.core.stationary_search``) runs block by block in the trial's own loop
(``pipeline.experiments.stability_loop``) through :class:`StationaryStepper`, whose state the checkpoints
keep. Then, at A* and at A⁰ (both in the coordinates of the claims): the identity of
claim 1 and the block structure of the Aug Hessian; at A*: the ends of the spectra of H_E (on E) and H_⊥ (on
E⊥), each with what certifies it (``pipeline.core.certificates``: dense blocks where they fit, Lanczos Ritz
pairs with computed residuals elsewhere, docs/science.md §7), and the growth of perturbations off E under Aug
gradient descent, plain and regularised, anchored at A* (``pipeline.core.stationary.perturbation_run``).

The mathematics is ``pipeline.core.stationary``; the experiment (networks, claims, cost) is
``pipeline.experiments.stability``, which imports this module (and torch with it) only when a trial runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from pipeline.core import certificates, stationary
from pipeline.core.certificates import BlockSpectrum
from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.core.objectives import ModelObjective, random_unit
from pipeline.core.stationary_search import StationarySearch
from pipeline.core.training import seeded_generator
from pipeline.experiments.stability_settings import StabilitySettings
from pipeline.progress import StageReport

# The results of one trial: arrays (numpy arrays, and the parameters' names and sizes), and attributes.
Arrays = dict[str, np.ndarray | list[str] | list[int]]
Attrs = dict[str, Any]


def silent(stage: str, done: int, total: int | None = None) -> None:
    """A :class:`StageReport` that reports nothing."""



class StationaryStepper:
    """The stepper (``pipeline.core.training.Stepper``) of a stationary-point search: one model, its objective R
    (``loss``), and the search, whose state (the L-BFGS memory, the trust radius) checkpoints keep."""

    resumable = True

    def __init__(self, model: MeasuredModel, settings: StabilitySettings, data: Dataset, seeds: list[int], loss: str):
        self.models, self.seeds = [model], list(seeds)
        self.objective = ModelObjective(model, data, loss, settings.chunk_size, weight_decay=settings.weight_decay)
        self.search = StationarySearch(self.objective, settings.tolerance, settings.method, settings.block,
                                       max_iterations=settings.max_iterations, refine=settings.refine,
                                       newton_iterations=settings.newton_iterations,
                                       cg_iterations=settings.cg_iterations, target=settings.stationarity_target,
                                       hessian_budget=settings.hessian_budget or None,
                                       time_budget=settings.time_budget or None, stall_window=settings.stall_window,
                                       check_steps=settings.check_steps,
                                       generator=seeded_generator(settings.seed, "curvature checks"))

    @property
    def template(self) -> MeasuredModel:
        return self.models[0]

    def evaluate(self, data: Dataset, loss: str, chunk_size: int) -> list[tuple[float, float]]:
        return [(self.search.loss, self.search.accuracy)]  # R and accuracy at the current point, as measured

    def state_dict(self) -> dict[str, Any]:
        return self.search.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.search.load_state_dict(state)



def measure(settings: StabilitySettings, search: StationarySearch, model: MeasuredModel, start_model: MeasuredModel,
            data: Dataset, generator: torch.Generator, loss: str, orbit: int,
            progress: StageReport = silent) -> tuple[Arrays, Attrs]:
    """Everything Experiment S measures once the search has ended: (arrays, attributes) of ``results/``.

    ``settings`` are the trial's ``StabilitySettings``; ``model`` is A* and ``start_model`` A⁰, both in the
    coordinates of the claims; ``loss`` is R's and ``orbit`` the order of the group. Claim 1 is checked at
    both: at A* the gradients nearly vanish and the identity's residual is read against the scale of the
    plain gradient too; A⁰ is a point of E where they do not."""
    objective = ModelObjective(model, data, loss, settings.chunk_size, weight_decay=settings.weight_decay)
    start = ModelObjective(start_model, data, loss, settings.chunk_size, weight_decay=settings.weight_decay)
    theta = objective.get()
    identities = f"claim 1 at A* and A⁰ and the block structure (the search ended: {search.ended})"
    progress(identities, 0, 1)
    attrs = search_attrs(settings, search, objective, theta, start)
    attrs.update(stationary.claim1(objective))
    attrs.update({f"start_{k}": v for k, v in stationary.claim1(start).items()})
    attrs.update({f"block_{k}": v for k, v in stationary.block_structure(objective, generator).items()})
    progress(identities, 1, 1)

    words = {"E": "H_E", "perp": f"H_⊥ (products over the {orbit}-element orbit)"}
    spectra_stage = (f"spectra of H_E and H_⊥: dense where dim ≤ {settings.dense_limit}, else Lanczos "
                     f"(≤ {settings.lanczos_steps} steps)")
    progress(spectra_stage, 0, 2)
    found = certificates.certified_spectra(
        objective, settings.eigenpairs, settings.lanczos_steps, settings.dense_limit, generator,
        progress=lambda block, done, total: progress(f"{spectra_stage}: {words[block]} densely", done, total))
    progress(spectra_stage, 2, 2)
    arrays: Arrays = {}
    for block, spectrum in found.items():
        arrays.update(spectrum_arrays(block, spectrum))
        attrs.update(spectrum_attrs(block, spectrum))

    perturbations(settings, objective, theta, found, attrs, arrays, generator, progress)
    arrays["parameters/names"] = objective.names
    arrays["parameters/sizes"] = objective.sizes
    return arrays, attrs


def search_attrs(settings: StabilitySettings, search: StationarySearch, objective: ModelObjective,
                 theta: torch.Tensor, start: ModelObjective) -> Attrs:
    """How the search went and where it ended: its counts, its ending, and R at A*."""
    check = search.check
    return {"network": settings.network, "converged": search.converged, "stalled": search.stalled,
            "search_end": search.ended, "search_ending": search.ending, "iterations": search.iterations,
            "newton_iterations": search.newton_iterations, "evaluations": search.evaluations,
            "hessian_products": search.hessian_products, "orbit_products": search.orbit_products,
            "curvature_checks": search.checks,
            "search_seconds": search.elapsed, "check_ratio": check.ratio if check is not None else math.nan,
            "start_projected_grad_norm": search.start_norm, "final_projected_grad_norm": search.norm,
            "tolerance": settings.tolerance, "weight_decay": settings.weight_decay, "dimension": objective.dim,
            "theta_norm": float(torch.linalg.vector_norm(theta)),
            "start_theta_norm": float(torch.linalg.vector_norm(start.get())), "loss": search.loss,
            "accuracy": search.accuracy}


def spectrum_arrays(block: str, spectrum: BlockSpectrum) -> Arrays:
    """One block's lowest Ritz values and residuals, its whole spectrum where it was formed densely, and its
    eigenvectors (the lowest, then the largest)."""
    arrays: Arrays = {f"spectrum/{block}/lowest": spectrum.lowest.cpu().numpy(),
                      f"spectrum/{block}/lowest_residuals": spectrum.residuals.cpu().numpy()}
    if spectrum.values is not None:
        arrays[f"spectrum/{block}/all"] = spectrum.values.cpu().numpy()
    # Eigenvectors in float32: they show a direction, not a value (float64 would double the file).
    vectors = torch.cat([spectrum.lowest_vectors, spectrum.largest_vector[None]])
    arrays[f"eigenvectors/{block}"] = vectors.to(torch.float32).cpu().numpy()
    return arrays


def spectrum_attrs(block: str, spectrum: BlockSpectrum) -> Attrs:
    """One block's extreme eigenvalues, their residuals and bounds, and how they were found."""
    lowest = float(spectrum.lowest[0]) if len(spectrum.lowest) else math.nan
    return {f"lambda_min_{block}": lowest,
            f"lambda_min_{block}_residual": float(spectrum.residuals[0]) if len(spectrum.lowest) else math.nan,
            f"lambda_min_{block}_lower_bound": spectrum.lower_bound,
            f"lambda_max_{block}": spectrum.largest, f"lambda_max_{block}_residual": spectrum.largest_residual,
            f"spectrum_method_{block}": spectrum.method, f"dimension_{block}": spectrum.dim,
            f"negative_count_{block}": spectrum.negative, f"krylov_dim_{block}": spectrum.steps,
            f"lanczos_breakdown_{block}": spectrum.breakdown, f"lanczos_converged_{block}": spectrum.converged,
            f"ritz_outside_{block}": spectrum.outside, f"ritz_rejected_{block}": spectrum.rejected,
            f"products_{block}": spectrum.products}


def perturbations(settings: StabilitySettings, objective: ModelObjective, theta: torch.Tensor,
                  found: dict[str, BlockSpectrum], attrs: Attrs, arrays: Arrays, generator: torch.Generator,
                  progress: StageReport) -> None:
    """The four perturbation runs (along H_⊥'s lowest eigenvector and a random direction of E⊥, each plain
    and regularised) into ``arrays``, their measured and predicted rates and the step into ``attrs``."""
    lambda_max = max(found["E"].largest, found["perp"].largest)
    lambda_min = attrs["lambda_min_perp"]
    lr = settings.step_factor / lambda_max
    gamma = max(0.0, -lambda_min) + settings.reg_margin * lambda_max if math.isfinite(lambda_min) else math.nan
    epsilon = settings.epsilon * float(torch.linalg.vector_norm(theta))
    attrs.update({"lambda_max": lambda_max, "lr": lr, "gamma": gamma, "epsilon_absolute": epsilon})
    random = random_unit(objective, objective.project_perp, generator)
    lowest_vectors = found["perp"].lowest_vectors
    directions = {"lowest": lowest_vectors[0] if len(lowest_vectors) else random, "random": random}
    steps = settings.perturbation_steps
    runs = f"perturbation runs of {steps} Aug gradient steps from A*"
    progress(runs, 0, 4)
    for name, direction in directions.items():
        for suffix, reg in (("", 0.0), ("_regularised", gamma if math.isfinite(gamma) else 0.0)):
            series = stationary.perturbation_run(objective, direction, epsilon, lr, steps, reg)
            progress(runs, sum(key.startswith("perturbation/") for key in arrays) + 1, 4)
            run = name + suffix
            arrays[f"perturbation/{run}"] = series.numpy()
            # From a random direction the slowest mode takes over only gradually: its rate is read on the
            # second half of the run.
            attrs[f"{run}_measured"] = stationary.measured_factor(series, skip=steps // 2 if name == "random" else 0)
            attrs[f"{run}_predicted"] = stationary.predicted_factor(lr, lambda_min, reg)
