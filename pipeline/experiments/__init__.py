"""The experiments the pipeline runs, by name.

A new experiment is one module in this package that defines an :class:`~.base.Experiment` (its settings,
labels, model, data, epoch of training, cost) as ``EXPERIMENT``, plus one line in ``REGISTRY`` below.
Nothing else in the pipeline or the analysis names an experiment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.experiments import cnn, groups, stability
from pipeline.experiments.base import Experiment, Labels, Trial
from pipeline.settings import CommonSettings, ConfigError, check_choice

REGISTRY: dict[str, Experiment[Any, Any]] = {
    "groups": groups.EXPERIMENT,
    "cnn": cnn.EXPERIMENT,
    "stability": stability.EXPERIMENT,
}


# Trial files written while Experiment G was the only experiment do not name theirs (the ``experiment``
# attribute came with the second): a file without one is that experiment's.
UNNAMED = "groups"


def named_in(attrs: Mapping[str, object]) -> str:
    """The name of the experiment a trial file's (or a record's) attributes say it ran."""
    return str(attrs.get("experiment", UNNAMED))


def get(name: str) -> Experiment[Any, Any]:
    check_choice("experiment", name, REGISTRY)
    return REGISTRY[name]


def of(trial_or_settings: Trial | CommonSettings) -> Experiment[Any, Any]:
    """The experiment of a :class:`Trial` or of a settings object."""
    settings = trial_or_settings.settings if isinstance(trial_or_settings, Trial) else trial_or_settings
    return REGISTRY[type(settings).experiment]


def make_trial(experiment: str, values: dict, index: int = 0) -> Trial:
    """A single trial, outside any grid: its id is the experiment's labels and the seed."""
    settings = get(experiment).make_settings(values)
    return Trial(index, default_trial_id(settings), settings)


def default_trial_id(settings: CommonSettings) -> str:
    return f"{of(settings).id_prefix(settings)}-s{settings.seed:03d}"


def check_packable(trials: list[Trial]) -> None:
    """Raise ValueError unless the trials can train as one packed model: one experiment that packs, equal
    settings but for the seed, distinct seeds."""
    if not trials:
        raise ValueError("nothing to pack: no trials given")
    first = trials[0]
    if of(first).pack_key(first.settings) is None:
        raise ValueError(f"{first.experiment} trials cannot be trained packed ({first.trial_id})")
    reference = dataclasses.asdict(first.settings)
    for trial in trials[1:]:
        if trial.experiment != first.experiment:
            raise ValueError(f"packed trials must be of one experiment: {first.trial_id}, {trial.trial_id}")
        for name, value in dataclasses.asdict(trial.settings).items():
            if name != "seed" and value != reference[name]:
                raise ValueError(f"packed trials must differ only in seed, but {trial.trial_id} has {name}={value!r} "
                                 f"and {first.trial_id} has {name}={reference[name]!r}")
    seeds = [t.settings.seed for t in trials]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"packed trials must have distinct seeds, got {seeds}")


def packable(trials: list[Trial]) -> bool:
    try:
        check_packable(trials)
    except ValueError:
        return False
    return True


__all__ = ["REGISTRY", "UNNAMED", "ConfigError", "Experiment", "Labels", "Trial", "check_packable", "default_trial_id",
           "get", "make_trial", "named_in", "of", "packable"]
