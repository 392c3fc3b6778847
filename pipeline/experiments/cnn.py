"""Experiment C (docs/science.md §4): a C4-equivariant CNN, trained as Equi, then moved into an
unconstrained parametrisation and trained on the C4 orbit (or nominally, for contrast).

A trial's cell is its *variant*: the kernel support and the parametrisation of phase 2. Trials of one
variant that differ only in their seed can be trained packed in one process (``pipeline.core.packing``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pipeline.experiments.base import Experiment
from pipeline.experiments.claims import BELOW_REFERENCE, LEAVES_E, NO_CLAIM, STAYS_IN_E, Claim, GridCell
from pipeline.schema import GRAD_NORM
from pipeline.settings import (
    MAX_CHANNELS,
    MAX_EPOCHS,
    Augmentation,
    CommonSettings,
    ConfigError,
    atomic,
    check_choice,
    check_count,
    check_image_side,
    check_nonnegative,
    check_positive_int,
    check_rate,
)

if TYPE_CHECKING:  # the torch side's types; importing an experiment module must not import torch
    import torch

    from pipeline.core.data import Dataset
    from pipeline.core.models import CNN
    from pipeline.core.models.base import MeasuredModel
    from pipeline.core.training import EpochHooks, GradientStepper

# variant -> (kernel support, parametrisation of the unconstrained phase-2 model)
VARIANTS = {"cross": ("cross", "unitary"), "skew": ("skew", "unitary"), "nonunitary": ("cross", "nonunitary")}
VARIANT_WORDS = {"cross": "compatible, unitary", "skew": "incompatible support", "nonunitary": "non-orthogonal basis"}
PHASE2_MODES = ("aug", "nom")
# Kernel supports that 90° rotations map to themselves: L and E are compatible (docs/science.md §4).
ROTATION_INVARIANT_SUPPORTS = ("cross",)
PHASE2_OPTIMIZERS = ("gd", "sgd")
# Coefficients per kernel (for the storage of snapshots; tests/core/test_models.py checks them against the models):
# the C4 orbits of 3 x 3 pixels inside each support (cross: the centre and the four edges; skew: the edges),
# and the support's own pixels for the unconstrained bases.
EQUIVARIANT_BASIS_SIZES = {"cross": 2, "skew": 1}
SUPPORT_SIZE = 5


def head_orbits(settings: CNNSettings) -> int:
    """C4 orbits of the final s x s map: the coefficients of the equivariant head per (class, channel)."""
    return -(-(settings.image_size // 4) ** 2 // 4)  # full-batch gradient descent, or minibatches (the reference script)


@dataclass
class CNNSettings(CommonSettings):
    experiment: ClassVar[str] = "cnn"

    variant: str = "cross"
    cnn_channels: str = atomic("32,64,64")
    image_size: int = 28
    basis_seed: int = 0
    phase1_epochs: int = 250
    phase1_lr: float = 5e-4
    phase1_batch: int = 100
    phase2_epochs: int = 50
    phase2_lr: float = 2.5e-4
    phase2_optimizer: str = "gd"
    phase2_batch: int = 100
    phase2_mode: str = "aug"  # "aug" (the C4 orbit) or "nom" (the contrast extension)
    reg: float = 0.0  # phase-2 Aug only: gamma of the regulariser (gamma/2) ||A - Pi_E A||^2

    def validate(self) -> None:
        self.validate_common()
        check_choice("variant", self.variant, VARIANTS)
        check_choice("phase2_optimizer", self.phase2_optimizer, PHASE2_OPTIMIZERS)
        check_choice("phase2_mode", self.phase2_mode, PHASE2_MODES)
        widths = self.widths()
        if max(widths) > MAX_CHANNELS:
            raise ConfigError(f"cnn_channels={self.cnn_channels} is too large (channels of a layer); accepted: "
                              f"widths of at most {MAX_CHANNELS}")
        check_positive_int("image_size", self.image_size)
        if self.image_size % 4:
            raise ConfigError(f"image_size must be a positive multiple of 4 (two 2x2 poolings), got {self.image_size}")
        for name in ("phase1_batch", "phase2_batch"):
            check_positive_int(name, getattr(self, name))
        for name in ("phase1_epochs", "phase2_epochs", "basis_seed"):
            check_count(name, getattr(self, name))
        if self.phase1_epochs + self.phase2_epochs == 0:
            raise ConfigError("phase1_epochs + phase2_epochs must be at least 1, got 0 and 0")
        check_image_side("image_size", self.image_size)
        if self.phase1_epochs + self.phase2_epochs > MAX_EPOCHS:
            raise ConfigError(f"phase1_epochs={self.phase1_epochs} and phase2_epochs={self.phase2_epochs} are too many "
                              f"epochs for one trial; accepted: at most {MAX_EPOCHS} in all")
        check_rate("phase1_lr", self.phase1_lr)
        check_rate("phase2_lr", self.phase2_lr)
        check_nonnegative("reg", self.reg)

    @property
    def channel_widths(self) -> tuple[int, int, int] | None:
        try:
            widths = tuple(int(c) for c in str(self.cnn_channels).split(","))
        except ValueError:
            return None
        return widths if len(widths) == 3 and min(widths) > 0 else None

    def widths(self) -> tuple[int, int, int]:
        """The channel widths; settings that have none (``validate`` refuses them) raise ConfigError."""
        widths = self.channel_widths
        if widths is None:
            raise ConfigError(f"cnn_channels must be three positive integers a,b,c, got {self.cnn_channels!r}")
        return widths


class CNNExperiment(Experiment[CNNSettings, "GradientStepper"]):
    name = "cnn"
    settings_type = CNNSettings
    cell_key = "variant"
    mode_key = "phase2_mode"
    # "configs"/"config" are the names grid files and manifests used before variants had their own word.
    aliases = {"variants": "variant", "configs": "variant", "config": "variant"}
    trajectory_x = "epoch"
    first_phase_mode = "equi"
    title = "Experiment C"
    science_section = "4"
    cell_names = tuple(VARIANTS)
    train_flags = {"variant": "the CNN variant"}

    def irrelevant(self, settings: CNNSettings) -> set[str]:
        unused = set()
        if settings.phase2_optimizer == "gd":
            unused.add("phase2_batch")
        if settings.phase2_mode != "aug":
            unused.add("reg")
        if VARIANTS[settings.variant][1] != "nonunitary":
            unused.add("basis_seed")
        return unused

    def id_prefix(self, settings: CNNSettings) -> str:
        # Aug is the paper's phase 2 and keeps the ids it always had; the Nom contrast says so.
        suffix = "" if settings.phase2_mode == "aug" else f"-{settings.phase2_mode}"
        return f"cnn-{settings.variant}{suffix}"

    def describe(self, key: str, value: Any) -> str:
        if key == "variant":
            return f"{value} ({VARIANT_WORDS.get(value, '')})"
        if key == "phase2_mode":
            return {"aug": "phase 2 Aug (C4 orbit)", "nom": "phase 2 Nom"}.get(value, str(value))
        if key == "phase2_optimizer":
            return {"gd": "full-batch GD", "sgd": "minibatch SGD"}.get(value, str(value))
        return super().describe(key, value)

    def cell_title(self, cell: str) -> str:
        return f"{cell}\n{VARIANT_WORDS[cell]}" if cell in VARIANT_WORDS else str(cell)

    def exact_orbit(self, mode: str, settings: dict) -> bool:
        # Full-batch phase 2 sums over the whole C4 orbit; minibatches of the shuffled orbit are not whole orbits.
        return mode == "aug" and settings.get("phase2_optimizer", "gd") == "gd"

    def series_words(self, mode: str, settings: dict) -> str:
        # The mode of a CNN trial is that of its phase 2; phase 1 is always Equi.
        return ", ".join([self.describe(self.mode_key, mode), *(self.describe(k, v) for k, v in settings.items())])

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """docs/science.md §7: phase 1 (Equi) stays in E; in phase 2 Aug stays in E when the support is
        compatible and the parametrisation unitary, and leaves it otherwise; Nom leaves it."""
        claims = []
        for cell in cells:
            subject = f"cnn {cell.cell} ({', '.join([cell.mode, *(self.describe(k, v) for k, v in cell.swept.items())])})"
            claims.append(Claim(STAYS_IN_E, subject, "phase 1 (Equi) stays in E", cell, "2", "Equi", phase=1))
            support, parametrization = VARIANTS.get(cell.cell, (None, None))
            minibatches = cell.value("phase2_optimizer", "gd") != "gd"
            if cell.mode == "nom":
                claims.append(Claim(LEAVES_E, subject, "Nom leaves E in phase 2", cell, "1", "claim 5",
                                    threshold="NOM_MIN_RATIO"))
            elif cell.mode != "aug" or support is None:
                claims.append(Claim(NO_CLAIM, subject, "no phase-2 claim applies: docs/science.md states none about "
                                    "this phase-2 mode or variant", cell))
            elif (cell.value("reg", 0.0) or 0.0) > 0:
                claims.append(Claim(NO_CLAIM, subject, "no phase-2 claim applies: regularised Aug (reg > 0) is pulled "
                                    "back towards E on purpose; its phase 2 is not what claims 2 and 4 describe", cell))
            elif support in ROTATION_INVARIANT_SUPPORTS and parametrization == "unitary" and minibatches:
                # Minibatches of the shuffled orbit are not whole orbits: like sampled Aug (§2) their steps
                # only estimate the Aug gradient, and claim 2 is judged on exact-orbit runs only (§7).
                nom = [c for c in cells if c.cell == cell.cell and c.mode == "nom"
                       and {k: v for k, v in c.swept.items() if k != "reg"} == {k: v for k, v in cell.swept.items()
                                                                               if k != "reg"}]
                if nom:
                    claims.append(Claim(BELOW_REFERENCE, subject, "Aug (minibatch SGD) leaves E less than Nom in "
                                        "phase 2", cell, "7", "sampled Aug is compared with Nom", reference=nom[0]))
                else:
                    claims.append(Claim(NO_CLAIM, subject, "no phase-2 claim applies: minibatch SGD on the augmented "
                                        "data does not take the exact orbit gradient that claim 2 is about, and this "
                                        "grid has no phase-2 Nom trials to compare it with", cell))
            elif support in ROTATION_INVARIANT_SUPPORTS and parametrization == "unitary":
                claims.append(Claim(STAYS_IN_E, subject, "Aug stays in E in phase 2 (compatible, unitary)", cell,
                                    "1", "claim 2", phase=2))
            else:
                why = ("incompatible support" if support not in ROTATION_INVARIANT_SUPPORTS
                       else "non-unitary parametrization")
                claims.append(Claim(LEAVES_E, subject, f"Aug leaves E in phase 2 ({why})", cell, "1", "claim 4",
                                    threshold="LEAVES_E_MIN_RATIO", above_roundoff=True))
        return claims

    def total_epochs(self, settings: CNNSettings) -> int:
        return settings.phase1_epochs + settings.phase2_epochs

    def phase_of(self, settings: CNNSettings, epoch: int) -> int:
        return 2 if epoch > settings.phase1_epochs else 1

    def phase_ends(self, settings: CNNSettings) -> list[int]:
        return [settings.phase1_epochs] if settings.phase1_epochs and settings.phase2_epochs else []

    def evaluation_loss(self, settings: CNNSettings) -> str:
        return "mse"

    def pack_key(self, settings: CNNSettings) -> str:
        values = dataclasses.asdict(settings)
        values.pop("seed")
        return repr(sorted(values.items()))

    # -- torch side ---------------------------------------------------------------------------------------
    def load_data(self, settings: CNNSettings, device: torch.device | str, dtype: torch.dtype) -> Dataset:
        from pipeline.core.data import load_mnist  # deferred: torch

        return load_mnist(settings.n_samples, size=settings.image_size, normalize=True,
                          source=settings.data_source).to(device, dtype)

    def build_model(self, settings: CNNSettings, phase: int = 1) -> MeasuredModel:
        from pipeline.core.models import CNN  # deferred: torch
        from pipeline.core.training import seeded_generator  # deferred: torch

        support, free = VARIANTS[settings.variant]
        parametrization = "equivariant" if phase == 1 else free
        model = CNN(support, parametrization, settings.widths(), settings.image_size,
                    basis_seed=settings.basis_seed).double()
        model.initialize(seeded_generator(settings.seed, "init"))
        return model

    def enter_phase(self, settings: CNNSettings, stepper: GradientStepper, phase: int) -> GradientStepper:
        _, free = VARIANTS[settings.variant]
        return self.stepper([model.transferred(free, settings.basis_seed) for model in stepper.models], stepper.seeds)

    def stepper(self, models: list[MeasuredModel], seeds: list[int], settings: CNNSettings | None = None,
                data: Dataset | None = None) -> GradientStepper:
        from pipeline.core.packing import PackedCNN, PackedStepper  # deferred: torch
        from pipeline.core.training import SingleStepper  # deferred: torch

        if len(models) == 1:
            return SingleStepper(models[0], seeds)
        # This experiment's models are CNNs (build_model); a packed stepper's models are its packed views, which
        # the Stepper protocol declares settable though no runner sets them (pipeline.core.training).
        return cast("GradientStepper", PackedStepper(PackedCNN(cast("list[CNN]", models)), seeds))

    def train_epoch(self, settings: CNNSettings, stepper: GradientStepper, data: Dataset, epoch: int,
                    hooks: EpochHooks) -> dict[str, list[float]]:
        from pipeline.core.training import full_batch_epoch, seeded_generator, sgd_epoch  # deferred: torch

        generators = [seeded_generator(seed, epoch, "data order and augmentation") for seed in stepper.seeds]
        if self.phase_of(settings, epoch) == 1:
            # Phase 1 is Equi, in E by construction: its steps are not recorded one by one.
            grad_norms = sgd_epoch(stepper, data, "equi", None, settings.phase1_lr, "mse", settings.phase1_batch,
                                   generators, hooks.without_steps())
            return {GRAD_NORM: grad_norms}
        orbit = Augmentation("orbit")
        if settings.phase2_optimizer == "sgd":
            grad_norms = sgd_epoch(stepper, data, settings.phase2_mode, orbit, settings.phase2_lr, "mse",
                                   settings.phase2_batch, generators, hooks, reg=settings.reg)
            return {GRAD_NORM: grad_norms}
        grad_norms = full_batch_epoch(stepper, data, settings.phase2_mode, orbit, settings.phase2_lr, "mse",
                                      settings.chunk_size, generators, hooks, reg=settings.reg)
        hooks.after_step()  # full-batch gradient descent: one optimizer step per epoch
        return {GRAD_NORM: grad_norms}

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings: CNNSettings) -> int:
        widths = (1, *settings.widths())
        size = settings.image_size
        sizes = (size, size // 2, size // 4)
        convs = sum(2 * widths[i] * widths[i + 1] * 9 * sizes[i] ** 2 for i in range(3))
        return convs + 2 * 10 * widths[3] * sizes[2] ** 2

    def rows_per_sample(self, settings: CNNSettings, phase: int = 1) -> int:
        return 4 if phase == 2 and settings.phase2_mode == "aug" else 1

    def separate_evaluation(self, settings: CNNSettings, phase: int = 1) -> bool:
        if phase == 1 or settings.phase2_optimizer == "sgd":
            return True
        return settings.phase2_mode == "aug" and settings.n_samples % settings.chunk_size != 0

    def snapshot_values(self, settings: CNNSettings, phase: int = 1) -> int:
        widths = (1, *settings.widths())
        pairs = sum(widths[i] * widths[i + 1] for i in range(3))
        head = 10 * widths[3] * (settings.image_size // 4) ** 2
        support, free = VARIANTS[settings.variant]
        # Kernels and head map in weight space, and the coefficients of the phase's parametrisation (a free
        # phase-2 head is its weight map itself, stored once).
        if phase == 1:
            return 9 * pairs + head + EQUIVARIANT_BASIS_SIZES[support] * pairs + 10 * widths[3] * head_orbits(settings)
        return 9 * pairs + head + SUPPORT_SIZE * pairs


EXPERIMENT = CNNExperiment()
