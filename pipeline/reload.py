"""A trial's model from its file alone: ``pipeline.load_model(path, snapshot=-1)``.

The file's settings (JSON in its attributes) and the experiment registry rebuild the model as it was
trained in the snapshot's phase (``Experiment.build_model``); the snapshot's tensors then set every
parameter (``MeasuredModel.load_snapshot``), exactly as they were when the snapshot was taken.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from . import experiments, numerics
from .files import SnapshotError, read_snapshot, settings_of
from .settings import ConfigError


def load_model(path, snapshot: int = -1, *, epoch: int | None = None, device: str | torch.device = "cpu"):
    """The model of a trial file at one of its weight snapshots: ``snapshot`` counts the snapshots from 0
    (negative: from the last; ``weights/epochs`` says which epoch each one is), or ``epoch`` names the
    epoch. The model is in the trial's dtype, on ``device``, in eval mode. Raises SnapshotError (one line)
    for a file that cannot give it: one of schema 2 or earlier, a missing snapshot, unknown settings."""
    path = Path(path)
    attrs, found = read_snapshot(path, snapshot, epoch)
    name = str(attrs.get("experiment", "groups"))
    if name not in experiments.REGISTRY:
        raise SnapshotError(f"{path}: experiment {name!r} is not one this pipeline knows; accepted: "
                            f"{', '.join(experiments.REGISTRY)}")
    experiment = experiments.get(name)
    values = {k: v for k, v in settings_of(attrs).items() if k != "experiment"}
    # A file of an earlier version may hold a setting this pipeline no longer has (Experiment S's gradient_floor):
    # it said how a search stopped, not what the model is.
    known = {f.name for f in dataclasses.fields(experiment.settings_type)} | set(experiment.aliases)
    values = {k: v for k, v in values.items() if k in known}
    try:
        settings = experiment.make_settings(values)
    except ConfigError as error:
        raise SnapshotError(f"{path}: its settings do not rebuild a {name} trial here: {error}") from None
    model = experiment.build_model(settings, found.phase).to(device=torch.device(device),
                                                              dtype=numerics.resolve_dtype(settings.dtype))
    try:
        model.load_snapshot({key: torch.from_numpy(value) for key, value in found.arrays.items()})
    except ValueError as error:
        raise SnapshotError(f"{path}: snapshot {found.index} (epoch {found.epoch}): {error}") from None
    return model.eval()
