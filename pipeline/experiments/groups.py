"""Experiment G (docs/science.md §3): the same network for four groups, trained as Equi, Aug or Nom.

Full-batch gradient descent from a seeded equivariant point A⁰, one step per epoch; Aug either over the
whole orbit (exact) or with P sampled passes. A trial's cell is its group.

An extension, not in the paper (``optimizer = "sgd"``): minibatch SGD over shuffled samples, so that the
network actually learns while the claims are watched. Equi projects every step onto E; sampled Aug sees
each minibatch through one random group element (P passes an epoch, the paper's sampling scheme); orbit
Aug sees each minibatch through every element, so that every step is the exact Aug gradient of its
samples. The extension is its own arm: its trials are named ``<group>-<mode>-sgd-...``, its legends say
"extension", and its figures are drawn apart from the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.experiments.base import Experiment
from pipeline.experiments.claims import BELOW_REFERENCE, LEAVES_E, NO_CLAIM, STAYS_IN_E, Claim, GridCell
from pipeline.schema import GRAD_NORM
from pipeline.settings import (
    AUG_BATCH,
    LOSSES,
    MAX_CHANNELS,
    MAX_EPOCHS,
    MODES,
    Augmentation,
    CommonSettings,
    ConfigError,
    check_at_most,
    check_choice,
    check_image_side,
    check_nonnegative,
    check_positive_int,
    check_rate,
)

if TYPE_CHECKING:  # the torch side's types; importing an experiment module must not import torch
    import torch

    from pipeline.core.data import Dataset
    from pipeline.core.models.base import MeasuredModel
    from pipeline.core.training import EpochHooks, GradientStepper

GROUP_NAMES = ("rot", "trans", "trans1d", "rototrans")
# |G| on an n x n grid, for the cost model (pipeline.core.pixel_groups builds the groups themselves).
GROUP_ORDERS = {"rot": lambda n: 4, "trans": lambda n: n * n, "trans1d": lambda n: n, "rototrans": lambda n: 4 * n * n}
INVARIANT_ACTIVATIONS = ("auto", "tanh", "leaky_relu")
HIDDEN_ACTIVATIONS = ("leaky_relu", "tanh")
GROUP_TITLES = {"rot": r"rot: C$_4$", "trans": r"trans: $\mathbb{Z}_n^2$",
                "trans1d": r"trans1d: $\mathbb{Z}_n$ along x", "rototrans": r"rototrans: C$_4$ and $\mathbb{Z}_n^2$"}
# Settings that only Aug trials use: a Nom cell to compare Aug with differs from it in nothing else.
AUG_ONLY_SETTINGS = ("augment", "aug_batch", "reg")
# Full-batch gradient descent (the paper's Experiment G), or minibatch SGD (an extension that trains).
OPTIMIZERS = ("gd", "sgd")
OPTIMIZER_WORDS = {"gd": "", "sgd": "extension: minibatch SGD"}  # the paper's own scheme goes unnamed


@dataclass
class GroupsSettings(CommonSettings):
    experiment: ClassVar[str] = "groups"

    group: str = "rot"
    mode: str = "nom"
    n: int = 14
    channels: int = 32
    epochs: int = 50
    lr: float = 5e-5
    augment: str = "sampled:25"
    aug_batch: int = AUG_BATCH
    reg: float = 0.0  # Aug only: gamma of the regulariser (gamma/2) ||A - Pi_E A||^2 (docs/science.md §5)
    loss: str = "cross_entropy"
    invariant_activation: str = "auto"
    hidden_activation: str = "leaky_relu"  # after A0 and A1 (tanh: a smooth network, for Hessians)
    optimizer: str = "gd"  # "gd": one full-batch step an epoch (the paper); "sgd": minibatches (an extension)
    batch_size: int = 50  # sgd only: samples per minibatch

    def validate(self) -> None:
        self.validate_common()
        check_choice("group", self.group, GROUP_NAMES)
        check_choice("mode", self.mode, MODES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("invariant_activation", self.invariant_activation, INVARIANT_ACTIVATIONS)
        check_choice("hidden_activation", self.hidden_activation, HIDDEN_ACTIVATIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("channels", "epochs", "aug_batch", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if self.optimizer == "sgd" and self.batch_size > self.n_samples:
            raise ConfigError(f"batch_size {self.batch_size} is more than n_samples {self.n_samples}: a minibatch "
                              f"would be the whole data; accepted: 1..{self.n_samples}, or optimizer=gd for "
                              "full-batch steps")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ConfigError(f"n must be an integer >= 2 (images are n x n), got {self.n!r}")
        check_image_side("n", self.n)
        check_at_most("channels", self.channels, MAX_CHANNELS, "channels of a layer")
        check_at_most("epochs", self.epochs, MAX_EPOCHS, "epochs of one trial")
        check_rate("lr", self.lr)
        check_nonnegative("reg", self.reg)
        Augmentation.parse(self.augment)


class GroupsExperiment(Experiment[GroupsSettings, "GradientStepper"]):
    name = "groups"
    settings_type = GroupsSettings
    cell_key = "group"
    aliases = {"groups": "group", "modes": "mode"}
    trajectory_x = "travelled"
    title = "Experiment G"
    science_section = "3"
    cell_names = GROUP_NAMES
    train_flags = {"group": "the group", "mode": "the training mode",
                   "seed": "seed of the initial point and the data order", "epochs": "epochs of training",
                   "n_samples": "MNIST samples", "channels": "channels of the network", "lr": "learning rate",
                   "augment": "how Aug averages: orbit or sampled:P", "dtype": "floating point type",
                   "device": "where to train: auto, cpu, cuda or cuda:N"}
    # A legend that says "Aug" must say whether it is the exact orbit or sampled passes, and every legend of
    # the minibatch-SGD arm that it is the extension.
    series_settings = ("augment", "optimizer")
    arm_key = "optimizer"

    def irrelevant(self, settings: GroupsSettings) -> set[str]:
        unused = set()
        if settings.mode != "aug":
            unused |= {"augment", "aug_batch", "reg"}
        elif settings.augment == "orbit" or settings.optimizer == "sgd":
            unused.add("aug_batch")  # SGD draws one element per minibatch of batch_size
        if settings.optimizer == "gd":
            unused.add("batch_size")
        return unused

    def id_prefix(self, settings: GroupsSettings) -> str:
        # The paper's arm keeps the ids it always had; the extension says so.
        return f"{settings.group}-{settings.mode}" + ("" if settings.optimizer == "gd" else f"-{settings.optimizer}")

    def describe(self, key: str, value: Any) -> str:
        if key == "augment":
            augmentation = Augmentation.parse(value)
            if augmentation.kind == "orbit":
                return "exact orbit"
            return f"{augmentation.passes} sampled pass{'es' if augmentation.passes != 1 else ''}"
        if key == "mode":
            return self.mode_words(value)
        if key == "optimizer":
            return OPTIMIZER_WORDS.get(value, str(value))
        if key == "batch_size":
            return f"batch {value}"
        return super().describe(key, value)

    def exact_orbit(self, mode: str, settings: dict) -> bool:
        return mode == "aug" and settings.get("augment") == "orbit"

    def arm_title(self, value: Any) -> str:
        return "" if value == "gd" else f"{self.display_title()}, {OPTIMIZER_WORDS.get(value, value)}"

    def cell_title(self, cell: str) -> str:
        return GROUP_TITLES.get(cell, str(cell))

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """docs/science.md §7: Equi and exact-orbit Aug stay in E; sampled Aug leaves it less than Nom;
        Nom leaves it at a rate comparable to the distance travelled."""
        claims = []
        for cell in cells:
            # The claim's own text names how Aug was evaluated; the subject names the other swept values.
            others = [self.describe(k, v) for k, v in cell.swept.items() if k != "augment"]
            if "optimizer" not in cell.swept:  # a grid of one arm: the extension still says what it is
                others.append(self.describe("optimizer", cell.value("optimizer", "gd")))
            others = [words for words in others if words]  # the paper's own scheme goes unnamed
            subject = cell.cell + (f" ({', '.join(others)})" if others else "")
            augments = tuple(str(v) for v in cell.values.get("augment", ()))
            if cell.mode == "equi":
                claims.append(Claim(STAYS_IN_E, subject, "Equi stays in E", cell, "2", "Equi"))
            elif cell.mode == "aug" and (cell.value("reg", 0.0) or 0.0) > 0:
                claims.append(Claim(NO_CLAIM, subject, "no claim applies: regularised Aug (reg > 0) is pulled back "
                                    "towards E on purpose; its trajectories are not what claims 2 and 4 describe",
                                    cell))
            elif cell.mode == "aug" and augments == ("orbit",):
                claims.append(Claim(STAYS_IN_E, subject, "Aug (orbit) stays in E", cell, "1", "claim 2"))
            elif cell.mode == "aug":
                wanted = {k: v for k, v in cell.swept.items() if k not in AUG_ONLY_SETTINGS}
                nom = [c for c in cells if c.cell == cell.cell and c.mode == "nom" and c.swept == wanted]
                if nom:
                    claims.append(Claim(BELOW_REFERENCE, subject, f"Aug ({'/'.join(augments)}) leaves E less than Nom",
                                        cell, "3", "expected picture", reference=nom[0]))
                else:
                    claims.append(Claim(NO_CLAIM, subject, "no claim applies: sampled Aug is judged against Nom, and "
                                        "this grid has no Nom trials of the same group and settings", cell))
            elif cell.mode == "nom":
                claims.append(Claim(LEAVES_E, subject, "Nom leaves E at a rate comparable to the distance travelled",
                                    cell, "1", "claim 5", threshold="NOM_MIN_RATIO"))
        return claims

    def total_epochs(self, settings: GroupsSettings) -> int:
        return settings.epochs

    def meant_to_learn(self, settings: dict) -> bool:
        # The paper's Experiment G takes a few small full-batch steps from A⁰: it measures how the modes move away
        # from E, not what a trained network does. The minibatch-SGD extension is a training run.
        return settings.get("optimizer", "gd") == "sgd"

    def probe_words(self) -> str:
        return ("As in the paper (full-batch gradient descent, 50 steps at learning rate 5e-5 in its public code), "
                "Experiment G probes the dynamics near the equivariant start A⁰ under small full-batch steps; it is "
                "not a training run, and its accuracy stays near chance by design (the minibatch-SGD extension "
                "arm, where a grid has one, is the training run).")

    def group_order(self, settings: GroupsSettings) -> int:
        return GROUP_ORDERS[settings.group](settings.n)

    # -- torch side ---------------------------------------------------------------------------------------
    def load_data(self, settings: GroupsSettings, device: torch.device | str, dtype: torch.dtype) -> Dataset:
        from pipeline.core.data import load_mnist  # deferred: torch

        return load_mnist(settings.n_samples, size=settings.n, source=settings.data_source).to(device, dtype)

    def build_model(self, settings: GroupsSettings, phase: int = 1) -> MeasuredModel:
        from pipeline.core.models import GroupNet  # deferred: torch
        from pipeline.core.pixel_groups import get_group  # deferred: torch
        from pipeline.core.training import seeded_generator  # deferred: torch

        activation = None if settings.invariant_activation == "auto" else settings.invariant_activation
        model = GroupNet(get_group(settings.group, settings.n), settings.channels, invariant_activation=activation,
                         hidden_activation=settings.hidden_activation)
        model = model.double()
        model.initialize(seeded_generator(settings.seed, "init"))
        return model

    def train_epoch(self, settings: GroupsSettings, stepper: GradientStepper, data: Dataset, epoch: int,
                    hooks: EpochHooks) -> dict[str, list[float]]:
        from pipeline.core.training import full_batch_epoch, minibatch_epoch, seeded_generator  # deferred: torch

        generators = [seeded_generator(seed, epoch, "data order and augmentation") for seed in stepper.seeds]
        augmentation = Augmentation.parse(settings.augment, settings.aug_batch)
        if settings.optimizer == "sgd":
            # Many steps an epoch: recording each would cost a measurement of every layer per step.
            grad_norms = minibatch_epoch(stepper, data, settings.mode, augmentation, settings.lr, settings.loss,
                                         settings.batch_size, settings.chunk_size, generators, hooks.without_steps(),
                                         reg=settings.reg)
        else:
            grad_norms = full_batch_epoch(stepper, data, settings.mode, augmentation, settings.lr, settings.loss,
                                          settings.chunk_size, generators, hooks, reg=settings.reg)
        return {GRAD_NORM: grad_norms}

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings: GroupsSettings) -> int:
        N, C = settings.n**2, settings.channels
        return 2 * (C * N * N + C * C * N * N + C * C * N + C * 10)

    def rows_per_sample(self, settings: GroupsSettings, phase: int = 1) -> int:
        if settings.mode != "aug":
            return 1
        augmentation = Augmentation.parse(settings.augment)
        return self.group_order(settings) if augmentation.kind == "orbit" else augmentation.passes

    def separate_evaluation(self, settings: GroupsSettings, phase: int = 1) -> bool:
        if settings.optimizer == "sgd":
            return True  # no gradient pass sees the point an epoch starts from whole
        if settings.mode != "aug":
            return False
        # The orbit's first |data| rows are the plain data: whole chunks of them give the loss for free.
        return settings.augment != "orbit" or settings.n_samples % settings.chunk_size != 0

    def snapshot_values(self, settings: GroupsSettings, phase: int = 1) -> int:
        N, C = settings.n**2, settings.channels
        return C * N * N + C * C * N * N + C * C * N + 10 * C  # A0, A1, A2 and the head


EXPERIMENT = GroupsExperiment()
