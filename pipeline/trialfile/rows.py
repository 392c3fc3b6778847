"""How rows, single steps and weight snapshots go into a trial file's datasets, and how a resume cuts them back
to its checkpoint's epoch: the appends of ``pipeline.trialfile.store.TrialFile``, which owns the file and when
it is written.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from pipeline import schema
from pipeline.trialfile.files import open_h5, seal, weight_rows_through
from pipeline.trialfile.sink import EpochRecord

# HDF5 chunks: rows of a per-row series, and single steps (many more of them), per chunk.
ROWS_PER_CHUNK = 256
STEPS_PER_CHUNK = 1024


def truncate_after(path: Path, epoch: int) -> None:
    """Drop rows written after the checkpoint's epoch: they are recomputed, identically. Only ever on
    this writer's private copy."""
    with open_h5(path, "a") as f:
        keep = epoch + 1
        for name in f[schema.METRICS]:
            f[schema.METRICS][name].resize(keep, axis=0)
        if schema.WEIGHTS in f:
            kept_rows = weight_rows_through(f[schema.WEIGHTS], epoch)
            for name, rows in kept_rows.items():
                f[schema.WEIGHTS][name].resize(rows, axis=0)
        if schema.STEPS in f:
            steps = f[schema.STEPS]
            kept = int(np.sum(steps[schema.STEP_EPOCH][:] <= epoch))
            for name in steps:
                steps[name].resize(kept, axis=0)
        if schema.RESULTS in f:
            del f[schema.RESULTS]  # measured after the last epoch: measured again
        f.attrs["epochs_done"] = epoch
        seal(f)


def write_snapshot(f: h5py.File, record: EpochRecord, snapshot: dict, layers: list[str]) -> None:
    """Append one snapshot: its measured layers to ``weights/<layer>``, its other parameters to
    ``weights/phase<p>/<name>`` (a phase's model may be parametrised differently from another's: the CNN's
    coefficients have other shapes in phase 2), its epoch and phase to ``weights/epochs`` and ``phase``."""
    weights = f.require_group(schema.WEIGHTS)
    if schema.SNAPSHOT_EPOCHS not in weights:
        weights.attrs[schema.LAYER_NAMES_ATTR] = np.array(layers, dtype=h5py.string_dtype())
        for name in (schema.SNAPSHOT_EPOCHS, schema.SNAPSHOT_PHASE):
            weights.create_dataset(name, shape=(0,), maxshape=(None,), dtype="i8", fletcher32=True)
    parameters = weights.require_group(f"{schema.PHASE_GROUP}{record.phase}")
    for name, tensor in snapshot.items():
        array = tensor.cpu().numpy()
        group = weights if name in layers else parameters
        if name not in group:
            group.create_dataset(name, shape=(0, *array.shape), maxshape=(None, *array.shape),
                                 dtype=array.dtype, chunks=(1, *array.shape), fletcher32=True)
        append(group[name], array)
    append(weights[schema.SNAPSHOT_EPOCHS], record.epoch)
    append(weights[schema.SNAPSHOT_PHASE], record.phase)


def append(dataset: h5py.Dataset, value: object) -> None:
    dataset.resize(dataset.shape[0] + 1, axis=0)
    dataset[-1] = value


def row_value(record: EpochRecord, name: str) -> object:
    """A row's value of one series, as the file stores it (per-layer series in float64)."""
    if name == schema.ROW_EPOCH:
        return record.epoch
    if name == schema.ROW_PHASE:
        return record.phase
    value = record.values[name]
    return value.double().numpy() if isinstance(value, torch.Tensor) else value
