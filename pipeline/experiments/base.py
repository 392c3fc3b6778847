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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from pipeline.experiments.claims import Claim, GridCell
from pipeline.experiments.loop import OwnLoop
from pipeline.progress import StageReport
from pipeline.schema import ACCURACY, LOSS
from pipeline.settings import MAX_WEIGHTS, CommonSettings, ConfigError, did_you_mean, field_types, parse_value

if TYPE_CHECKING:  # the torch side's types; importing an experiment module must not import torch
    import torch

    from pipeline.core.data import Dataset
    from pipeline.core.models.base import MeasuredModel
    from pipeline.core.training import EpochHooks, Stepper

# An experiment's settings class (``Experiment.settings_type``).
SettingsT = TypeVar("SettingsT", bound=CommonSettings)
# The stepper an experiment trains with (a string bound: the steppers are torch-side, named for the checker only).
StepperT = TypeVar("StepperT", bound="Stepper")


class ResultsSink(Protocol):
    """What ``Experiment.finalize`` hands the measurements after training to (a trial's sink)."""

    def write_results(self, arrays: dict[str, Any], attrs: dict[str, Any]) -> None:
        ...


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


# Words for the training modes of docs/science.md §2, as figures and reports name them.
MODE_WORDS = {"equi": "Equi", "aug": "Aug", "nom": "Nom"}

class Experiment(Generic[SettingsT, StepperT]):
    """The interface an experiment module implements, over its settings class. Defaults fit a single-phase
    experiment."""

    name: ClassVar[str]
    settings_type: ClassVar[type[CommonSettings]]  # SettingsT (a class variable cannot name a type variable)
    cell_key: ClassVar[str]  # the setting a trial's cell is named by, e.g. "group"
    mode_key: ClassVar[str] = "mode"
    # Plural names that grid files may use for an axis (``groups = [...]`` for ``group``).
    aliases: ClassVar[dict[str, str]] = {}
    # The setting that figures put on the x axis of trajectories: "travelled" (distance travelled from A⁰)
    # or "epoch".
    trajectory_x: ClassVar[str] = "travelled"
    # The mode the first phase trains in, for figures of multi-phase experiments (None: one phase).
    first_phase_mode: ClassVar[str | None] = None
    # What a row of its trial files is, in words for axes and captions, and the per-row series its training
    # curves show (name in ``metrics/`` -> words), drawn on a log axis when named in ``log_curves``.
    row_words: ClassVar[str] = "epoch"
    curve_metrics: ClassVar[dict] = {LOSS: "training loss", ACCURACY: "training accuracy"}
    curves_title: ClassVar[str] = "loss and accuracy on the (untransformed) training data"
    log_curves: ClassVar[tuple] = ()
    # What the analysis makes of the measurements it takes after training (its trial files' results/ group):
    # the name of an analysis in ``analysis.results_analyses`` (None: it takes none).
    results_analysis: ClassVar[str | None] = None

    # -- what the analysis says about it (docs/science.md §7) ---------------------------------------------
    # How reports and figures name it, and the section of docs/science.md that describes it.
    title: ClassVar[str] = ""
    science_section: ClassVar[str] = ""
    # Its cells in the order a reader expects them (others follow in the order they appear).
    cell_names: ClassVar[tuple] = ()
    # The settings `pipeline train` offers as options of their own (``--n-samples`` for n_samples), with words
    # for their help, in the order it lists them; any other setting is given with --set.
    train_flags: ClassVar[dict[str, str]] = {}
    # Settings that legends always name when they apply to a trial, swept or not (e.g. how Aug is evaluated).
    series_settings: ClassVar[tuple] = ()
    # A setting that splits the experiment's trials into arms run side by side, such as the paper's scheme
    # and an extension (Experiment G: full-batch GD, or minibatch SGD). Arms may differ in other settings
    # (learning rate, epochs) without those renaming every trial: ids name another setting only where it
    # varies within an arm, and ``id_prefix`` names the arm. Figures draw each arm apart (``arm_title``).
    arm_key: ClassVar[str | None] = None
    # Whether a grid configures each cell on its own (Experiment S: a budget per network): ids then name a setting
    # only where it varies among the trials of one cell.
    settings_per_cell: ClassVar[bool] = False
    # What every series of a figure shares and its legend says once, above them (set for an arm's figures).
    legend_heading: ClassVar[str] = ""
    # Classes of its classification task: chance accuracy is 1/classes.
    classes: ClassVar[int] = 10
    # The settings that size its model, named when a model would be too large.
    size_settings: ClassVar[tuple] = ("n", "channels", "cnn_channels", "image_size")
    # The figures of trajectories it wants (analysis/figures.py): "trajectory", "layers", "training_curves",
    # "steps". Measurements after training (``results/``) bring their own figures.
    standard_figures: ClassVar[tuple] = ("trajectory", "layers", "training_curves", "steps")

    # -- settings and labels ---------------------------------------------------------------------------
    def make_settings(self, values: dict[str, Any]) -> SettingsT:
        """Settings from ``{name: text or value}``; unknown names and bad values raise ConfigError."""
        types = field_types(self.settings_type)
        values = {self.aliases.get(key, key): value for key, value in values.items()}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} for {self.name}{did_you_mean(unknown[0], types)}; "
                              f"accepted: {', '.join(sorted(types))}")
        settings = cast(SettingsT, self.settings_type(**{k: parse_value(k, v, types[k]) for k, v in values.items()}))
        settings.validate()
        weights = self.snapshot_values(settings)
        if weights > MAX_WEIGHTS:
            sizes = ", ".join(f"{name}={getattr(settings, name)}" for name in self.size_settings
                              if hasattr(settings, name))
            raise ConfigError(f"a model of {weights:.3g} weights ({sizes}) is too large; accepted: at most "
                              f"{MAX_WEIGHTS:.0e} weights ({MAX_WEIGHTS * 4 / 1e9:.0f} GB in float32)")
        return self.canonical(settings)

    def canonical(self, settings: SettingsT) -> SettingsT:
        """The same trial with the settings that have no effect on it at their defaults, so that a grid
        sweeping such a setting runs that trial once (e.g. ``augment`` for a Nom trial)."""
        defaults = self.settings_type()
        irrelevant = {name: getattr(defaults, name) for name in self.irrelevant(settings)}
        return dataclasses.replace(settings, **irrelevant) if irrelevant else settings

    def irrelevant(self, settings: SettingsT) -> set[str]:
        return set()

    def labels(self, settings: SettingsT) -> Labels:
        return Labels(self.cell_key, str(getattr(settings, self.cell_key)), str(getattr(settings, self.mode_key)))

    def id_prefix(self, settings: SettingsT) -> str:
        labels = self.labels(settings)
        return f"{labels.cell}-{labels.mode}"

    def describe(self, key: str, value: Any) -> str:
        """A setting's value in words, for legends and reports."""
        return f"{key} {value}"

    def display_title(self) -> str:
        return self.title or f"Experiment {self.name}"

    def arm_title(self, value: Any) -> str:
        """How figures title the arm ``value`` of ``arm_key``; "" for the experiment's own (untitled) arm."""
        return ""

    def cell_title(self, cell: str) -> str:
        """A panel's title for a cell (matplotlib mathtext allowed)."""
        return str(cell)

    def mode_words(self, mode: str) -> str:
        return MODE_WORDS.get(mode, str(mode))

    def series_words(self, mode: str, settings: dict[str, Any]) -> str:
        """The legend entry of a line: the mode, then the values of ``settings`` (swept settings and
        ``series_settings`` that apply to the trial) in words."""
        words = [self.mode_words(mode), *(self.describe(key, value) for key, value in settings.items())]
        return ", ".join(word for word in words if word)  # a value that needs no words (the paper's own) has none

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """What docs/science.md claims about these cells; a cell without a claim may be left out."""
        return []

    def meant_to_learn(self, settings: dict[str, Any]) -> bool:
        """Whether a trial with these settings is a training run, whose accuracy should end well above chance
        (the report warns where it does not), rather than a probe of the dynamics near its start."""
        return True

    def probe_words(self) -> str:
        """For an experiment whose trials are not all meant to learn: what the others are, in one sentence."""
        return ""

    def exact_orbit(self, mode: str, settings: dict[str, Any]) -> bool:
        """Whether a trial of ``mode`` with these settings (a dict, as files record them) takes Aug steps on
        whole orbits (exact augmentation), which figures tell apart from sampled Aug at a glance."""
        return False

    # -- the course of a trial ---------------------------------------------------------------------------
    def total_epochs(self, settings: SettingsT) -> int:
        raise NotImplementedError

    def phase_of(self, settings: SettingsT, epoch: int) -> int:
        """The phase whose training produced epoch ``epoch`` (epoch 0, the start, belongs to phase 1)."""
        return 1

    def phase_ends(self, settings: SettingsT) -> list[int]:
        """The last epoch of every phase but the last (their weights are always kept)."""
        return []

    def evaluation_loss(self, settings: SettingsT) -> str:
        """The loss reported for the untransformed data: the one the trial trains with."""
        # Every experiment's settings have a loss; CommonSettings does not declare one (its fields are every
        # manifest's, in order), so the attribute is the experiment's own.
        loss: str = settings.loss  # type: ignore[attr-defined]
        return loss

    # -- torch side ----------------------------------------------------------------------------------------
    def load_data(self, settings: SettingsT, device: torch.device | str, dtype: torch.dtype) -> Dataset:
        raise NotImplementedError

    def build_model(self, settings: SettingsT, phase: int = 1) -> MeasuredModel:
        """The trial's model as trained in ``phase``, at its seeded initial point (a resume then loads
        its checkpoint into it). Every mode of a seed starts from the same point."""
        raise NotImplementedError

    def enter_phase(self, settings: SettingsT, stepper: StepperT, phase: int) -> StepperT:
        """The stepper that trains ``phase``, from the one that trained the phase before."""
        return stepper

    def stepper(self, models: list[MeasuredModel], seeds: list[int], settings: SettingsT | None = None,
                data: Dataset | None = None) -> StepperT:
        """What trains the models together: one model alone, or several packed (seeds of one setting)."""
        from pipeline.core.training import SingleStepper  # deferred: torch, kept out of the configuration layer

        if len(models) != 1:
            raise ValueError(f"{self.name} trials cannot be trained packed")
        return cast(StepperT, SingleStepper(models[0], seeds))

    def pack_key(self, settings: SettingsT) -> str | None:
        """Trials with one key can be trained packed in one process; None: never packed."""
        return None

    def train_epoch(self, settings: SettingsT, stepper: StepperT, data: Dataset, epoch: int,
                    hooks: EpochHooks) -> dict[str, list[float]]:
        """One epoch of training; returns what it measured, per series of ``pipeline.schema`` and packed model:
        ``{"grad_norm": [norm of the last gradient applied, per model]}``."""
        raise NotImplementedError

    def own_loop(self) -> OwnLoop | None:
        """The loop a trial runs instead of the runner's epoch loop (``pipeline.experiments.loop``: a search in
        iterations and stages, say); None, the default: the epoch loop, through ``train_epoch``."""
        return None

    # Measurements made once, after the last epoch (``finalize``), whose results go to ``results/``.
    has_final_stage: ClassVar[bool] = False

    def finalize(self, settings: SettingsT, stepper: StepperT, data: Dataset, sinks: Sequence[ResultsSink],
                 progress: StageReport | None = None) -> None:
        """Measure the trained model(s) and hand each sink its ``write_results(arrays, attrs)``, announcing
        the stages of a long measurement through ``progress``."""

    # -- cost ---------------------------------------------------------------------------------------------
    def forward_flops_per_sample(self, settings: SettingsT) -> int:
        raise NotImplementedError

    def rows_per_sample(self, settings: SettingsT, phase: int = 1) -> int:
        """Training rows per epoch, as a multiple of the number of samples."""
        return 1

    def separate_evaluation(self, settings: SettingsT, phase: int = 1) -> bool:
        """Whether measuring an epoch of ``phase`` takes a forward pass of its own over the plain data;
        the runner takes the loss and accuracy from the gradient pass wherever its rows allow."""
        return True

    def epoch_flops(self, settings: SettingsT, phase: int = 1) -> int:
        """A training row costs 3 forwards (a backward costs two), an evaluation one."""
        forward = self.forward_flops_per_sample(settings) * settings.n_samples
        evaluation = forward if self.separate_evaluation(settings, phase) else 0
        return 3 * forward * self.rows_per_sample(settings, phase) + evaluation

    def trial_flops(self, settings: SettingsT) -> int:
        # The last epoch's state is always evaluated on its own: no gradient pass follows it.
        total = self.forward_flops_per_sample(settings) * settings.n_samples
        for epoch in range(1, self.total_epochs(settings) + 1):
            total += self.epoch_flops(settings, self.phase_of(settings, epoch))
        return total

    def snapshot_values(self, settings: SettingsT, phase: int = 1) -> int:
        """Numbers in one weight snapshot of ``phase``'s model: its measured layers and the parameters that
        they do not hold (``MeasuredModel.snapshot``)."""
        raise NotImplementedError
