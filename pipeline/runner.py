"""Train trials from their settings, top to bottom: one loop for one seed or k seeds packed together.

The runner knows the course of a trial (phases, epochs, what is measured when); the experiment module
knows the science of one epoch (``pipeline/experiments``); a *sink* knows where results go:
:class:`ConsoleSink` prints one line per epoch, :class:`CollectingSink` keeps everything in memory, and
the HDF5 trial store (``pipeline.store``) streams to the trial's file and keeps a rolling checkpoint from
which an interrupted trial resumes.

Row e of a trial is the state after e epochs. Its loss and accuracy come from the next epoch's gradient
pass when that pass runs over the untransformed data (Nom, Equi, the identity rows of the exact orbit), so
measuring a trial costs no forward pass of its own there; otherwise, and for the last row, the runner
evaluates the model. Either way the numbers are those of the same model on the same data, computed the
same way.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass

import torch

from . import experiments, numerics, stopping
from .experiments import Trial
from .ownership import LostOwnership
from .progress import StageProgress
from .training import EpochHooks

FAULT_VARIABLE = "PIPELINE_INJECT_FAULT"


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection (PIPELINE_INJECT_FAULT)."""


class Diverged(RuntimeError):
    """The loss of a trial became NaN or infinite: training on is pointless, and the run is not complete."""

    reported = True  # its message is the whole story: no traceback hint

    def __init__(self, trial_ids: list[str], epoch: int, losses: list[float]):
        self.trial_ids, self.epoch = trial_ids, epoch
        values = ", ".join(f"{trial_id} loss {loss}" for trial_id, loss in zip(trial_ids, losses))
        super().__init__(f"diverged at epoch {epoch} ({values})")


@dataclass
class EpochRecord:
    epoch: int
    phase: int
    loss: float
    accuracy: float
    seconds: float
    grad_norm: float
    dist_E: torch.Tensor  # (L,)
    dist_init: torch.Tensor
    norm: torch.Tensor
    last: bool = False  # the trial's last row (it may come early: a search that converged)


class ConsoleSink:
    """Prints progress; keeps nothing, so a run through it cannot be resumed."""

    def __init__(self, log=print):
        self.log = log
        self.results: dict = {}

    def begin(self, trial: Trial, layer_names: list[str], device: torch.device, data) -> None:
        self.layer_names = layer_names
        self.total = experiments.of(trial).total_epochs(trial.settings)
        self.log(f"{trial.trial_id}: {trial.experiment} on {device}, {len(data)} samples from {data.source}")

    def resume_point(self) -> dict | None:
        return None

    def write_epoch(self, record: EpochRecord, model, checkpoint) -> None:
        self.log(format_epoch(record, self.layer_names, self.total))

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
        pass

    def write_results(self, arrays: dict, attrs: dict) -> None:
        self.results = attrs  # kept for whoever ran it (``pipeline train`` prints a summary)

    def save_latest_state(self) -> None:
        pass

    def finish(self) -> None:
        pass


class CollectingSink(ConsoleSink):
    """Keeps every record and the weights at every epoch in memory (tests, notebooks, benchmarks)."""

    def __init__(self, log=lambda line: None):
        super().__init__(log)
        self.records: list[EpochRecord] = []
        self.weights: list[dict[str, torch.Tensor]] = []
        self.steps: list[torch.Tensor] = []

    def write_epoch(self, record, model, checkpoint):
        super().write_epoch(record, model, checkpoint)
        self.records.append(record)
        self.weights.append({k: v.cpu() for k, v in model.snapshot().items()})

    def write_steps(self, epoch, dist_E):
        self.steps.append(dist_E)

    def write_results(self, arrays, attrs):
        self.results = {"arrays": arrays, "attrs": attrs}


def format_epoch(r: EpochRecord, layer_names: list[str], total_epochs: int) -> str:
    layers = " ".join(f"{n}={float(d):.3e}" for n, d in zip(layer_names, r.dist_E))
    travelled = float(r.dist_init.norm())
    return (
        f"epoch {r.epoch:>3}/{total_epochs} phase {r.phase} loss {r.loss:.4f} acc {r.accuracy:.3f} "
        f"dist_E total={float(r.dist_E.norm()):.3e} [{layers}] travelled {travelled:.3e} {r.seconds:.2f}s"
    )


def check_fault(trial: Trial, epoch: int) -> None:
    """Test-only: ``PIPELINE_INJECT_FAULT="trial_id@epoch,..."`` makes those trials fail at that epoch.

    An environment variable rather than a setting, so that removing the fault does not change the grid.
    """
    for item in os.environ.get(FAULT_VARIABLE, "").split(","):
        trial_id, _, at = item.partition("@")
        if trial_id == trial.trial_id and at.isdigit() and int(at) == epoch:
            raise InjectedFault(f"injected fault in {trial.trial_id} at epoch {epoch} ({FAULT_VARIABLE})")


def _on_host(value):
    """A copy of a (nested) state with every tensor on the CPU: checkpoints outlive the live tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _on_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_host(v) for v in value)
    return value


def _in_flight_host_copy(value):
    """A host copy that a background sink completes and waits for on its own thread."""
    from .background import host_copy

    return host_copy(value)


def _resume_plan(sinks: list) -> tuple[str, list]:
    """'fresh', 'resume' (every sink at one epoch and phase) or 'separate' (anything else)."""
    points = [sink.resume_point() for sink in sinks]
    if all(point is None for point in points):
        return "fresh", points
    if all(point is not None for point in points) and len({point["epoch"] for point in points}) == 1:
        return "resume", points
    return "separate", points


def _finalize_with_progress(experiment, settings, stepper, data, trials: list[Trial], sinks: list) -> None:
    """The measurements after training, announced in the trials' logs with their duration. An experiment
    whose ``finalize`` takes a ``progress`` argument reports its stages through it
    (``pipeline.progress.StageProgress``: ``progress(stage, done, total)``)."""
    log = getattr(sinks[0], "log", print)
    names = ", ".join(t.trial_id for t in trials)
    log(f"{names}: final stage: measurements after training")
    started = time.perf_counter()
    progress = StageProgress(log, f"{names}: final stage")
    takes_progress = "progress" in inspect.signature(experiment.finalize).parameters
    try:
        experiment.finalize(settings, stepper, data, sinks, **({"progress": progress} if takes_progress else {}))
    finally:
        progress.close()
    log(f"{names}: final stage done in {time.perf_counter() - started:.1f} s")


def run_trial(trial: Trial, sink) -> None:
    """Train one trial into one sink."""
    run_trials([trial], [sink])


def run_trials(trials: list[Trial], sinks: list) -> None:
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
    how, points = _resume_plan(sinks)
    if how == "separate":
        for trial, sink in zip(trials, sinks):
            run_trials([trial], [sink])
        return

    experiment = experiments.of(trials[0])
    settings = trials[0].settings
    numerics.configure()
    device = numerics.resolve_device(settings.device)
    dtype = numerics.resolve_dtype(settings.dtype)
    data = experiment.load_data(settings, device, dtype)
    total = experiment.total_epochs(settings)

    if how == "fresh":
        epoch, written = 0, -1
        phase = 1
        models = [experiment.build_model(t.settings, phase).to(device=device, dtype=dtype) for t in trials]
        initials = [model.layer_snapshot() for model in models]
    else:
        epoch = written = points[0]["epoch"]
        # Checkpoints before phases were recorded held the phase of their epoch's model.
        phase = points[0].get("phase", experiment.phase_of(settings, epoch))
        models, initials = [], []
        for t, point in zip(trials, points):
            model = experiment.build_model(t.settings, phase).to(device=device, dtype=dtype)
            model.load_state_dict(point["model"])
            models.append(model)
            initials.append({k: v.to(device=device, dtype=dtype) for k, v in point["initial"].items()})
    stepper = experiment.stepper(models, [t.settings.seed for t in trials], settings=settings, data=data)
    if how == "resume" and points[0].get("stepper") is not None:
        stepper.load_state_dict(points[0]["stepper"])  # an optimizer with memory (e.g. L-BFGS) goes on as it was
    layer_names = list(stepper.template.layer_weights())
    for trial, sink in zip(trials, sinks):
        sink.begin(trial, layer_names, device, data)
    # Sinks that write from a background thread (pipeline.background) take device tensors and copies that
    # are still in flight, and wait for them on their own thread: no host synchronisation per row here.
    deferred = all(getattr(sink, "defers_host_copies", False) for sink in sinks)
    to_host = _in_flight_host_copy if deferred else _on_host
    # The start of a phase never changes within it: one host copy serves every checkpoint.
    initials_on_host = [{k: v.to("cpu", copy=True) for k, v in initial.items()} for initial in initials]
    loss_name = experiment.evaluation_loss(settings)
    grad_norms = [float("nan")] * len(trials)
    last_write = time.perf_counter()

    def checkpoint_of(i: int):
        def checkpoint():
            return {
                "epoch": epoch,
                "phase": phase,
                # Copies, never views: the live parameters keep changing after the checkpoint is taken.
                "model": {k: to_host(v) for k, v in stepper.models[i].state_dict().items()},
                "initial": initials_on_host[i],
                "stepper": to_host(stepper.state_dict()) if hasattr(stepper, "state_dict") else None,
            }
        return checkpoint

    # The layer measurements of the last step, reused while the weights are those it measured: a full-batch
    # epoch's row measures the very weights that the previous step's record did, and on a GPU measuring
    # costs about as much as a paper-size gradient step. Every in-place change of a parameter (a step, a
    # projection, a loaded state) bumps its version counter, and views share their base's counter.
    latest_measurements, measured_versions = None, None

    def weight_versions() -> tuple:
        return tuple((id(p), p._version) for model in stepper.models for p in model.parameters())

    def measurements_now() -> list[dict[str, torch.Tensor]]:
        if latest_measurements is not None and measured_versions == weight_versions():
            return latest_measurements
        measured = [model.layer_measurements(initial) for model, initial in zip(stepper.models, initials)]
        return measured if deferred else [{k: v.cpu() for k, v in m.items()} for m in measured]

    def write_row(measured: list[tuple[float, float]] | None, last: bool = False) -> None:
        """Record row ``epoch`` (the current state) in every sink, unless the sinks already hold it."""
        nonlocal written, last_write
        if epoch <= written:
            return
        measured = measured or stepper.evaluate(data, loss_name, settings.chunk_size)
        layers = measurements_now()
        now = time.perf_counter()
        seconds, last_write = now - last_write, now
        for i, sink in enumerate(sinks):
            loss, accuracy = measured[i]
            sink.write_epoch(EpochRecord(epoch, phase, loss, accuracy, seconds, grad_norms[i], **layers[i], last=last),
                             stepper.models[i], checkpoint_of(i))
        written = epoch
        diverged = [(t.trial_id, loss) for t, (loss, _) in zip(trials, measured) if not math.isfinite(loss)]
        if diverged:
            raise Diverged([d[0] for d in diverged], epoch, [d[1] for d in diverged])

    class Hooks(EpochHooks):
        def before_update(self, measured):
            write_row(measured)

        def after_step(self):
            nonlocal latest_measurements, measured_versions
            latest_measurements, measured_versions = measurements_now(), weight_versions()
            layers = latest_measurements
            for i, sink in enumerate(sinks):
                sink.write_steps(epoch + 1, layers[i]["dist_E"])

    try:
        while epoch < total and not experiment.finished(settings, stepper):
            stopping.check()  # a stop request (cancel, preemption) is acted on here, between epochs...
            for trial in trials:
                check_fault(trial, epoch + 1)
            next_phase = experiment.phase_of(settings, epoch + 1)
            if next_phase != phase:
                write_row(None)  # the end of a phase is measured on the model that trained it
                stepper = experiment.enter_phase(settings, stepper, next_phase)
                phase = next_phase
                latest_measurements = None  # new models, and distances from the phase's own start
                initials = [model.layer_snapshot() for model in stepper.models]
                initials_on_host = [{k: v.to("cpu", copy=True) for k, v in initial.items()} for initial in initials]
            grad_norms = experiment.train_epoch(settings, stepper, data, epoch + 1, Hooks())
            epoch += 1
        write_row(None, last=True)
    except Exception as error:
        # A failure inside an epoch leaves the state before it untouched (parameters change in the update
        # only): record it, so that the file holds every epoch that was done, unless recording is what failed.
        if epoch > written and not isinstance(error, (OSError, MemoryError, Diverged, LostOwnership)):
            try:
                write_row(None)
            except Exception:
                pass
        raise
    if experiment.has_final_stage:
        # Measurements after training take a while: a preemption during them resumes here, not from scratch.
        for sink in sinks:
            sink.save_latest_state()
        _finalize_with_progress(experiment, settings, stepper, data, trials, sinks)
    for sink in sinks:
        sink.finish()
