"""Optimization dynamics of equivariant and augmented networks: groups, models, training, trials."""

__version__ = "0.1.0"


def load_model(path, snapshot: int = -1, *, epoch: int | None = None, device="cpu"):
    """The model of a trial file at one of its weight snapshots (see :func:`pipeline.trialfile.reload.load_model`).

    Imported on call, so that ``import pipeline`` (configuration, ``plan``, the launcher) stays free of torch."""
    from pipeline.trialfile.reload import load_model as load

    return load(path, snapshot, epoch=epoch, device=device)


def load_trial(path, snapshot: int = -1, *, epoch: int | None = None, device="cpu"):
    """A trial from its file, for a notebook: ``.settings``, ``.model`` (at a weight snapshot), ``.data`` and
    ``.evaluate()`` (loss and accuracy, beside what the file recorded); see :func:`pipeline.trialfile.reload.load_trial`."""
    from pipeline.trialfile.reload import load_trial as load

    return load(path, snapshot, epoch=epoch, device=device)


__all__ = ["load_model", "load_trial"]
