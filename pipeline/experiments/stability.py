"""Experiment S (docs/science.md §5): equivariant stationary points, and whether Aug and Equi see them alike.

One trial, one network, one seed, in float64: from the seeded A⁰ ∈ E, find a stationary point A* of R on E
(L-BFGS on projected gradients, one block of iterations per recorded row, so a trial streams its
convergence and resumes mid-search); then measure, once, at A*: the identity of claim 1, the block
structure of the Aug Hessian, the low and high ends of the spectra of H_E (on E) and H_⊥ (on E⊥), and
the growth of perturbations off E under Aug gradient descent, plain and regularised (``results/`` of the
trial file). The mathematics is ``pipeline.core.stationary``.

Networks: the Experiment G network for each group, the CNN of Experiment C (A* from its equivariant
parametrisation, then measured in the variant's unconstrained one: ``cross`` meets the premises,
``skew`` and ``nonunitary`` are where they fail), and two controls of the claim-3 detector on two inputs with
G = Z₂ (``pipeline.core.models.swap_pair``): ``toy-z2``, where claim 3 holds provably, and ``toy-linear``, a convex
model where it cannot. A trial's cell is its network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pipeline.core.stationarity import STATIONARITY_TOLERANCE
from pipeline.experiments.base import Experiment, Labels
from pipeline.experiments.claims import (
    ALL_OF,
    ANY_OF,
    IDENTITY_AT_ROUNDOFF,
    IDENTITY_FAILS,
    STABILITY_DIFFERS,
    Claim,
    GridCell,
)
from pipeline.experiments.cnn import EXPERIMENT as CNN_EXPERIMENT
from pipeline.experiments.cnn import VARIANTS
from pipeline.experiments.groups import EXPERIMENT as GROUPS_EXPERIMENT
from pipeline.experiments.groups import GROUP_NAMES, GROUP_ORDERS
from pipeline.schema import ACCURACY, GRAD_NORM, LOSS
from pipeline.settings import (
    LOSSES,
    MAX_CHANNELS,
    MAX_EPOCHS,
    CommonSettings,
    ConfigError,
    atomic,
    check_at_most,
    check_choice,
    check_count,
    check_image_side,
    check_nonnegative,
    check_positive_int,
    check_rate,
)

CNN_PREFIX = "cnn-"
TOY_PREFIX = "toy-"
# The controls of the claim-3 detector (docs/science.md §5): what its verdict must be on each.
DEMONSTRATED_WORD, NOT_OBSERVED_WORD = "demonstrated", "not observed"
CONTROLS = {"toy-z2": DEMONSTRATED_WORD, "toy-linear": NOT_OBSERVED_WORD}
NETWORKS = (*GROUP_NAMES, *(CNN_PREFIX + variant for variant in VARIANTS), *CONTROLS)
# Where the premises of claims 1 and 3 (compatible L, unitary parametrisation) hold.
PREMISES_HOLD = {**{g: True for g in GROUP_NAMES}, "cnn-cross": True, "cnn-skew": False, "cnn-nonunitary": False,
                 **{name: True for name in CONTROLS}}
METHODS = ("lbfgs", "gd")
REFINEMENTS = ("newton", "none")
ACTIVATIONS = ("tanh", "paper")
MODE = "at A*"  # one mode: Equi and Aug are both measured at the stationary point


@dataclass
class StabilitySettings(CommonSettings):
    experiment: ClassVar[str] = "stability"

    network: str = "rot"
    n_samples: int = 256
    dtype: str = "float64"  # the identities are checked at round-off
    weights_every: int = 0  # A⁰ and A* (the last row always keeps its weights)
    n: int = 7  # Experiment G network: image n x n, channels
    channels: int = 4
    # Its activations: "tanh" everywhere (a twice-differentiable loss, which the Hessians of §5 presume), or
    # "paper" (LeakyReLU as in §3: perturbations that cross its kink change the gradient by jumps).
    activation: str = "tanh"
    cnn_channels: str = atomic("4,8,8")  # CNN: widths, image size (>= 12: smaller maps leave no signal on E)
    image_size: int = 12
    basis_seed: int = 0
    loss: str = "mse"  # against one-hot labels: a loss with genuine minimisers (the controls: squared error)
    # (weight_decay/2) ||A||^2 added to R (and so to R_aug): G-invariant, part of the objective studied. It shifts
    # every Hessian eigenvalue by its value and gives R finite minimisers where the data term alone has none.
    weight_decay: float = 0.0
    method: str = "lbfgs"  # the first stage of the search
    tolerance: float = 1e-3  # the first stage ends when ||Pi_E grad R|| has dropped by this factor ...
    max_iterations: int = 1000  # ... or after this many iterations (or when L-BFGS stalls)
    block: int = 50  # first-stage iterations per recorded row
    # The second stage: trust-region Newton on E, one step per recorded row. It ends by its criterion
    # (||Pi_E grad R|| <= stationarity_target * |lambda| * ||A||, the curvature scale of pipeline.core.stationarity), by
    # a certified stall (no decrease of R beyond round-off, nor of ||Pi_E grad R|| by half, in stall_window
    # steps), or by its budget: hessian_budget Hessian-vector products, time_budget seconds (0: none; a time
    # budget makes the result depend on the machine) or newton_iterations steps, whichever comes first.
    refine: str = "newton"
    newton_iterations: int = 1000
    hessian_budget: int = 10000
    time_budget: float = 0.0
    stationarity_target: float = 1e-4
    stall_window: int = 100
    cg_iterations: int = 200  # Hessian-vector products per Newton step, at most
    check_steps: int = 60  # Lanczos steps per block of a curvature check of the search
    eigenpairs: int = 3  # lowest eigenpairs kept per block (and the largest)
    # A block of dimension at most dense_limit is formed densely in an orthonormal basis (one product per
    # basis vector) and its whole spectrum computed: that is what certifies H_E >= 0. Larger blocks by Lanczos,
    # with at most lanczos_steps steps (fewer once the lowest pairs have converged).
    dense_limit: int = 3000
    lanczos_steps: int = 300
    epsilon: float = 1e-6  # size of the perturbation off E, relative to ||A*||
    perturbation_steps: int = 50
    # Aug gradient descent step: step_factor / lambda_max. Lanczos approaches lambda_max from below, so a step of
    # 1/lambda_max could pass the stability limit 2/lambda_max where it has not converged: half of it cannot.
    step_factor: float = 0.5
    reg_margin: float = 0.05  # regularised run: gamma = max(0, -lambda_min(H_perp)) + reg_margin * lambda_max

    def validate(self) -> None:
        self.validate_common()
        check_choice("network", self.network, NETWORKS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("method", self.method, METHODS)
        check_choice("refine", self.refine, REFINEMENTS)
        check_choice("activation", self.activation, ACTIVATIONS)
        if self.dtype != "float64":
            raise ConfigError(f"dtype must be float64 for Experiment S (its identities hold at float64 round-off), "
                              f"got {self.dtype!r}; accepted: float64")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ConfigError(f"n must be an integer >= 2 (images are n x n), got {self.n!r}")
        for name in ("channels", "max_iterations", "block", "eigenpairs", "perturbation_steps", "cg_iterations",
                     "stall_window", "check_steps"):
            check_positive_int(name, getattr(self, name))
        for name in ("newton_iterations", "hessian_budget", "dense_limit"):
            check_count(name, getattr(self, name))
        check_nonnegative("time_budget", self.time_budget)
        check_nonnegative("weight_decay", self.weight_decay)
        check_image_side("n", self.n)
        check_image_side("image_size", self.image_size)
        check_at_most("channels", self.channels, MAX_CHANNELS, "channels of a layer")
        check_at_most("max_iterations", self.max_iterations, MAX_EPOCHS * self.block,
                      f"{MAX_EPOCHS} rows of {self.block} iterations")
        for name in ("lanczos_steps", "perturbation_steps"):
            check_at_most(name, getattr(self, name), MAX_EPOCHS, "steps of one measurement")
        check_at_most("newton_iterations", self.newton_iterations, MAX_EPOCHS, "Newton steps of one search")
        check_at_most("cg_iterations", self.cg_iterations, MAX_EPOCHS, "Hessian-vector products of one step")
        check_at_most("check_steps", self.check_steps, MAX_EPOCHS, "steps of one measurement")
        check_count("basis_seed", self.basis_seed)
        if self.lanczos_steps <= self.eigenpairs:
            raise ConfigError(f"lanczos_steps must exceed eigenpairs ({self.eigenpairs}), got {self.lanczos_steps}")
        CNN_EXPERIMENT.make_settings({"cnn_channels": self.cnn_channels})  # the CNN's own check of the widths
        if self.image_size < 12 or self.image_size % 4:
            raise ConfigError(f"image_size must be a multiple of 4 and at least 12 (a 2 x 2 final map leaves every "
                              f"logit constant on E), got {self.image_size}")
        for name in ("tolerance", "epsilon", "step_factor", "stationarity_target"):
            check_rate(name, getattr(self, name))
        if self.tolerance >= 1:
            raise ConfigError(f"tolerance must be below 1 (a factor by which the gradient drops), got {self.tolerance}")
        if self.stationarity_target > STATIONARITY_TOLERANCE:
            raise ConfigError(f"stationarity_target must be at most {STATIONARITY_TOLERANCE:g}, the tolerance the "
                              f"claim-3 verdict judges (a search stopped above it is not stationary there), got "
                              f"{self.stationarity_target}")
        if self.step_factor >= 2:
            raise ConfigError(f"step_factor must be below 2 (beyond, gradient descent is unstable on E), "
                              f"got {self.step_factor}")
        if self.reg_margin < 0 or not math.isfinite(self.reg_margin):
            raise ConfigError(f"reg_margin must be a finite number >= 0, got {self.reg_margin!r}")

    @property
    def is_cnn(self) -> bool:
        return self.network.startswith(CNN_PREFIX)

    @property
    def is_control(self) -> bool:
        return self.network in CONTROLS


class StationaryStepper:
    """The stepper (``pipeline.core.training.Stepper``) of a stationary-point search: one model, its objective R,
    and the search, whose state (the L-BFGS memory, the trust radius) checkpoints keep."""

    resumable = True

    def __init__(self, model, settings: StabilitySettings, data, seeds: list[int]):
        from pipeline.core.stationary import ModelObjective, StationarySearch
        from pipeline.core.training import seeded_generator

        self.models, self.seeds = [model], list(seeds)
        self.objective = ModelObjective(model, data, EXPERIMENT.evaluation_loss(settings), settings.chunk_size,
                                        weight_decay=settings.weight_decay)
        self.search = StationarySearch(self.objective, settings.tolerance, settings.method, settings.block,
                                       max_iterations=settings.max_iterations, refine=settings.refine,
                                       newton_iterations=settings.newton_iterations,
                                       cg_iterations=settings.cg_iterations, target=settings.stationarity_target,
                                       hessian_budget=settings.hessian_budget or None,
                                       time_budget=settings.time_budget or None, stall_window=settings.stall_window,
                                       check_steps=settings.check_steps,
                                       generator=seeded_generator(settings.seed, "curvature checks"))

    @property
    def template(self):
        return self.models[0]

    def evaluate(self, data, loss, chunk_size):
        return [(self.search.loss, self.search.accuracy)]  # R and accuracy at the current point, as measured

    def state_dict(self) -> dict:
        return self.search.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.search.load_state_dict(state)


class StabilityExperiment(Experiment):
    name = "stability"
    settings_type = StabilitySettings
    cell_key = "network"
    mode_key = "network"  # there is one mode (MODE); labels() says so
    aliases = {"networks": "network"}
    trajectory_x = "epoch"
    has_final_stage = True
    title = "Experiment S"
    science_section = "5"
    cell_names = NETWORKS
    settings_per_cell = True  # presets give each network its own budget and sizes: ids name the network only

    # Its own figures come from what trials measure at A* (analysis/stationary_points.py); of the trajectory
    # figures only the convergence of the search says anything. A row is a block of the search, not an epoch;
    # its grad_norm is ||Pi_E grad R|| at the row's point.
    standard_figures = ("training_curves",)
    row_words = "search block (first-order blocks, then Newton steps)"
    curve_metrics = {LOSS: "R at the row's point", GRAD_NORM: "‖Π_E∇R‖ at the row's point",
                     ACCURACY: "training accuracy"}
    log_curves = (GRAD_NORM,)
    results_analysis = "stationary_points"  # the stationary point's spectra and perturbations
    curves_title = "the search for A*, block by block, on the (untransformed) training data"

    def labels(self, settings) -> Labels:
        return Labels(self.cell_key, settings.network, MODE)

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """docs/science.md §7: claim 1 at round-off where its premises hold (and Aug's gradient departing from
        Equi's where they do not); claim 3 wherever they hold; the detector's verdict on its controls; then
        claims 1 and 3 over all the networks of the grid that are not controls."""
        claims = []
        for cell in cells:
            subject = f"stationary points, {cell.cell}"
            if cell.cell in CONTROLS:
                expected = CONTROLS[cell.cell]
                why = ("claim 3 holds here provably" if expected == DEMONSTRATED_WORD
                       else "a convex model: H ⪰ 0 everywhere, so claim 3 cannot hold")
                claims.append(Claim(STABILITY_DIFFERS, f"detector control, {cell.cell}",
                                    f"the claim-3 detector says “{expected}” ({why})", cell, "5", "controls",
                                    expected=expected))
            elif PREMISES_HOLD.get(cell.cell, False):
                claims.append(Claim(IDENTITY_AT_ROUNDOFF, subject, "∇R_aug = Π_E ∇R at A⁰ and A* (to round-off)",
                                    cell, "1", "claim 1"))
                claims.append(Claim(STABILITY_DIFFERS, subject, "A* stable for Equi, unstable for Aug", cell, "1",
                                    "claim 3"))
            else:
                why = "incompatible support" if cell.cell.endswith("skew") else "non-unitary parametrisation"
                claims.append(Claim(IDENTITY_FAILS, subject, f"Aug's gradient departs from Equi's on E ({why})", cell,
                                    "1", "claim 4"))
        if any(PREMISES_HOLD.get(cell.cell, False) and cell.cell not in CONTROLS for cell in cells):
            everywhere = GridCell("every compatible network", MODE)
            claims.append(Claim(ALL_OF, "Experiment S", "claim 1: the equivariant stationary points of Equi and Aug "
                                "coincide (the identity holds in every compatible network)", everywhere, "1",
                                "claim 1", threshold=IDENTITY_AT_ROUNDOFF))
            claims.append(Claim(ANY_OF, "Experiment S", "claim 3: a stationary point stable for Equi can be unstable "
                                "for Aug (in a network of docs/science.md §3 or §4)", everywhere, "1", "claim 3",
                                threshold=STABILITY_DIFFERS))
        return claims

    def id_prefix(self, settings) -> str:
        return f"stab-{settings.network}"

    def meant_to_learn(self, settings: dict) -> bool:
        return settings.get("network") not in CONTROLS  # the controls fit real numbers: no accuracy to judge

    def mode_words(self, mode: str) -> str:
        return "at the stationary point A*" if mode == MODE else super().mode_words(mode)

    def cell_title(self, cell: str) -> str:
        # Seven networks side by side: the groups' full titles would run into each other.
        return cell

    def irrelevant(self, settings) -> set[str]:
        unused = set()
        if settings.refine == "none":
            unused |= {"newton_iterations", "cg_iterations", "hessian_budget", "time_budget", "stationarity_target",
                       "stall_window", "check_steps"}
        if settings.is_control:  # two fixed samples, a loss of their own, and exactly the objective of §5
            return unused | {"cnn_channels", "image_size", "basis_seed", "n", "channels", "activation", "n_samples",
                             "loss", "data_source", "weight_decay"}
        if not settings.is_cnn:
            return unused | {"cnn_channels", "image_size", "basis_seed"}
        unused |= {"n", "channels", "activation"}  # the CNN has tanh already
        if VARIANTS[settings.network[len(CNN_PREFIX):]][1] != "nonunitary":
            unused.add("basis_seed")
        return unused

    def total_epochs(self, settings) -> int:
        newton = settings.newton_iterations if settings.refine == "newton" else 0
        return -(-settings.max_iterations // settings.block) + newton

    def evaluation_loss(self, settings) -> str:
        if settings.is_control:
            from pipeline.core.training import SQUARED_ERROR

            return SQUARED_ERROR
        return settings.loss

    # -- the networks, borrowed from the experiments that define them ---------------------------------------
    def _delegate(self, settings):
        """The experiment that owns the network, and the settings of its Equi model."""
        common = {"seed": settings.seed, "n_samples": settings.n_samples, "dtype": settings.dtype,
                  "device": settings.device, "data_source": settings.data_source, "chunk_size": settings.chunk_size}
        if settings.is_cnn:
            return CNN_EXPERIMENT, CNN_EXPERIMENT.make_settings(
                {**common, "variant": settings.network[len(CNN_PREFIX):], "cnn_channels": settings.cnn_channels,
                 "image_size": settings.image_size, "basis_seed": settings.basis_seed})
        return GROUPS_EXPERIMENT, GROUPS_EXPERIMENT.make_settings(
            {**common, "group": settings.network, "mode": "equi", "n": settings.n, "channels": settings.channels,
             "loss": settings.loss, **({"hidden_activation": "tanh", "invariant_activation": "tanh"}
                                       if settings.activation == "tanh" else {})})

    def load_data(self, settings, device, dtype):
        if settings.is_control:
            from pipeline.core.models.swap_pair import swap_pair_data

            return swap_pair_data().to(device, dtype)
        owner, theirs = self._delegate(settings)
        return owner.load_data(theirs, device, dtype)

    def build_model(self, settings, phase: int = 1):
        if settings.is_control:
            from pipeline.core.models.swap_pair import SwapPairModel
            from pipeline.core.training import seeded_generator

            model = SwapPairModel(settings.network[len(TOY_PREFIX):]).double()
            model.initialize(seeded_generator(settings.seed, "init"))
            return model
        owner, theirs = self._delegate(settings)
        return owner.build_model(theirs, 1)  # the Equi model: parametrised in E, or projected onto it

    def stepper(self, models: list, seeds: list[int], settings=None, data=None):
        if len(models) != 1:
            raise ValueError("stability trials cannot be trained packed")
        return StationaryStepper(models[0], settings, data, seeds)

    def train_epoch(self, settings, stepper, data, epoch, hooks) -> dict[str, list[float]]:
        """One block of the search (a row is a search block, not an epoch)."""
        search = stepper.search
        hooks.before_update([(search.loss, search.accuracy)])
        search.step_block()
        return {GRAD_NORM: [search.norm]}  # the next row's "gradient": ||Pi_E grad R|| at the point it records

    def finished(self, settings, stepper) -> bool:
        return stepper.search.done

    # -- the measurements at A* ------------------------------------------------------------------------------
    def measured_model(self, settings, model):
        """The model in the coordinates the claims are about: for the CNN, the variant's unconstrained
        parametrisation (the same function)."""
        if not settings.is_cnn:
            return model
        return model.transferred(VARIANTS[settings.network[len(CNN_PREFIX):]][1], settings.basis_seed)

    def finalize(self, settings, stepper, data, sinks, progress=None) -> None:
        from pipeline.core.training import seeded_generator

        start = self.measured_model(settings, self.build_model(settings).to(device=data.images.device,
                                                                             dtype=data.images.dtype))
        arrays, attrs = measure(settings, stepper.search, self.measured_model(settings, stepper.models[0]), start,
                                data, seeded_generator(settings.seed, "stability measurements"),
                                progress=progress or (lambda stage, done, total=None: None))
        attrs["premises_hold"] = PREMISES_HOLD[settings.network]
        for sink in sinks:
            sink.write_results(arrays, attrs)

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings) -> int:
        if settings.is_control:
            return 8
        owner, theirs = self._delegate(settings)
        return owner.forward_flops_per_sample(theirs)

    def group_order(self, settings) -> int:
        if settings.is_control:
            return 2
        return 4 if settings.is_cnn else GROUP_ORDERS[settings.network](settings.n)

    def trial_flops(self, settings) -> int:
        """At most: the search (about 1.3 gradient evaluations an iteration, line searches included; then its
        budget of Hessian-vector products, a product costing about two gradients, and a gradient per Newton
        step), the claim-1 gradients at A⁰ and A*, the spectra (a product per basis vector of a dense block, at
        most ``dense_limit``; else a Lanczos run; H_⊥'s over the |G|-fold orbit), four perturbation runs of Aug
        gradient steps."""
        samples = 2 if settings.is_control else settings.n_samples
        forward = self.forward_flops_per_sample(settings) * samples
        gradient, orbit = 3 * forward, self.group_order(settings)
        search = 1.3 * settings.max_iterations * gradient
        if settings.refine == "newton":
            products = settings.newton_iterations * (settings.cg_iterations + 1)
            if settings.hessian_budget:
                products = min(products, settings.hessian_budget)
            search += (2 * products + settings.newton_iterations) * gradient
        claims = 2 * 2 * gradient * (1 + orbit)
        lanczos = max(settings.lanczos_steps, settings.dense_limit) * 2 * gradient * (1 + orbit)
        perturbations = 4 * settings.perturbation_steps * gradient * orbit
        return int(search + claims + lanczos + perturbations)

    def snapshot_values(self, settings, phase: int = 1) -> int:
        if settings.is_control:
            return 3 if settings.network == "toy-z2" else 2  # (a, w1, w2) or (w1, w2)
        owner, theirs = self._delegate(settings)
        return owner.snapshot_values(theirs, 1)  # the Equi model's, whose search it is


def measure(settings: StabilitySettings, search, model, start_model, data, generator,
            progress=lambda stage, done, total=None: None) -> tuple[dict, dict]:
    """Everything Experiment S measures once the search has ended: (arrays, attributes) of ``results/``.

    ``model`` is A* and ``start_model`` A⁰, both in the coordinates of the claims. Claim 1 is checked at
    both: at A* the gradients nearly vanish and the identity's residual is read against the scale of the
    plain gradient too; A⁰ is a point of E where they do not. The ends of both spectra come with what certifies
    them (``pipeline.core.certificates``: dense blocks where they fit, Lanczos Ritz pairs with computed residuals
    elsewhere, docs/science.md §7); the perturbation runs are anchored at A* (``stationary.perturbation_run``)."""
    import torch

    from pipeline.core import certificates, stationary

    loss = EXPERIMENT.evaluation_loss(settings)
    objective = stationary.ModelObjective(model, data, loss, settings.chunk_size, weight_decay=settings.weight_decay)
    start = stationary.ModelObjective(start_model, data, loss, settings.chunk_size,
                                      weight_decay=settings.weight_decay)
    theta = objective.get()
    orbit = EXPERIMENT.group_order(settings)
    identities = f"claim 1 at A* and A⁰ and the block structure (the search ended: {search.ended})"
    progress(identities, 0, 1)
    check = search.check
    attrs = {"network": settings.network, "converged": search.converged, "stalled": search.stalled,
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
    arrays: dict[str, Any] = {}  # tensors, and the parameters' names
    for block, spectrum in found.items():
        arrays[f"spectrum/{block}/lowest"] = spectrum.lowest.cpu().numpy()
        arrays[f"spectrum/{block}/lowest_residuals"] = spectrum.residuals.cpu().numpy()
        if spectrum.values is not None:
            arrays[f"spectrum/{block}/all"] = spectrum.values.cpu().numpy()
        # Eigenvectors in float32: they show a direction, not a value (float64 would double the file).
        vectors = torch.cat([spectrum.lowest_vectors, spectrum.largest_vector[None]])
        arrays[f"eigenvectors/{block}"] = vectors.to(torch.float32).cpu().numpy()
        lowest = float(spectrum.lowest[0]) if len(spectrum.lowest) else math.nan
        attrs.update({f"lambda_min_{block}": lowest,
                      f"lambda_min_{block}_residual": float(spectrum.residuals[0]) if len(spectrum.lowest) else math.nan,
                      f"lambda_min_{block}_lower_bound": spectrum.lower_bound,
                      f"lambda_max_{block}": spectrum.largest, f"lambda_max_{block}_residual": spectrum.largest_residual,
                      f"spectrum_method_{block}": spectrum.method, f"dimension_{block}": spectrum.dim,
                      f"negative_count_{block}": spectrum.negative, f"krylov_dim_{block}": spectrum.steps,
                      f"lanczos_breakdown_{block}": spectrum.breakdown, f"lanczos_converged_{block}": spectrum.converged,
                      f"ritz_outside_{block}": spectrum.outside, f"ritz_rejected_{block}": spectrum.rejected,
                      f"products_{block}": spectrum.products})

    lambda_max = max(found["E"].largest, found["perp"].largest)
    lambda_min = attrs["lambda_min_perp"]
    lr = settings.step_factor / lambda_max
    gamma = max(0.0, -lambda_min) + settings.reg_margin * lambda_max if math.isfinite(lambda_min) else math.nan
    epsilon = settings.epsilon * float(torch.linalg.vector_norm(theta))
    attrs.update({"lambda_max": lambda_max, "lr": lr, "gamma": gamma, "epsilon_absolute": epsilon})
    random = stationary.random_unit(objective, objective.project_perp, generator)
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
    arrays["parameters/names"] = objective.names
    arrays["parameters/sizes"] = objective.sizes
    return arrays, attrs


EXPERIMENT = StabilityExperiment()
