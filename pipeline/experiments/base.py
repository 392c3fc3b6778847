"""What an experiment is to the rest of the pipeline.

An experiment module (``groups``, ``cnn``, ...) owns everything particular to it: its settings dataclass,
the labels it gives a trial, its model and data, one epoch of its training, its analytic cost, and what
its results can be judged by. Everything else (grids, the manifest, the runner, the trial store, the
launcher, status, plan, the analysis) talks to experiments only through :class:`Experiment`, so that a new
experiment is one new module and one line in the registry (``pipeline/experiments/__init__.py``).

Importing an experiment module must not import torch: configuration, ``plan``, ``status`` and the
launch layer use them. Methods that train or build models import what they need when called.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ..settings import CommonSettings, ConfigError, field_types, parse_value


@dataclass(frozen=True)
class Trial:
    """One trial of a grid: where it sits (index and id) and what it runs (its settings).

    ``swept`` holds the settings other than the experiment's labels and the seed that vary across the
    grid and distinguish this trial (e.g. ``{"augment": "orbit"}``); they are part of its id and a column
    of every table.
    """

    index: int
    trial_id: str
    settings: CommonSettings
    swept: dict = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return type(self.settings).experiment


@dataclass(frozen=True)
class Labels:
    """How a trial is filed: its cell (the setting its panel is about: a group, a CNN variant) and mode."""

    cell_key: str
    cell: str
    mode: str


class Experiment:
    """The interface an experiment module implements. Defaults fit a single-phase experiment."""

    name: ClassVar[str]
    settings_type: ClassVar[type]
    cell_key: ClassVar[str]  # the setting a trial's cell is named by, e.g. "group"
    mode_key: ClassVar[str] = "mode"
    # Plural names that grid files may use for an axis (``groups = [...]`` for ``group``).
    aliases: ClassVar[dict[str, str]] = {}
    # The setting that figures put on the x axis of trajectories: "travelled" (distance travelled from A⁰)
    # or "epoch".
    trajectory_x: ClassVar[str] = "travelled"
    # The mode the first phase trains in, for figures of multi-phase experiments (None: one phase).
    first_phase_mode: ClassVar[str | None] = None

    # -- settings and labels ---------------------------------------------------------------------------
    def make_settings(self, values: dict) -> CommonSettings:
        """Settings from ``{name: text or value}``; unknown names and bad values raise ConfigError."""
        types = field_types(self.settings_type)
        values = {self.aliases.get(key, key): value for key, value in values.items()}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} for {self.name}; accepted: {', '.join(sorted(types))}")
        settings = self.settings_type(**{k: parse_value(k, v, types[k]) for k, v in values.items()})
        settings.validate()
        return self.canonical(settings)

    def canonical(self, settings):
        """The same trial with the settings that have no effect on it at their defaults, so that a grid
        sweeping such a setting runs that trial once (e.g. ``augment`` for a Nom trial)."""
        defaults = self.settings_type()
        irrelevant = {name: getattr(defaults, name) for name in self.irrelevant(settings)}
        return dataclasses.replace(settings, **irrelevant) if irrelevant else settings

    def irrelevant(self, settings) -> set[str]:
        return set()

    def labels(self, settings) -> Labels:
        return Labels(self.cell_key, str(getattr(settings, self.cell_key)), str(getattr(settings, self.mode_key)))

    def id_prefix(self, settings) -> str:
        labels = self.labels(settings)
        return f"{labels.cell}-{labels.mode}"

    def describe(self, key: str, value) -> str:
        """A setting's value in words, for legends and reports."""
        return f"{key} {value}"

    # -- the course of a trial ---------------------------------------------------------------------------
    def total_epochs(self, settings) -> int:
        raise NotImplementedError

    def phase_of(self, settings, epoch: int) -> int:
        """The phase whose training produced epoch ``epoch`` (epoch 0, the start, belongs to phase 1)."""
        return 1

    def phase_ends(self, settings) -> list[int]:
        """The last epoch of every phase but the last (their weights are always kept)."""
        return []

    def evaluation_loss(self, settings) -> str:
        """The loss reported for the untransformed data."""
        return settings.loss

    # -- torch side ----------------------------------------------------------------------------------------
    def load_data(self, settings, device, dtype):
        raise NotImplementedError

    def build_model(self, settings, phase: int = 1):
        """The trial's model as trained in ``phase``, at its seeded initial point (a resume then loads
        its checkpoint into it). Every mode of a seed starts from the same point."""
        raise NotImplementedError

    def enter_phase(self, settings, stepper, phase: int):
        """The stepper that trains ``phase``, from the one that trained the phase before."""
        return stepper

    def stepper(self, models: list, seeds: list[int]):
        """What trains the models together: one model alone, or several packed (seeds of one setting)."""
        from ..training import SingleStepper

        if len(models) != 1:
            raise ValueError(f"{self.name} trials cannot be trained packed")
        return SingleStepper(models[0], seeds)

    def pack_key(self, settings) -> str | None:
        """Trials with one key can be trained packed in one process; None: never packed."""
        return None

    def train_epoch(self, settings, stepper, data, epoch: int, hooks) -> list[float]:
        """One epoch of training; returns the norm of the last gradient applied, per packed model."""
        raise NotImplementedError

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings) -> int:
        raise NotImplementedError

    def rows_per_sample(self, settings, phase: int = 1) -> int:
        """Training rows per epoch, as a multiple of the number of samples."""
        return 1

    def separate_evaluation(self, settings, phase: int = 1) -> bool:
        """Whether measuring an epoch of ``phase`` takes a forward pass of its own over the plain data;
        the runner takes the loss and accuracy from the gradient pass wherever its rows allow."""
        return True

    def epoch_flops(self, settings, phase: int = 1) -> int:
        """A training row costs 3 forwards (a backward costs two), an evaluation one."""
        forward = self.forward_flops_per_sample(settings) * settings.n_samples
        evaluation = forward if self.separate_evaluation(settings, phase) else 0
        return 3 * forward * self.rows_per_sample(settings, phase) + evaluation

    def trial_flops(self, settings) -> int:
        # The last epoch's state is always evaluated on its own: no gradient pass follows it.
        total = self.forward_flops_per_sample(settings) * settings.n_samples
        for epoch in range(1, self.total_epochs(settings) + 1):
            total += self.epoch_flops(settings, self.phase_of(settings, epoch))
        return total

    def snapshot_values(self, settings) -> int:
        """Numbers in one snapshot of the measured layers."""
        raise NotImplementedError
