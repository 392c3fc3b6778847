"""Experiment S's settings (docs/science.md §5) and the networks it measures, with what is expected of each.

A trial's cell is its network: the Experiment G network for each group, the CNN of Experiment C in each
variant (``cnn-`` + variant), and the two controls of the claim-3 detector (``toy-`` + ...). The experiment
itself is ``pipeline.experiments.stability``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from pipeline.core.stationarity import STATIONARITY_TOLERANCE
from pipeline.experiments.cnn import EXPERIMENT as CNN_EXPERIMENT
from pipeline.experiments.cnn import VARIANTS
from pipeline.experiments.groups import GROUP_NAMES
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
        self._validate_choices_and_sizes()
        self._validate_rates()

    def _validate_choices_and_sizes(self) -> None:
        """The named choices, the network's sizes and the counts of the search and the measurements."""
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

    def _validate_rates(self) -> None:
        """The tolerances, factors and margins: each within the range where what it sets means something."""
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
