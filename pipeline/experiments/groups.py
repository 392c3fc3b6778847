"""Experiment G (docs/science.md §3): the same network for four groups, trained as Equi, Aug or Nom.

Full-batch gradient descent from a seeded equivariant point A⁰, one step per epoch; Aug either over the
whole orbit (exact) or with P sampled passes. A trial's cell is its group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..settings import (LOSSES, MAX_CHANNELS, MAX_EPOCHS, MODES, Augmentation, CommonSettings, ConfigError,
                        check_at_most, check_choice, check_image_side, check_nonnegative, check_positive_int,
                        check_rate)
from .base import BELOW_REFERENCE, LEAVES_E, NO_CLAIM, STAYS_IN_E, Claim, Experiment, GridCell

GROUP_NAMES = ("rot", "trans", "trans1d", "rototrans")
# |G| on an n x n grid, for the cost model (pipeline.groups builds the groups themselves).
GROUP_ORDERS = {"rot": lambda n: 4, "trans": lambda n: n * n, "trans1d": lambda n: n, "rototrans": lambda n: 4 * n * n}
INVARIANT_ACTIVATIONS = ("auto", "tanh", "leaky_relu")
HIDDEN_ACTIVATIONS = ("leaky_relu", "tanh")
GROUP_TITLES = {"rot": r"rot: C$_4$", "trans": r"trans: $\mathbb{Z}_n^2$",
                "trans1d": r"trans1d: $\mathbb{Z}_n$ along x", "rototrans": r"rototrans: C$_4$ and $\mathbb{Z}_n^2$"}
# Settings that only Aug trials use: a Nom cell to compare Aug with differs from it in nothing else.
AUG_ONLY_SETTINGS = ("augment", "aug_batch", "reg")


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
    aug_batch: int = 25
    reg: float = 0.0  # Aug only: gamma of the regulariser (gamma/2) ||A - Pi_E A||^2 (docs/science.md §5)
    loss: str = "cross_entropy"
    invariant_activation: str = "auto"
    hidden_activation: str = "leaky_relu"  # after A0 and A1 (tanh: a smooth network, for Hessians)

    def validate(self) -> None:
        self.validate_common()
        check_choice("group", self.group, GROUP_NAMES)
        check_choice("mode", self.mode, MODES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("invariant_activation", self.invariant_activation, INVARIANT_ACTIVATIONS)
        check_choice("hidden_activation", self.hidden_activation, HIDDEN_ACTIVATIONS)
        for name in ("channels", "epochs", "aug_batch"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise ConfigError(f"n must be an integer >= 2 (images are n x n), got {self.n!r}")
        check_image_side("n", self.n)
        check_at_most("channels", self.channels, MAX_CHANNELS, "channels of a layer")
        check_at_most("epochs", self.epochs, MAX_EPOCHS, "epochs of one trial")
        check_rate("lr", self.lr)
        check_nonnegative("reg", self.reg)
        Augmentation.parse(self.augment)


class GroupsExperiment(Experiment):
    name = "groups"
    settings_type = GroupsSettings
    cell_key = "group"
    aliases = {"groups": "group", "modes": "mode"}
    trajectory_x = "travelled"
    title = "Experiment G"
    science_section = "3"
    cell_names = GROUP_NAMES
    # A legend that says "Aug" must say whether it is the exact orbit or sampled passes.
    series_settings = ("augment",)

    def irrelevant(self, settings) -> set[str]:
        if settings.mode != "aug":
            return {"augment", "aug_batch", "reg"}
        return {"aug_batch"} if settings.augment == "orbit" else set()

    def describe(self, key, value) -> str:
        if key == "augment":
            augmentation = Augmentation.parse(value)
            return "exact orbit" if augmentation.kind == "orbit" else f"{augmentation.passes} sampled passes"
        if key == "mode":
            return self.mode_words(value)
        return super().describe(key, value)

    def cell_title(self, cell: str) -> str:
        return GROUP_TITLES.get(cell, str(cell))

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """docs/science.md §7: Equi and exact-orbit Aug stay in E; sampled Aug leaves it less than Nom;
        Nom leaves it at a rate comparable to the distance travelled."""
        claims = []
        for cell in cells:
            # The claim's own text names how Aug was evaluated; the subject names the other swept values.
            others = {k: v for k, v in cell.swept.items() if k != "augment"}
            subject = cell.cell + (f" ({', '.join(self.describe(k, v) for k, v in others.items())})" if others else "")
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

    def total_epochs(self, settings) -> int:
        return settings.epochs

    def group_order(self, settings) -> int:
        return GROUP_ORDERS[settings.group](settings.n)

    # -- torch side ---------------------------------------------------------------------------------------
    def load_data(self, settings, device, dtype):
        from ..data import load_mnist

        return load_mnist(settings.n_samples, size=settings.n, source=settings.data_source).to(device, dtype)

    def build_model(self, settings, phase: int = 1):
        from ..groups import get_group
        from ..models import GroupNet
        from ..training import seeded_generator

        activation = None if settings.invariant_activation == "auto" else settings.invariant_activation
        model = GroupNet(get_group(settings.group, settings.n), settings.channels, invariant_activation=activation,
                         hidden_activation=settings.hidden_activation)
        model = model.double()
        model.initialize(seeded_generator(settings.seed, "init"))
        return model

    def train_epoch(self, settings, stepper, data, epoch, hooks) -> list[float]:
        from ..training import full_batch_epoch, seeded_generator

        generators = [seeded_generator(seed, epoch, "data order and augmentation") for seed in stepper.seeds]
        augmentation = Augmentation.parse(settings.augment, settings.aug_batch)
        return full_batch_epoch(stepper, data, settings.mode, augmentation, settings.lr, settings.loss,
                                settings.chunk_size, generators, hooks, reg=settings.reg)

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings) -> int:
        N, C = settings.n**2, settings.channels
        return 2 * (C * N * N + C * C * N * N + C * C * N + C * 10)

    def rows_per_sample(self, settings, phase: int = 1) -> int:
        if settings.mode != "aug":
            return 1
        augmentation = Augmentation.parse(settings.augment)
        return self.group_order(settings) if augmentation.kind == "orbit" else augmentation.passes

    def separate_evaluation(self, settings, phase: int = 1) -> bool:
        if settings.mode != "aug":
            return False
        # The orbit's first |data| rows are the plain data: whole chunks of them give the loss for free.
        return settings.augment != "orbit" or settings.n_samples % settings.chunk_size != 0

    def snapshot_values(self, settings) -> int:
        N, C = settings.n**2, settings.channels
        return C * N * N + C * C * N * N + C * C * N


EXPERIMENT = GroupsExperiment()
