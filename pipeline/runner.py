"""Train one trial from its configuration, top to bottom.

The runner knows the science (which model, which phase, which step); a *sink* knows where results go:
:class:`ConsoleSink` prints one line per epoch, the HDF5 trial store (``pipeline.store``) streams them to
the trial's file and keeps a rolling checkpoint from which an interrupted trial resumes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from . import numerics
from .config import CNNTrial, GroupsTrial, TrialConfig
from .data import Dataset, load_mnist
from .groups import get_group
from .models import CNN, CONFIGS, GroupNet
from .models.base import MeasuredModel
from .training import Augmentation, evaluate, full_batch_epoch, seeded_generator, sgd_epoch


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection (PIPELINE_INJECT_FAULT)."""


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


class ConsoleSink:
    """Prints progress; keeps nothing, so a run through it cannot be resumed."""

    def __init__(self, log=print):
        self.log = log

    def begin(self, trial: TrialConfig, layer_names: list[str], device: torch.device, data: Dataset) -> None:
        self.layer_names = layer_names
        self.total = trial.total_epochs
        self.log(f"{trial.trial_id}: {trial.experiment} on {device}, {len(data)} samples from {data.source}")

    def resume_point(self) -> dict | None:
        return None

    def write_epoch(self, record: EpochRecord, model: MeasuredModel, checkpoint) -> None:
        self.log(format_epoch(record, self.layer_names, self.total))

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
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


def format_epoch(r: EpochRecord, layer_names: list[str], total_epochs: int) -> str:
    layers = " ".join(f"{n}={float(d):.3e}" for n, d in zip(layer_names, r.dist_E))
    travelled = float(r.dist_init.norm())
    return (
        f"epoch {r.epoch:>3}/{total_epochs} phase {r.phase} loss {r.loss:.4f} acc {r.accuracy:.3f} "
        f"dist_E total={float(r.dist_E.norm()):.3e} [{layers}] travelled {travelled:.3e} {r.seconds:.2f}s"
    )


def load_trial_data(trial: TrialConfig, device, dtype) -> Dataset:
    if isinstance(trial, GroupsTrial):
        data = load_mnist(trial.n_samples, size=trial.n, source=trial.data_source)
    else:
        data = load_mnist(trial.n_samples, size=trial.image_size, normalize=True, source=trial.data_source)
    return data.to(device, dtype)


def build_model(trial: TrialConfig, parametrization: str = "equivariant") -> MeasuredModel:
    """The trial's model at its seeded initial point (the same A0 for every mode of a seed)."""
    generator = seeded_generator(trial.seed, "init")
    if isinstance(trial, GroupsTrial):
        activation = None if trial.invariant_activation == "auto" else trial.invariant_activation
        model = GroupNet(get_group(trial.group, trial.n), trial.channels, invariant_activation=activation)
    else:
        support, _ = CONFIGS[trial.config]
        model = CNN(support, parametrization, trial.channel_widths, trial.image_size, basis_seed=trial.basis_seed)
    model = model.double()
    model.initialize(generator)
    return model


def phase_of(trial: TrialConfig, epoch: int) -> int:
    return 2 if isinstance(trial, CNNTrial) and epoch > trial.phase1_epochs else 1


FAULT_VARIABLE = "PIPELINE_INJECT_FAULT"


def check_fault(trial: TrialConfig, epoch: int) -> None:
    """Test-only: ``PIPELINE_INJECT_FAULT="trial_id@epoch,..."`` makes those trials fail at that epoch.

    An environment variable rather than a setting, so that removing the fault does not change the grid.
    """
    for item in os.environ.get(FAULT_VARIABLE, "").split(","):
        trial_id, _, at = item.partition("@")
        if trial_id == trial.trial_id and at.isdigit() and int(at) == epoch:
            raise InjectedFault(f"injected fault in {trial.trial_id} at epoch {epoch} ({FAULT_VARIABLE})")


def _train_one_epoch(trial, model, data, epoch, on_step) -> float:
    generator = seeded_generator(trial.seed, epoch, "data order and augmentation")
    if isinstance(trial, GroupsTrial):
        augmentation = Augmentation.parse(trial.augment, trial.aug_batch)
        return full_batch_epoch(model, data, trial.mode, augmentation, trial.lr, trial.loss, trial.chunk_size,
                                generator)
    if phase_of(trial, epoch) == 1:
        return sgd_epoch(model, data, "equi", None, trial.phase1_lr, "mse", trial.phase1_batch, generator)
    orbit = Augmentation("orbit")
    if trial.phase2_optimizer == "sgd":
        return sgd_epoch(model, data, trial.phase2_mode, orbit, trial.phase2_lr, "mse", trial.phase2_batch,
                         generator, on_step=on_step)
    grad_norm = full_batch_epoch(model, data, trial.phase2_mode, orbit, trial.phase2_lr, "mse", trial.chunk_size,
                                 generator)
    on_step()
    return grad_norm


def run_trial(trial: TrialConfig, sink) -> None:
    numerics.configure()
    device, dtype = numerics.resolve_device(trial.device), numerics.resolve_dtype(trial.dtype)
    data = load_trial_data(trial, device, dtype)
    chunk = trial.chunk_size

    resume = sink.resume_point()
    if resume is None:
        model = build_model(trial).to(device=device, dtype=dtype)
        epoch = 0
        initial = model.snapshot()
    else:
        epoch = resume["epoch"]
        parametrization = resume.get("parametrization", "equivariant")
        model = build_model(trial, parametrization).to(device=device, dtype=dtype)
        model.load_state_dict(resume["model"])
        initial = {k: v.to(device=device, dtype=dtype) for k, v in resume["initial"].items()}
    sink.begin(trial, list(model.layer_weights()), device, data)
    # The start of the phase never changes within it: one host copy serves every checkpoint.
    initial_on_host = {k: v.to("cpu", copy=True) for k, v in initial.items()}

    def checkpoint():
        return {
            "epoch": epoch,
            "parametrization": getattr(model, "parametrization", "equivariant"),
            # Copies, never views: the live parameters keep changing after the checkpoint is taken.
            "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            "initial": initial_on_host,
        }

    def record(grad_norm: float, started: float) -> None:
        loss, accuracy = evaluate(model, data, trial.loss if isinstance(trial, GroupsTrial) else "mse", chunk)
        measured = {k: v.cpu() for k, v in model.layer_measurements(initial).items()}
        seconds = time.perf_counter() - started
        sink.write_epoch(EpochRecord(epoch, phase_of(trial, epoch), loss, accuracy, seconds, grad_norm, **measured),
                         model, checkpoint)

    if resume is None:
        record(float("nan"), time.perf_counter())

    while epoch < trial.total_epochs:
        started = time.perf_counter()
        next_epoch = epoch + 1
        check_fault(trial, next_epoch)
        if phase_of(trial, next_epoch) == 2 and model.parametrization == "equivariant":
            model = model.transferred(CONFIGS[trial.config][1], trial.basis_seed)
            initial = model.snapshot()
            initial_on_host = {k: v.to("cpu", copy=True) for k, v in initial.items()}

        def on_step():
            sink.write_steps(next_epoch, model.layer_measurements(initial)["dist_E"].cpu())

        grad_norm = _train_one_epoch(trial, model, data, next_epoch, on_step)
        epoch = next_epoch
        record(grad_norm, started)
    sink.finish()
