"""Train trials from their settings, top to bottom: one loop for one seed or k seeds packed together.

The runner knows the course of a trial (phases, epochs, what is measured when); the experiment module
knows the science of one epoch (``pipeline/experiments``); a *sink* (``pipeline.trialfile.sink.Sink``) knows
where results go: :class:`ConsoleSink` prints one line per epoch, :class:`CollectingSink` keeps everything in
memory, and the HDF5 trial store (``pipeline.trialfile.store``) streams to the trial's file and keeps a rolling
checkpoint from which an interrupted trial resumes.

Row e of a trial is the state after e epochs. Its loss and accuracy come from the next epoch's gradient
pass when that pass runs over the untransformed data (Nom, Equi, the identity rows of the exact orbit), so
measuring a trial costs no forward pass of its own there; otherwise, and for the last row, the runner
evaluates the model. Either way the numbers are those of the same model on the same data, computed the
same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from pipeline import experiments, schema, stopping
from pipeline.core import numerics
from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.core.training import EpochHooks, Stepper
from pipeline.errors import UserError
from pipeline.experiments import Trial
from pipeline.leases.ownership import LostOwnership
from pipeline.progress import StageProgress
from pipeline.run import faults
from pipeline.run.background import host_copy
from pipeline.settings import CommonSettings
from pipeline.trialfile.sink import Checkpoint, EpochRecord, Sink, Weights

# The row every sink is handed, named here too: the runner makes it.
__all__ = ["CollectingSink", "ConsoleSink", "Diverged", "EpochRecord", "TrialRun", "run_trial", "run_trials"]


class Diverged(UserError, RuntimeError):
    """The loss of a trial became NaN or infinite: training on is pointless, and the run is not complete."""

    def __init__(self, trial_ids: list[str], epoch: int, losses: list[float]):
        self.trial_ids, self.epoch = trial_ids, epoch
        values = ", ".join(f"{trial_id} loss {loss}" for trial_id, loss in zip(trial_ids, losses))
        super().__init__(f"diverged at epoch {epoch} ({values})")


class ConsoleSink:
    """Prints progress; keeps nothing, so a run through it cannot be resumed."""

    def __init__(self, log: Callable[[str], None] = print):
        self.log = log
        self.results: dict = {}

    def begin(self, trial: Trial, layer_names: list[str], device: torch.device, data: Dataset) -> None:
        self.layer_names = layer_names
        self.total = experiments.of(trial).total_epochs(trial.settings)
        self.log(f"{trial.trial_id}: {trial.experiment} on {device}, {len(data)} samples from {data.source}")

    def resume_point(self) -> dict | None:
        return None

    def write_epoch(self, record: EpochRecord, model: Weights, checkpoint: Checkpoint) -> None:
        self.log(format_epoch(record, self.layer_names, self.total))

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
        pass

    def write_results(self, arrays: dict, attrs: dict) -> None:
        self.results = attrs  # kept for whoever ran it (``pipeline train`` prints a summary)

    def save_latest_state(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self, raise_errors: bool = True) -> None:
        pass  # it holds nothing open


class CollectingSink(ConsoleSink):
    """Keeps every record and the weights at every epoch in memory (tests, notebooks, benchmarks)."""

    def __init__(self, log: Callable[[str], None] = lambda line: None):
        super().__init__(log)
        self.records: list[EpochRecord] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.steps: list[torch.Tensor] = []

    def write_epoch(self, record: EpochRecord, model: Weights, checkpoint: Checkpoint) -> None:
        super().write_epoch(record, model, checkpoint)
        self.records.append(record)
        self.weights.append({k: v.cpu() for k, v in model.snapshot().items()})

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
        self.steps.append(dist_E)

    def write_results(self, arrays: dict, attrs: dict) -> None:
        self.results = {"arrays": arrays, "attrs": attrs}


def format_epoch(r: EpochRecord, layer_names: list[str], total_epochs: int) -> str:
    return schema.console_line(r.epoch, r.phase, r.values, layer_names, total_epochs, per_layer=True,
                               position=r.position)


def _on_host(value: Any) -> Any:  # a nested state: tensors in dicts, lists and tuples
    """A copy of a (nested) state with every tensor on the CPU: checkpoints outlive the live tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_host(v) for v in value)
    return value


def _resume_points(sinks: list[Sink]) -> tuple[str, list]:
    """'fresh', 'resume' (every sink at one epoch and phase) or 'separate' (anything else)."""
    points = [sink.resume_point() for sink in sinks]
    if all(point is None for point in points):
        return "fresh", points
    held = [point for point in points if point is not None]
    if len(held) == len(points) and len({point["epoch"] for point in held}) == 1:
        return "resume", held
    return "separate", points


def _finalize_with_progress(experiment: experiments.Experiment, settings: CommonSettings, stepper: Stepper,
                            data: Dataset, trials: list[Trial], sinks: list[Sink]) -> None:
    """The measurements after training, announced in the trials' logs with their duration. An experiment
    whose ``finalize`` takes a ``progress`` argument reports its stages through it
    (``pipeline.progress.StageProgress``: ``progress(stage, done, total)``)."""
    log = getattr(sinks[0], "log", print)
    names = ", ".join(t.trial_id for t in trials)
    log(f"{names}: final stage: measurements after training")
    started = time.perf_counter()
    progress = StageProgress(log, f"{names}: final stage")
    try:
        experiment.finalize(settings, stepper, data, sinks, progress=progress)
    finally:
        progress.close()
    log(f"{names}: final stage done in {time.perf_counter() - started:.1f} s")


def run_trial(trial: Trial, sink: Sink) -> None:
    """Train one trial into one sink."""
    run_trials([trial], [sink])


def run_trials(trials: list[Trial], sinks: list[Sink]) -> None:
    """Train trials that differ only in their seed together (one packed model), each into its own sink;
    one trial is the common case.

    Every sink sees, in order: ``resume_point``, ``begin``, ``write_epoch`` for every row it does not
    have yet (row 0 is the start), ``write_steps`` after every optimizer step the experiment records,
    ``finish``. A packed record's ``seconds`` is the wall time of the whole pack. Sinks that would resume
    from different epochs are run one after the other. An error in any trial (a fault, a divergence)
    stops the whole pack; each sink keeps what it wrote.
    """
    if len(sinks) != len(trials):
        raise ValueError(f"one sink per trial: {len(trials)} trials but {len(sinks)} sinks")
    if len(trials) > 1:
        experiments.check_packable(trials)
    how, points = _resume_points(sinks)
    if how == "separate":
        for trial, sink in zip(trials, sinks):
            run_trials([trial], [sink])
        return
    TrialRun(trials, sinks, points if how == "resume" else None).run()


class TrialRun:
    """The run of trials that train together (one, usually), with its state in the open:

    - where it is: ``epoch`` (the state after that many epochs), ``phase``, and ``written``, the last row
      every sink holds;
    - what trains: the ``stepper`` (its models, one per trial) of the experiment's current phase;
    - each model's reference points: ``initials`` (the start of the phase, which ``dist_init`` is measured
      from, with a host copy for checkpoints) and ``previous`` (the layers at the last row, which
      ``step_perp`` is measured from);
    - ``trained``: what the last epoch's training measured, per series and model (``train_epoch``);
    - the layer measurements of the last step, reused while the weights are those they measured.
    """

    def __init__(self, trials: list[Trial], sinks: list[Sink], points: list[dict] | None):
        self.trials, self.sinks = trials, sinks
        self.experiment = experiment = experiments.of(trials[0])
        self.settings = settings = trials[0].settings
        numerics.configure()
        self.device = numerics.resolve_device(settings.device)
        self.dtype = numerics.resolve_dtype(settings.dtype)
        self.data = experiment.load_data(settings, self.device, self.dtype)
        self.total = experiment.total_epochs(settings)
        self.faults = faults.planned([t.trial_id for t in trials])
        if points is None:
            self.epoch, self.written, self.phase = 0, -1, 1
            models = [self._built(t.settings) for t in trials]
            initials = [model.layer_snapshot() for model in models]
        else:
            self.epoch = self.written = points[0]["epoch"]
            # Checkpoints before phases were recorded held the phase of their epoch's model.
            self.phase = points[0].get("phase", experiment.phase_of(settings, self.epoch))
            models, initials = [], []
            for t, point in zip(trials, points):
                model = self._built(t.settings)
                model.load_state_dict(point["model"])
                models.append(model)
                initials.append({k: v.to(device=self.device, dtype=self.dtype) for k, v in point["initial"].items()})
        self.stepper: Stepper = experiment.stepper(models, [t.settings.seed for t in trials], settings=settings,
                                                   data=self.data)
        if points is not None and points[0].get("stepper") is not None:
            self.stepper.load_state_dict(points[0]["stepper"])  # an optimizer with memory (e.g. L-BFGS) goes on
        self._start_phase(initials)
        self.layer_names = list(self.stepper.template.layer_weights())
        for trial, sink in zip(trials, sinks):
            sink.begin(trial, self.layer_names, self.device, self.data)
        # Sinks that write from a background thread (pipeline.run.background) take device tensors and copies that
        # are still in flight, and wait for them on their own thread: no host synchronisation per row here.
        self.deferred = all(getattr(sink, "defers_host_copies", False) for sink in sinks)
        # (a host copy that a background sink completes and waits for on its own thread)
        self.to_host = host_copy if self.deferred else _on_host
        self.loss_name = experiment.evaluation_loss(settings)
        self.trained: dict[str, list[float]] = {schema.GRAD_NORM: [float("nan")] * len(trials)}
        self.position = ""  # the console's name of the next row, from a loop of the experiment's own ("": its epoch)
        self.last_write = time.perf_counter()

    def _built(self, settings: CommonSettings) -> MeasuredModel:
        return self.experiment.build_model(settings, self.phase).to(device=self.device, dtype=self.dtype)

    def _start_phase(self, initials: list[dict]) -> None:
        """The models of a phase begin: distances are measured from here. The start of a phase never changes
        within it, so one host copy serves every checkpoint."""
        self.initials = initials
        self.initials_on_host = [{k: v.to("cpu", copy=True) for k, v in initial.items()} for initial in initials]
        # The last row's layers (the start, before any row of these models): what step_perp is measured from.
        self.previous = [model.layer_snapshot() for model in self.stepper.models]
        # The layer measurements of the last step, reused while the weights are those it measured: a full-batch
        # epoch's row measures the very weights that the previous step's record did, and on a GPU measuring
        # costs about as much as a paper-size gradient step. Every in-place change of a parameter (a step, a
        # projection, a loaded state) bumps its version counter, and views share their base's counter.
        self.latest_measurements: list[dict] | None = None
        self.measured_versions: tuple | None = None

    # -- measuring a row ----------------------------------------------------------------------------------
    def _weight_versions(self) -> tuple:
        return tuple((id(p), p._version) for model in self.stepper.models for p in model.parameters())

    def _measurements_now(self) -> list[dict[str, torch.Tensor]]:
        if self.latest_measurements is not None and self.measured_versions == self._weight_versions():
            return self.latest_measurements
        measured = [model.layer_measurements(initial, previous)
                    for model, initial, previous in zip(self.stepper.models, self.initials, self.previous)]
        return measured if self.deferred else [{k: v.cpu() for k, v in m.items()} for m in measured]

    def _checkpoint_of(self, i: int) -> Checkpoint:
        def checkpoint() -> dict:
            stepper = self.stepper
            return {
                "epoch": self.epoch,
                "phase": self.phase,
                # Copies, never views: the live parameters keep changing after the checkpoint is taken.
                "model": {k: self.to_host(v) for k, v in stepper.models[i].state_dict().items()},
                "initial": self.initials_on_host[i],
                "stepper": self.to_host(stepper.state_dict()) if stepper.resumable else None,
            }
        return checkpoint

    def write_row(self, measured: list[tuple[float, float]] | None, last: bool = False) -> None:
        """Record row ``epoch`` (the current state) in every sink, unless the sinks already hold it."""
        if self.epoch <= self.written:
            return
        stepper = self.stepper
        measured = measured or stepper.evaluate(self.data, self.loss_name, self.settings.chunk_size)
        layers = self._measurements_now()
        now = time.perf_counter()
        seconds, self.last_write = now - self.last_write, now
        for i, sink in enumerate(self.sinks):
            loss, accuracy = measured[i]
            values = {"loss": loss, "accuracy": accuracy, "seconds": seconds,
                      **{name: per_model[i] for name, per_model in self.trained.items()}, **layers[i]}
            sink.write_epoch(EpochRecord(self.epoch, self.phase, values, last=last, position=self.position),
                             stepper.models[i], self._checkpoint_of(i))
        self.written = self.epoch
        self.previous = [model.layer_snapshot() for model in stepper.models]
        diverged = [(t.trial_id, loss) for t, (loss, _) in zip(self.trials, measured) if not math.isfinite(loss)]
        if diverged:
            raise Diverged([d[0] for d in diverged], self.epoch, [d[1] for d in diverged])

    def after_step(self) -> None:
        self.latest_measurements, self.measured_versions = self._measurements_now(), self._weight_versions()
        for i, sink in enumerate(self.sinks):
            sink.write_steps(self.epoch + 1, self.latest_measurements[i][schema.DIST_E])

    # -- what a loop of an experiment's own is lent (pipeline.experiments.loop.RunControl) ------------------
    @property
    def rows_done(self) -> int:
        return self.written

    @property
    def total_rows(self) -> int:
        return self.total

    def between_rows(self, row: int) -> None:
        stopping.check()  # a stop request (cancel, preemption) is acted on here, between rows
        if self.faults:
            for trial in self.trials:
                faults.check(self.faults, trial.trial_id, row)

    def record(self, row: int, loss: float, accuracy: float, series: Mapping[str, float], position: str,
               last: bool = False) -> None:
        self.epoch, self.position = row, position
        self.trained = {name: [value] for name, value in series.items()}
        self.write_row([(loss, accuracy)], last=last)

    # -- the course of the run ----------------------------------------------------------------------------
    def run(self) -> None:
        own_loop = self.experiment.own_loop()
        if own_loop is not None:
            # It records every row as it reaches it, checkpoint included: a failure leaves no row to salvage.
            own_loop(self)
        else:
            self._epoch_loop()
        self._final_stage()

    def _epoch_loop(self) -> None:
        experiment, settings = self.experiment, self.settings
        hooks = _RunHooks(self)
        try:
            while self.epoch < self.total:
                self.between_rows(self.epoch + 1)
                next_phase = experiment.phase_of(settings, self.epoch + 1)
                if next_phase != self.phase:
                    self.write_row(None)  # the end of a phase is measured on the model that trained it
                    self.stepper = experiment.enter_phase(settings, self.stepper, next_phase)
                    self.phase = next_phase
                    # New models, and distances from the phase's own start.
                    self._start_phase([model.layer_snapshot() for model in self.stepper.models])
                self.trained = experiment.train_epoch(settings, self.stepper, self.data, self.epoch + 1, hooks)
                self.epoch += 1
            self.write_row(None, last=True)
        except Exception as error:
            # A failure inside an epoch leaves the state before it untouched (parameters change in the update
            # only): record it, so that the file holds every epoch that was done, unless recording is what failed.
            if self.epoch > self.written and not isinstance(error, (OSError, MemoryError, Diverged, LostOwnership)):
                try:
                    self.write_row(None)
                except Exception:
                    pass
            raise

    def _final_stage(self) -> None:
        experiment, settings = self.experiment, self.settings
        if experiment.has_final_stage:
            # Measurements after training take a while: a preemption during them resumes here, not from scratch.
            for sink in self.sinks:
                sink.save_latest_state()
            _finalize_with_progress(experiment, settings, self.stepper, self.data, self.trials, self.sinks)
        for sink in self.sinks:
            sink.finish()


class _RunHooks(EpochHooks):
    """What a run hears from inside an epoch (``pipeline.core.training.EpochHooks``)."""

    def __init__(self, run: TrialRun):
        self.run = run

    def before_update(self, measured: list[tuple[float, float]] | None) -> None:
        self.run.write_row(measured)

    def after_step(self) -> None:
        self.run.after_step()
