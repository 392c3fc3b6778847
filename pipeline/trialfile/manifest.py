"""A results folder's ``manifest.json``: every trial of its grid, with its index, id, labels and settings.

The manifest is what every later command reads: the array tasks (which trial is index i), ``status``,
``resubmit``, ``cancel`` and the analysis (the labels of a trial: its cell, mode and swept settings). A
folder can grow: submitting a grid with more seeds or another value of an axis adds the new trials at
the end (indices of existing trials never change) and keeps the trials already there; a grid that would
change an existing trial is refused, naming the setting that differs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pipeline import durable, experiments, folder
from pipeline.experiments import Trial
from pipeline.folder import ResultsFolder
from pipeline.settings import CommonSettings, ConfigError, quoted
from pipeline.trialfile.wellformed import TRIALS_KEY, check_manifest

MANIFEST = folder.MANIFEST  # its name, for messages
FORMAT = 2
# Settings that say where a trial runs, not what it computes: a grid submitted again with another value
# (``device=cpu`` corrected to ``auto`` for a GPU profile) moves the folder's trials instead of being refused.
PLACEMENT = ("device",)


class GridRecord(Protocol):
    """What the manifest records of the grid a folder's trials come from (``pipeline.launch.grid.Grid``)."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def overrides(self) -> Mapping[str, Any]: ...

    @property
    def launch(self) -> Mapping[str, Any]: ...


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def entry_of(trial: Trial) -> dict:
    experiment = experiments.of(trial)
    labels = experiment.labels(trial.settings)
    return {"index": trial.index, "trial_id": trial.trial_id, "experiment": trial.experiment,
            "labels": {"cell_key": labels.cell_key, "cell": labels.cell, "mode": labels.mode},
            "swept": dict(trial.swept), "settings": dataclasses.asdict(trial.settings)}


def trial_of(entry: dict) -> Trial:
    """A manifest entry as a Trial; entries written before labels existed (settings under "config") too."""
    recorded = entry["settings"] if "settings" in entry else entry["config"]
    values = {k: v for k, v in recorded.items() if k != "experiment"}
    settings = experiments.get(entry["experiment"]).make_settings(values)
    return Trial(int(entry["index"]), entry["trial_id"], settings, dict(entry.get("swept", {})))


def labels_of(entry: dict) -> dict:
    """The labels of a manifest entry, computed for entries of manifests that did not store them."""
    if "labels" in entry:
        return entry["labels"]
    trial = trial_of(entry)
    labels = experiments.of(trial).labels(trial.settings)
    return {"cell_key": labels.cell_key, "cell": labels.cell, "mode": labels.mode}


def read_manifest(out_dir: Path) -> dict:
    path = ResultsFolder.of(out_dir).manifest
    if not path.exists():
        raise ConfigError(f"no {MANIFEST} in {quoted(out_dir)}: not a results folder of this pipeline")
    try:
        document = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise ConfigError(f"{quoted(path)} is damaged ({type(error).__name__}: {error}); restore it, or submit the "
                          "grid again into a new folder") from None
    check_manifest(document, path)  # valid JSON is not yet a manifest: trial ids become paths
    return document


def entries(manifest: dict) -> list[dict]:
    """The manifest's trial entries, in index order: the one place that knows where a manifest keeps them."""
    trials: list[dict] = manifest[TRIALS_KEY]
    return trials


def trial_ids(manifest: dict) -> list[str]:
    return [entry["trial_id"] for entry in entries(manifest)]


def trials_of_manifest(manifest: dict) -> list[Trial]:
    return [trial_of(entry) for entry in entries(manifest)]


def _first_difference(a: CommonSettings, b: CommonSettings) -> str:
    for field in dataclasses.fields(a):
        if field.name not in PLACEMENT and getattr(a, field.name) != getattr(b, field.name):
            return f"{field.name}={getattr(a, field.name)!r} there, {getattr(b, field.name)!r} in this grid"
    return "none"


def merge(existing: list[Trial], wanted: list[Trial]) -> tuple[list[Trial], list[Trial]]:
    """The trials of ``wanted`` as the folder knows them, and the new ones to append.

    A wanted trial is the existing trial with its id if their settings agree (the id of an existing trial
    wins: a grid that makes a single value an axis renames nothing), new otherwise; an existing id whose
    settings differ is refused. Settings of ``PLACEMENT`` are not compared: the existing trial comes back
    with the wanted value (``write_manifest`` records it)."""
    by_id = {t.trial_id: t for t in existing}
    by_settings = {(t.experiment, _identity(t)): t for t in existing}
    resolved, added = [], []
    next_index = len(existing)
    for trial in wanted:
        known = by_settings.get((trial.experiment, _identity(trial)))
        if known is not None:
            placed = {key: getattr(trial.settings, key) for key in PLACEMENT}
            resolved.append(dataclasses.replace(known, settings=dataclasses.replace(known.settings, **placed)))
            continue
        if trial.trial_id in by_id:
            other = by_id[trial.trial_id]
            difference = (_first_difference(other.settings, trial.settings) if other.experiment == trial.experiment
                          else "another experiment")
            raise ConfigError(f"trial {trial.trial_id} exists in this folder with other settings ({difference}); "
                              "use another --out, or the settings it was run with")
        new = dataclasses.replace(trial, index=next_index)
        next_index += 1
        resolved.append(new)
        added.append(new)
    return resolved, added


def _identity(trial: Trial) -> str:
    """What a trial computes: its settings but those of ``PLACEMENT``."""
    values = dataclasses.asdict(trial.settings)
    return repr((type(trial.settings).__name__, [(k, v) for k, v in values.items() if k not in PLACEMENT]))


def _placed(entries: list[dict], resolved: list[Trial]) -> bool:
    """Record in the manifest's entries the placement the grid now gives its trials; whether any changed."""
    changed = False
    by_index = {t.index: t for t in resolved}
    for entry in entries:
        trial = by_index.get(int(entry["index"]))
        settings = entry.get("settings")
        if trial is None or settings is None:
            continue
        for key in PLACEMENT:
            value = getattr(trial.settings, key)
            if key in settings and settings[key] != value:
                settings[key] = value
                changed = True
    return changed


def write_manifest(out_dir: Path, grid: GridRecord, trials: list[Trial]) -> list[Trial]:
    """Record the grid's trials in the folder's manifest (creating it, or growing it) and return them with
    the indices and ids the folder gives them. Callers hold the folder's guard (``pipeline.leases.ownership``)
    where processes may race."""
    out_dir = Path(out_dir)
    durable.make_dirs(out_dir)
    path = ResultsFolder.of(out_dir).manifest
    record = {"name": grid.name, "source": grid.source, "description": grid.description,
              "overrides": grid.overrides, "launch": grid.launch, "written_at": utc_now(),
              "git_commit": git_commit()}
    if path.exists():
        document = read_manifest(out_dir)
        resolved, added = merge(trials_of_manifest(document), trials)
        moved = _placed(entries(document), resolved)
        if not added:
            if moved:
                write_json_atomically(path, document)
            return resolved
        document = {**document, "format": FORMAT, "launch": grid.launch or document.get("launch", {}),
                    "grown": document.get("grown", []) + [{**record, "added": len(added)}],
                    "num_trials": len(entries(document)) + len(added),
                    TRIALS_KEY: entries(document) + [entry_of(t) for t in added]}
    else:
        resolved = trials
        document = {"format": FORMAT, "grid": grid.name, "source": grid.source, "description": grid.description,
                    "overrides": grid.overrides, "launch": grid.launch, "created_at": record["written_at"],
                    "git_commit": record["git_commit"], "num_trials": len(trials),
                    TRIALS_KEY: [entry_of(t) for t in trials]}
    write_json_atomically(path, document)
    return resolved


def write_json_atomically(path: Path, document: dict) -> None:
    """All or nothing, and durable before it returns: the launch recorded next relies on it."""
    durable.write_atomically(path, json.dumps(document, indent=1).encode(), str(os.getpid()))


def select(trials: list[Trial], index: int | None = None, trial_id: str | None = None) -> Trial:
    if trial_id is not None:
        for trial in trials:
            if trial.trial_id == trial_id:
                return trial
        raise ConfigError(f"unknown trial {trial_id!r}; accepted: {trials[0].trial_id} ... {trials[-1].trial_id} "
                          "(see `pipeline plan`)")
    if index is None or not 0 <= index < len(trials):
        raise ConfigError(f"trial index {index} out of range; accepted: 0..{len(trials) - 1}")
    return trials[index]
