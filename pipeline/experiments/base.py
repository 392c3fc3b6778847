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

from pipeline.experiments.loop import OwnLoop
from pipeline.schema import ACCURACY, LOSS
from pipeline.settings import MAX_WEIGHTS, CommonSettings, ConfigError, did_you_mean, field_types, parse_value


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

# The kinds of claim an experiment can declare about its cells (evaluated by ``analysis/claims.py``,
# which owns the thresholds; see docs/science.md §7).
STAYS_IN_E = "stays in E"  # median over seeds of the largest dist_E/||A|| over the epochs concerned <= round-off
LEAVES_E = "leaves E"  # median final dist_E/dist_init >= a named minimum ratio (and optionally rel > round-off)
BELOW_REFERENCE = "below reference"  # median final dist_E/dist_init below that of a reference cell
NO_CLAIM = "no claim"  # nothing to judge in this cell, and why
# Claims about stationary points (Experiment S), judged on what a trial measured at A* (``results/``).
IDENTITY_AT_ROUNDOFF = "identity at round-off"  # claim 1: grad R_aug = Pi_E grad R to round-off
IDENTITY_FAILS = "identity fails"  # the same identity off by orders of magnitude where its premises fail
STABILITY_DIFFERS = "stability differs"  # claim 3: H_E >= 0 but lambda_min(H_perp) < 0, and the growth shows it
# Over all the cells of an experiment that carry a claim of the kind named in ``threshold``: it holds in
# every one (ALL_OF) or is shown by at least one (ANY_OF).
ALL_OF = "all of"
ANY_OF = "any of"


@dataclass(frozen=True)
class GridCell:
    """A cell of a results folder as the analysis sees it: the seeds of one cell, mode and swept values.

    ``values`` maps every setting to the distinct values its trials have (one value, unless a setting
    that does not distinguish trials in the manifest still differs), so that claims can read the
    settings that decide what applies (e.g. ``augment``) without naming them in the manifest's labels.
    """

    cell: str
    mode: str
    swept: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)

    def value(self, name: str, default=None):
        """The setting's value if all trials of the cell share it; ``default`` if absent or mixed."""
        found = self.values.get(name, ())
        return found[0] if len(found) == 1 else default


@dataclass(frozen=True)
class Claim:
    """A claim about one cell, as data: what is claimed, where the science states it, how to judge it.

    ``threshold`` names a constant of ``analysis/claims.py`` (``NOM_MIN_RATIO``, ``LEAVES_E_MIN_RATIO``)
    rather than holding a number, so that every threshold lives where docs/science.md §7 says it does.
    """

    kind: str  # one of the kinds above
    subject: str  # how verdicts name the cell, e.g. "rot" or "cnn cross (aug)"
    claim: str  # e.g. "Aug (orbit) stays in E"; for NO_CLAIM, a sentence: what does not apply, and why
    cell: GridCell
    section: str = ""  # the section of docs/science.md that states the claim, e.g. "1"
    source: str = ""  # where in that section, e.g. "claim 2"
    phase: int | None = None  # STAYS_IN_E: the epochs concerned are this phase's (None: every epoch)
    threshold: str = ""  # LEAVES_E: the named minimum of dist_E/dist_init; ALL_OF/ANY_OF: the kind combined
    above_roundoff: bool = False  # LEAVES_E: also require final dist_E/||A|| above round-off
    reference: GridCell | None = None  # BELOW_REFERENCE: the cell to stay below
    # A control of a detector (STABILITY_DIFFERS on a model where the answer is known): the verdict it must give.
    # Controls validate the detector; they are not evidence for the paper's claim and are not combined into it.
    expected: str = ""


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
    def make_settings(self, values: dict) -> CommonSettings:
        """Settings from ``{name: text or value}``; unknown names and bad values raise ConfigError."""
        types = field_types(self.settings_type)
        values = {self.aliases.get(key, key): value for key, value in values.items()}
        unknown = sorted(set(values) - set(types))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} for {self.name}{did_you_mean(unknown[0], types)}; "
                              f"accepted: {', '.join(sorted(types))}")
        settings = self.settings_type(**{k: parse_value(k, v, types[k]) for k, v in values.items()})
        settings.validate()
        weights = self.snapshot_values(settings)
        if weights > MAX_WEIGHTS:
            sizes = ", ".join(f"{name}={getattr(settings, name)}" for name in self.size_settings
                              if hasattr(settings, name))
            raise ConfigError(f"a model of {weights:.3g} weights ({sizes}) is too large; accepted: at most "
                              f"{MAX_WEIGHTS:.0e} weights ({MAX_WEIGHTS * 4 / 1e9:.0f} GB in float32)")
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

    def display_title(self) -> str:
        return self.title or f"Experiment {self.name}"

    def arm_title(self, value) -> str:
        """How figures title the arm ``value`` of ``arm_key``; "" for the experiment's own (untitled) arm."""
        return ""

    def cell_title(self, cell: str) -> str:
        """A panel's title for a cell (matplotlib mathtext allowed)."""
        return str(cell)

    def mode_words(self, mode: str) -> str:
        return MODE_WORDS.get(mode, str(mode))

    def series_words(self, mode: str, settings: dict) -> str:
        """The legend entry of a line: the mode, then the values of ``settings`` (swept settings and
        ``series_settings`` that apply to the trial) in words."""
        words = [self.mode_words(mode), *(self.describe(key, value) for key, value in settings.items())]
        return ", ".join(word for word in words if word)  # a value that needs no words (the paper's own) has none

    def claims(self, cells: list[GridCell]) -> list[Claim]:
        """What docs/science.md claims about these cells; a cell without a claim may be left out."""
        return []

    def meant_to_learn(self, settings: dict) -> bool:
        """Whether a trial with these settings is a training run, whose accuracy should end well above chance
        (the report warns where it does not), rather than a probe of the dynamics near its start."""
        return True

    def probe_words(self) -> str:
        """For an experiment whose trials are not all meant to learn: what the others are, in one sentence."""
        return ""

    def exact_orbit(self, mode: str, settings: dict) -> bool:
        """Whether a trial of ``mode`` with these settings (a dict, as files record them) takes Aug steps on
        whole orbits (exact augmentation), which figures tell apart from sampled Aug at a glance."""
        return False

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

    def stepper(self, models: list, seeds: list[int], settings=None, data=None):
        """What trains the models together: one model alone, or several packed (seeds of one setting)."""
        from pipeline.core.training import SingleStepper

        if len(models) != 1:
            raise ValueError(f"{self.name} trials cannot be trained packed")
        return SingleStepper(models[0], seeds)

    def pack_key(self, settings) -> str | None:
        """Trials with one key can be trained packed in one process; None: never packed."""
        return None

    def train_epoch(self, settings, stepper, data, epoch: int, hooks) -> dict[str, list[float]]:
        """One epoch of training; returns what it measured, per series of ``pipeline.schema`` and packed model:
        ``{"grad_norm": [norm of the last gradient applied, per model]}``."""
        raise NotImplementedError

    def finished(self, settings, stepper) -> bool:
        """Whether training may stop before its last epoch (a search that converged)."""
        return False

    def own_loop(self) -> OwnLoop | None:
        """The loop a trial runs instead of the runner's epoch loop (``pipeline.experiments.loop``: a search in
        iterations and stages, say); None, the default: the epoch loop, through ``train_epoch``."""
        return None

    # Measurements made once, after the last epoch (``finalize``), whose results go to ``results/``.
    has_final_stage: ClassVar[bool] = False

    def finalize(self, settings, stepper, data, sinks) -> None:
        """Measure the trained model(s) and hand each sink its ``write_results(arrays, attrs)``."""

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

    def snapshot_values(self, settings, phase: int = 1) -> int:
        """Numbers in one weight snapshot of ``phase``'s model: its measured layers and the parameters that
        they do not hold (``MeasuredModel.snapshot``)."""
        raise NotImplementedError
