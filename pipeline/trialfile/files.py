"""Reading trial files without torch: paths, attributes, and whether a file's data is what it claims.

``status``, the launcher and the analysis read trial files through this module; only the runner writes
them (``pipeline.trialfile.store``). Files are opened read-only and without HDF5 file locks, which fail on many
cluster file systems and would block readers of a running trial.

What was committed carries checksums (``schema.ATTRS_CHECKSUM`` over the attributes, Fletcher-32 on every
chunk of every dataset): a file whose bytes are not what was written (a flipped bit, a block a dead node
never wrote) reads as ``damaged``, never as data.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline import experiments
from pipeline.folder import ResultsFolder
from pipeline.schema import (
    ATTRS_CHECKSUM,
    CHECKSUMMED_SCHEMA,
    METRICS,
    PHASE_GROUP,
    RESULTS,
    ROW_EPOCH,
    ROW_PHASE,
    SNAPSHOT_EPOCHS,
    SNAPSHOT_PHASE,
    STEP_DIST_E,
    STEP_EPOCH,
    STEPS,
    WEIGHTS,
    WHOLE_MODEL_SCHEMA,
)
from pipeline.trialfile.cost import snapshot_epochs


class SnapshotError(ValueError):
    """A weight snapshot that cannot be read or rebuilt into a model, said in one line."""


def open_h5(path: Path, mode: str = "r") -> h5py.File:
    return h5py.File(path, mode, locking=False)


def trial_paths(out_dir: Path | ResultsFolder, trial_id: str) -> tuple[Path, Path]:
    """The trial's HDF5 file and its rolling checkpoint."""
    folder = ResultsFolder.of(out_dir)
    return folder.trial_file(trial_id), folder.checkpoint(trial_id)


def plain(value: object) -> Any:
    """An HDF5 attribute as a plain Python value (numpy scalars and bytes come back as such)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _canonical(value: object) -> str:
    value = plain(value)
    if isinstance(value, np.ndarray):
        value = [plain(v) for v in value.tolist()]
    return repr(value)


def attrs_checksum(attrs: Mapping) -> int:
    """The CRC-32 of a file's root attributes (all but the checksum itself), as written and as read back."""
    text = "".join(f"{key}={_canonical(attrs[key])}\n" for key in sorted(attrs) if key != ATTRS_CHECKSUM)
    return zlib.crc32(text.encode())


def seal(f: h5py.File) -> None:
    """Renew the checksum of the root attributes: the last thing every write does."""
    f.attrs[ATTRS_CHECKSUM] = attrs_checksum(f.attrs)


# Where a trial file keeps, per curve sink, the epoch its curves end at when an attempt ran without it
# (JSON {"tensorboard": 84}); written by the store, read by status.
CURVE_GAPS_ATTR = "curve_gaps"


def read_curve_gaps(text: str | bytes | None) -> dict[str, int]:
    try:
        gaps = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in gaps.items()} if isinstance(gaps, dict) else {}


def read_status(path: Path) -> dict:
    """The attributes of a trial file, or {'status': 'damaged', 'error': ...} if it cannot be read or its
    attributes are not what was written."""
    try:
        with open_h5(path) as f:
            raw = dict(f.attrs.items())
    except Exception as error:  # h5py raises OSError, KeyError or RuntimeError on damaged files
        return {"status": "damaged", "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    checked = int(plain(raw.get("schema_version", 1))) >= CHECKSUMMED_SCHEMA
    if checked and int(raw.get(ATTRS_CHECKSUM, -1)) != attrs_checksum(raw):
        return {"status": "damaged", "error": "its attributes do not match their checksum"}
    attrs = {k: plain(v) for k, v in raw.items() if k != ATTRS_CHECKSUM}
    attrs.setdefault("status", "running")
    return attrs


def _verified(f: h5py.File, groups: tuple[str, ...]) -> str:
    """Read every dataset under ``groups`` whole, so that HDF5 checks each chunk against its checksum; the
    first that does not match (or cannot be read), in words, or ''."""
    failed: list[str] = []

    def visit(name: str, item: object) -> None:
        if failed or not isinstance(item, h5py.Dataset):
            return
        try:
            if not item.shape:
                item[()]
            else:
                row_bytes = max(1, item.dtype.itemsize * int(np.prod(item.shape[1:])))
                step = max(1, _BYTES_AT_ONCE // row_bytes)
                for start in range(0, item.shape[0], step):
                    item[start: start + step]
        except Exception as error:
            why = ("does not match its checksum" if "filter" in str(error).lower() else
                   f"cannot be read ({type(error).__name__}: {error})".splitlines()[0])
            failed.append(f"{item.name.lstrip('/')} {why}")

    for group in groups:
        if group in f:
            f[group].visititems(visit)
    return failed[0] if failed else ""


# Datasets are checked this much at a time: a file's weights can be gigabytes.
_BYTES_AT_ONCE = 64 * 1024 * 1024


def settings_of(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's settings as the file recorded them (files before schema 2 named them ``config``)."""
    return json.loads(attrs.get("settings", attrs.get("config", "{}")))


@dataclass
class FileState:
    """What a trial file says and whether its data backs it up."""

    status: str  # complete, running, failed, cancelled, damaged, inconsistent
    attrs: dict
    rows: int = 0  # epoch rows every series holds
    problem: str = ""  # why it is damaged or inconsistent


def inspect(path: Path, deep: bool = False) -> FileState:
    """Read a file's attributes and check them against its data: a file says ``complete`` only when it
    holds exactly the rows 0..total_epochs, epochs_done == total_epochs, every series has them all, the
    weight snapshots are those of its policy (the last row's included), the single steps cover the epochs
    of the phase that records them, and an experiment that measures after training has its results.

    Every series, step and result is read whole and checked against its checksums (a file whose data is
    not what was written is ``damaged``); ``deep`` reads the weight snapshots too, and checks that an
    unfinished file agrees with itself (what a run resuming from it needs)."""
    attrs = read_status(path)
    if attrs["status"] == "damaged":
        return FileState("damaged", attrs, problem=attrs["error"])
    try:
        with open_h5(path) as f:
            unreadable = _verified(f, (METRICS, STEPS, RESULTS, WEIGHTS) if deep else (METRICS, STEPS, RESULTS))
            if unreadable:
                return FileState("damaged", attrs, problem=unreadable)
            metrics = f[METRICS] if METRICS in f else {}
            lengths = {name: metrics[name].shape[0] for name in metrics}
            epochs = metrics[ROW_EPOCH][()] if ROW_EPOCH in metrics else np.zeros(0, dtype=np.int64)
            if attrs["status"] != "complete":
                rows = min(lengths.values()) if lengths else 0
                if deep:
                    disagreement = _unfinished_differences(f, attrs, lengths, epochs)
                    if disagreement:
                        return FileState("damaged", attrs, rows, "does not agree with itself: " + disagreement)
                return FileState(attrs["status"], attrs, rows)
            extra = _snapshot_and_step_differences(f, attrs)
    except Exception as error:
        return FileState("damaged", attrs, problem=f"{type(error).__name__}: {error}".splitlines()[0])
    rows = min(lengths.values()) if lengths else 0
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
    differences += extra
    if differences:
        return FileState("inconsistent", attrs, rows, "marked complete but holds " + "; ".join(differences))
    return FileState("complete", attrs, rows)


def _unfinished_differences(f: h5py.File, attrs: dict, lengths: dict, epochs: np.ndarray) -> str:
    """What in an unfinished file contradicts the rest: its series of different lengths, epochs_done not its
    last row, epoch numbers out of order, snapshots that weights/epochs does not account for."""
    rows = min(lengths.values()) if lengths else 0
    if len(set(lengths.values())) > 1:
        return "series of different lengths (" + ", ".join(f"{k} {v}" for k, v in lengths.items()) + ")"
    if int(attrs.get("epochs_done", -1)) != rows - 1:
        return f"epochs_done {attrs.get('epochs_done')} with {rows} epoch rows"
    if rows and not np.array_equal(epochs[:rows], np.arange(rows)):
        return "epoch numbers out of order"
    if WEIGHTS in f and SNAPSHOT_EPOCHS in f[WEIGHTS]:
        weights = f[WEIGHTS]
        snapshots = weights[SNAPSHOT_EPOCHS][()]
        if len(snapshots) and int(snapshots.max()) > rows - 1:
            return f"a snapshot of epoch {int(snapshots.max())} beyond its {rows} rows"
        held = weight_rows_through(weights, int(snapshots.max())) if len(snapshots) else {}
        for name, expected in held.items():
            if weights[name].shape[0] != expected:
                return f"weights/{name} holds {weights[name].shape[0]} snapshots where weights/epochs says {expected}"
    return ""


def read_results_attrs(path: Path) -> dict:
    """The attributes of a trial file's ``results/`` (what was measured after training); {} where there are none."""
    with open_h5(path) as f:
        return {k: plain(v) for k, v in f[RESULTS].attrs.items()} if RESULTS in f else {}


def weight_rows_through(weights: h5py.Group, epoch: int) -> dict[str, int]:
    """{dataset path under ``weights/``: rows that hold snapshots of epochs <= ``epoch``} (for truncation)."""
    epochs = weights[SNAPSHOT_EPOCHS][()]
    kept = epochs <= epoch
    phases = weights[SNAPSHOT_PHASE][()] if SNAPSHOT_PHASE in weights else np.ones_like(epochs)
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
        if WEIGHTS not in f or SNAPSHOT_EPOCHS not in f[WEIGHTS] or not len(f[WEIGHTS][SNAPSHOT_EPOCHS]):
            raise SnapshotError(f"{path}: no weight snapshot stored yet")
        weights = f[WEIGHTS]
        epochs = weights[SNAPSHOT_EPOCHS][()]
        phases = weights[SNAPSHOT_PHASE][()]
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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _expected_snapshots(attrs: dict, total: int) -> list[int] | None:
    """The epochs whose weights a complete file holds (its policy up to its last epoch, and that one), or
    None if its settings cannot be read (a file of another version)."""
    try:
        settings = experiments.get(attrs["experiment"]).make_settings(
            {k: v for k, v in settings_of(attrs).items() if k != "experiment"})
        policy = snapshot_epochs(settings)
    except Exception:
        return None
    return sorted({e for e in policy if e <= total} | {total})


def _snapshot_and_step_differences(f: h5py.File, attrs: dict) -> list[str]:
    differences = []
    total = int(attrs.get("total_epochs", -1))
    if WEIGHTS in f:
        weights = f[WEIGHTS]
        snapshots = weights[SNAPSHOT_EPOCHS][()] if SNAPSHOT_EPOCHS in weights else np.zeros(0, dtype=np.int64)
        held = weight_rows_through(weights, int(snapshots.max())) if len(snapshots) else {}
        short = [(name, rows) for name, rows in held.items() if weights[name].shape[0] != rows]
        if short:
            name, rows = short[0]
            differences.append(f"weights/{name} holds {weights[name].shape[0]} snapshots where weights/epochs "
                               f"and weights/phase say {rows}")
        expected = _expected_snapshots(attrs, total)
        if expected is not None and list(snapshots) != expected:
            missing = sorted(set(expected) - set(snapshots.tolist()))
            differences.append(f"weight snapshots of epochs {_listed(snapshots.tolist())} where the policy keeps "
                               f"{_listed(expected)}" + (f" (missing {_listed(missing)})" if missing else ""))
    elif total >= 0:
        differences.append("no weight snapshots (the last row always keeps its weights)")
    if STEPS in f:
        step_epochs = f[STEPS][STEP_EPOCH][()]
        if f[STEPS][STEP_DIST_E].shape[0] != len(step_epochs):
            differences.append(f"{f[STEPS][STEP_DIST_E].shape[0]} steps of dist_E for {len(step_epochs)} step epochs")
        elif len(step_epochs):
            # The steps cover every epoch of the phase that records them, the same number in each.
            phases = f[METRICS][ROW_PHASE][()] if ROW_PHASE in f[METRICS] else None
            first = int(step_epochs[0])
            if phases is not None and first < len(phases):
                wanted = [e for e in range(1, total + 1) if e < len(phases) and phases[e] == phases[first]]
            else:
                wanted = list(range(first, total + 1))
            counts = np.bincount(step_epochs.astype(np.int64), minlength=total + 2)
            recorded = [e for e in range(len(counts)) if counts[e]]
            if recorded != wanted or len({int(counts[e]) for e in wanted}) > 1:
                differences.append(f"single steps recorded in epochs {_listed(recorded)} (counts "
                                   f"{_listed(sorted({int(counts[e]) for e in recorded}))}) where the phase runs "
                                   f"epochs {_listed(wanted)}")
    experiment = experiments.REGISTRY.get(attrs.get("experiment", ""))
    if experiment is not None and experiment.has_final_stage and RESULTS not in f:
        differences.append("no results/ (measured after training)")
    return differences


def _listed(values: list[int]) -> str:
    values = [int(v) for v in values]
    if len(values) > 6:
        return f"{values[0]}, {values[1]}, ..., {values[-1]} ({len(values)})"
    return ", ".join(map(str, values)) or "none"
