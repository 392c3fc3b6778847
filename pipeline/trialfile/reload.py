"""A trial's model from its file alone: ``pipeline.load_model(path, snapshot=-1)``; and the whole trial for a
notebook, settings, model, data and evaluation: ``pipeline.load_trial(path)``.

The file's settings (JSON in its attributes) and the experiment registry rebuild the model as it was
trained in the snapshot's phase (``Experiment.build_model``); the snapshot's tensors then set every
parameter (``MeasuredModel.load_snapshot``), exactly as they were when the snapshot was taken.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline import experiments, schema
from pipeline.core import numerics
from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.core.training import evaluate
from pipeline.experiments import Experiment
from pipeline.settings import CommonSettings, ConfigError
from pipeline.trialfile.files import SnapshotError, open_h5, read_snapshot, settings_of


def load_model(path: Path | str, snapshot: int = -1, *, epoch: int | None = None,
               device: str | torch.device = "cpu") -> MeasuredModel:
    """The model of a trial file at one of its weight snapshots: ``snapshot`` counts the snapshots from 0
    (negative: from the last; ``weights/epochs`` says which epoch each one is), or ``epoch`` names the
    epoch. The model is in the trial's dtype, on ``device``, in eval mode. Raises SnapshotError (one line)
    for a file that cannot give it: one of schema 2 or earlier, a missing snapshot, unknown settings."""
    path = Path(path)
    attrs, found = read_snapshot(path, snapshot, epoch)
    name = experiments.named_in(attrs)
    if name not in experiments.REGISTRY:
        raise SnapshotError(f"{path}: experiment {name!r} is not one this pipeline knows; accepted: "
                            f"{', '.join(experiments.REGISTRY)}")
    experiment = experiments.get(name)
    try:
        settings = _settings_of_file(experiment, attrs)
    except ConfigError as error:
        raise SnapshotError(f"{path}: its settings do not rebuild a {name} trial here: {error}") from None
    model = experiment.build_model(settings, found.phase).to(device=torch.device(device),
                                                              dtype=numerics.resolve_dtype(settings.dtype))
    try:
        model.load_snapshot({key: torch.from_numpy(value) for key, value in found.arrays.items()})
    except ValueError as error:
        raise SnapshotError(f"{path}: snapshot {found.index} (epoch {found.epoch}): {error}") from None
    return model.eval()


def _settings_of_file(experiment: Experiment[Any, Any], attrs: Mapping[str, Any]) -> CommonSettings:
    """The experiment's settings as a trial file recorded them."""
    values = {k: v for k, v in settings_of(attrs).items() if k != "experiment"}
    # A file of an earlier version may hold a setting this pipeline no longer has (Experiment S's gradient_floor):
    # it said how a search stopped, not what the model is.
    known = {f.name for f in dataclasses.fields(experiment.settings_type)} | set(experiment.aliases)
    return experiment.make_settings({k: v for k, v in values.items() if k in known})


@dataclasses.dataclass
class LoadedTrial:
    """A trial from its file alone, for a notebook (``pipeline.load_trial``): its settings, its model at a
    weight snapshot, its data, and the evaluation of that model on that data as the trial measured it."""

    path: Path
    attrs: dict[str, Any]  # the file's attributes (status, device, provenance, ...)
    settings: Any  # the experiment's settings dataclass, as the trial ran with them (its fields: the experiment's)
    model: MeasuredModel
    epoch: int  # the epoch of the snapshot the model holds
    device: torch.device

    @property
    def trial_id(self) -> str:
        return str(self.attrs.get("trial_id", self.path.stem))

    @property
    def experiment(self) -> Experiment[Any, Any]:
        return experiments.get(experiments.named_in(self.attrs))

    @functools.cached_property
    def data(self) -> Dataset:
        """The trial's training data (the same samples, source and normalisation), on the model's device."""
        return self.experiment.load_data(self.settings, self.device, numerics.resolve_dtype(self.settings.dtype))

    def evaluate(self) -> dict[str, float]:
        """The model's loss and accuracy on the trial's untransformed training data, computed as the trial
        computed them (a weight decay, where the experiment has one, included in the loss), beside what the
        file recorded for the same epoch (``recorded_loss``, ``recorded_accuracy``)."""
        settings = self.settings
        with torch.no_grad():
            loss, accuracy = evaluate(self.model, self.data, self.experiment.evaluation_loss(settings),
                                      settings.chunk_size)
            decay = float(getattr(settings, "weight_decay", 0.0))
            if decay:
                loss += 0.5 * decay * sum(float((p ** 2).sum()) for p in self.model.parameters())
        with open_h5(self.path) as f:
            metrics = f[schema.METRICS]
            rows = metrics[schema.ROW_EPOCH][()]
            row = int(list(rows).index(self.epoch)) if self.epoch in rows else -1
            recorded = {name: float(metrics[name][row]) for name in (schema.LOSS, schema.ACCURACY)}
        return {"epoch": self.epoch, "loss": loss, "accuracy": accuracy,
                "recorded_loss": recorded[schema.LOSS], "recorded_accuracy": recorded[schema.ACCURACY]}


def load_trial(path: Path | str, snapshot: int = -1, *, epoch: int | None = None,
               device: str | torch.device = "cpu") -> LoadedTrial:
    """A trial from its file: settings, model (at ``snapshot`` or ``epoch``, as :func:`load_model`), data and
    evaluation (``.evaluate()``). Raises SnapshotError, in one line, for a file that cannot give them."""
    path = Path(path)
    model = load_model(path, snapshot, epoch=epoch, device=device)
    attrs, found = read_snapshot(path, snapshot, epoch)
    experiment = experiments.get(experiments.named_in(attrs))
    settings = _settings_of_file(experiment, attrs)
    return LoadedTrial(path, attrs, settings, model, int(found.epoch), torch.device(device))
