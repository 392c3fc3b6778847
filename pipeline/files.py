"""Reading trial files without torch: paths, attributes, and whether a file's data is what it claims.

``status``, the launcher and the analysis read trial files through this module; only the runner writes
them (``pipeline.store``). Files are opened read-only and without HDF5 file locks, which fail on many
cluster file systems and would block readers of a running trial.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

TRIALS = "trials"
# weights/phase<p>/: the parameters of phase p's model that no measured layer holds (schema 3).
PHASE_GROUP = "phase"
# The first schema whose weight snapshots hold the whole model, so that a model can be rebuilt from them.
WHOLE_MODEL_SCHEMA = 3


class SnapshotError(ValueError):
    """A weight snapshot that cannot be read or rebuilt into a model, said in one line."""


def open_h5(path: Path, mode: str = "r") -> h5py.File:
    return h5py.File(path, mode, locking=False)


def trial_paths(out_dir: Path, trial_id: str) -> tuple[Path, Path]:
    """The trial's HDF5 file and its rolling checkpoint."""
    folder = Path(out_dir) / TRIALS
    return folder / f"{trial_id}.h5", folder / f"{trial_id}.state.pt"


def plain(value):
    """An HDF5 attribute as a plain Python value (numpy scalars and bytes come back as such)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def read_status(path: Path) -> dict:
    """The attributes of a trial file, or {'status': 'damaged', 'error': ...} if it cannot be read."""
    try:
        with open_h5(path) as f:
            attrs = {k: plain(v) for k, v in f.attrs.items()}
            attrs.setdefault("status", "running")
            return attrs
    except Exception as error:  # h5py raises OSError, KeyError or RuntimeError on damaged files
        return {"status": "damaged", "error": f"{type(error).__name__}: {error}".splitlines()[0]}


def settings_of(attrs: dict) -> dict:
    """The trial's settings as the file recorded them (files before schema 2 named them ``config``)."""
    return json.loads(attrs.get("settings", attrs.get("config", "{}")))


@dataclass
class FileState:
    """What a trial file says and whether its data backs it up."""

    status: str  # complete, running, failed, cancelled, damaged, inconsistent
    attrs: dict
    rows: int = 0  # epoch rows every series holds
    problem: str = ""  # why it is damaged or inconsistent


def inspect(path: Path) -> FileState:
    """Read a file's attributes and check them against its data: a file says ``complete`` only when it
    holds exactly the rows 0..total_epochs, epochs_done == total_epochs and every series has them all."""
    attrs = read_status(path)
    if attrs["status"] == "damaged":
        return FileState("damaged", attrs, problem=attrs["error"])
    try:
        with open_h5(path) as f:
            lengths = {name: f["metrics"][name].shape[0] for name in f["metrics"]} if "metrics" in f else {}
            epochs = f["metrics/epoch"][()] if "metrics/epoch" in f else np.zeros(0, dtype=np.int64)
    except Exception as error:
        return FileState("damaged", attrs, problem=f"{type(error).__name__}: {error}".splitlines()[0])
    rows = min(lengths.values()) if lengths else 0
    status = attrs["status"]
    if status != "complete":
        return FileState(status, attrs, rows)
    total, done = attrs.get("total_epochs"), attrs.get("epochs_done")
    differences = []
    if len(set(lengths.values())) > 1:
        differences.append("series of different lengths (" + ", ".join(f"{k} {v}" for k, v in lengths.items()) + ")")
    if total is None or rows != int(total) + 1:
        differences.append(f"{rows} epoch rows for {total} epochs")
    if done != total:
        differences.append(f"epochs_done {done} != total_epochs {total}")
    if rows and not np.array_equal(epochs[:rows], np.arange(rows)):
        differences.append("epoch numbers out of order")
    if differences:
        return FileState("inconsistent", attrs, rows, "marked complete but holds " + "; ".join(differences))
    return FileState("complete", attrs, rows)


def read_results_attrs(path: Path) -> dict:
    """The attributes of a trial file's ``results/`` (what was measured after training); {} where there are none."""
    with open_h5(path) as f:
        return {k: plain(v) for k, v in f["results"].attrs.items()} if "results" in f else {}


def weight_rows_through(weights: h5py.Group, epoch: int) -> dict[str, int]:
    """{dataset path under ``weights/``: rows that hold snapshots of epochs <= ``epoch``} (for truncation)."""
    epochs = weights["epochs"][()]
    kept = epochs <= epoch
    phases = weights["phase"][()] if "phase" in weights else np.ones_like(epochs)
    rows = {}
    for name, item in weights.items():
        if isinstance(item, h5py.Group):  # phase<p>/: a row per snapshot of phase p
            p = int(name[len(PHASE_GROUP):])
            rows.update({f"{name}/{child}": int(np.sum(kept & (phases == p))) for child in item})
        else:
            rows[name] = int(np.sum(kept))
    return rows


@dataclass
class Snapshot:
    """One weight snapshot of a trial file, as arrays: what ``MeasuredModel.load_snapshot`` takes."""

    index: int  # its row in weights/epochs (from 0)
    epoch: int
    phase: int
    arrays: dict  # name -> np.ndarray: measured layers and the other parameters of the phase's model


def read_snapshot(path: Path, snapshot: int = -1, epoch: int | None = None) -> tuple[dict, Snapshot]:
    """(file attributes, snapshot) of snapshot number ``snapshot`` (negative counts from the last) or, if
    given, of epoch ``epoch``. Raises SnapshotError, in one line, where the file cannot give one."""
    attrs = read_status(path)
    if attrs["status"] == "damaged":
        raise SnapshotError(f"{path}: unreadable trial file ({attrs['error']})")
    schema = int(attrs.get("schema_version", 1))
    if schema < WHOLE_MODEL_SCHEMA:
        raise SnapshotError(f"{path}: schema_version {schema} predates whole-model snapshots (schema "
                            f"{WHOLE_MODEL_SCHEMA}): its weights hold the measured layers only, so no model can be "
                            "rebuilt from it; rerun the trial (--force) to store whole models")
    with open_h5(path) as f:
        if "weights" not in f or "epochs" not in f["weights"] or not len(f["weights/epochs"]):
            raise SnapshotError(f"{path}: no weight snapshot stored yet")
        weights = f["weights"]
        epochs = weights["epochs"][()]
        phases = weights["phase"][()]
        stored = ", ".join(str(int(e)) for e in epochs)
        if epoch is not None:
            found = np.flatnonzero(epochs == epoch)
            if not found.size:
                raise SnapshotError(f"{path}: no snapshot of epoch {epoch}; stored epochs: {stored}")
            index = int(found[-1])
        else:
            if isinstance(snapshot, bool) or not isinstance(snapshot, (int, np.integer)) or \
                    not -len(epochs) <= snapshot < len(epochs):
                raise SnapshotError(f"{path}: snapshot {snapshot!r} out of range: {len(epochs)} stored (from 0, or "
                                    f"negative from the last), of epochs {stored}")
            index = int(snapshot) % len(epochs)
        phase = int(phases[index])
        arrays = {_text(name): weights[_text(name)][index] for name in weights.attrs["layer_names"]}
        group = f"{PHASE_GROUP}{phase}"
        if group in weights:
            row = int(np.sum(phases[:index] == phase))
            arrays.update({name: dataset[row] for name, dataset in weights[group].items()})
        return attrs, Snapshot(index, int(epochs[index]), phase, arrays)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
