"""Optimization dynamics of equivariant and augmented networks: groups, models, training, trials."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names for the checker only: `import pipeline` stays free of torch
    import torch

    from pipeline.trialfile.reload import LoadedTrial

__version__ = "0.1.0"


def load_model(path: str | Path, snapshot: int = -1, *, epoch: int | None = None,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a trial file at one of its weight snapshots (see :func:`pipeline.trialfile.reload.load_model`).

    Imported on call, so that ``import pipeline`` (configuration, ``plan``, the launcher) stays free of torch."""
    from pipeline.trialfile.reload import load_model as load  # deferred: torch, kept out of `import pipeline`

    model: torch.nn.Module = load(path, snapshot, epoch=epoch, device=device)
    return model


def load_trial(path: str | Path, snapshot: int = -1, *, epoch: int | None = None,
               device: str | torch.device = "cpu") -> LoadedTrial:
    """A trial from its file, for a notebook: ``.settings``, ``.model`` (at a weight snapshot), ``.data`` and
    ``.evaluate()`` (loss and accuracy, beside what the file recorded); see :func:`pipeline.trialfile.reload.load_trial`."""
    from pipeline.trialfile.reload import load_trial as load  # deferred: torch, kept out of `import pipeline`

    trial: LoadedTrial = load(path, snapshot, epoch=epoch, device=device)
    return trial


__all__ = ["load_model", "load_trial"]
