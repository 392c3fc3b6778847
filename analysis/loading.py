"""Read a results folder (``manifest.json`` + ``trials/*.h5``) into tidy pandas tables, read-only.

Tables (all columns documented in ``analysis/README.md``):

- *trials*: one row per trial of the manifest, whatever became of it. ``status`` is the file's status
  (``complete``, ``running``, ``failed``), or ``missing`` (no file) or ``damaged`` (unreadable file).
- *epochs*: one row per trial x epoch x layer, plus a row with ``layer == "total"`` per trial x epoch whose
  dist_E, dist_init and norm are the Euclidean norms over the layers (the Frobenius norms of the whole
  measured weight set). Groups trials fill ``group`` and leave ``config`` empty; CNN trials the reverse.
- *steps*: the CNN's phase-2 per-step dist_E, the same layer scheme with a ``total`` row per step.

Every readable trial is in *epochs* and *steps*, complete or not; statistics pick complete ones.
Trial files are only ever opened read-only (``pipeline.store.open_h5``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import experiments
from pipeline.files import open_h5, read_status
from pipeline.manifest import read_manifest, trial_of

TOTAL = "total"

TRIAL_COLUMNS = ["index", "trial_id", "experiment", "group", "config", "mode", "seed", "dtype", "augment",
                 "phase1_epochs", "phase2_optimizer", "total_epochs", "status", "epochs_done", "error", "device",
                 "hostname", "git_commit", "wall_seconds", "pack_size", "started_at", "finished_at", "attempts", "file"]
EPOCH_COLUMNS = ["trial_id", "experiment", "group", "config", "mode", "seed", "status", "epoch", "phase", "layer",
                 "dist_E", "dist_init", "norm", "loss", "accuracy", "grad_norm"]
STEP_COLUMNS = ["trial_id", "experiment", "config", "mode", "seed", "status", "step", "epoch", "step_in_epoch",
                "layer", "dist_E"]

# A reader can catch a trial between the resizes of its once-per-epoch append; a second look after the
# writer has closed the file tells that apart from real damage.
RETRY_DELAY_S = 0.3


@dataclass
class Results:
    """Everything read from one results folder."""

    out_dir: Path
    manifest: dict
    trials: pd.DataFrame
    epochs: pd.DataFrame
    steps: pd.DataFrame
    unexpected_files: list[str] = field(default_factory=list)  # trials/*.h5 not named in the manifest
    set_aside_files: list[str] = field(default_factory=list)  # *.h5.damaged-*: the pipeline restarted those
    checkpoint_files: list[str] = field(default_factory=list)  # *.state.pt: trials interrupted or running


def _manifest_row(entry: dict) -> dict:
    trial = trial_of(entry)
    settings = trial.settings
    experiment = experiments.of(trial)
    is_cnn = entry["experiment"] == "cnn"
    labels = experiment.labels(settings)
    return {
        "index": int(entry["index"]), "trial_id": entry["trial_id"], "experiment": entry["experiment"],
        "group": "" if is_cnn else labels.cell, "config": labels.cell if is_cnn else "",
        "mode": labels.mode, "seed": int(settings.seed),
        "dtype": settings.dtype, "augment": "" if is_cnn else settings.augment,
        "phase1_epochs": settings.phase1_epochs if is_cnn else 0,
        "phase2_optimizer": settings.phase2_optimizer if is_cnn else "",
        "total_epochs": experiment.total_epochs(settings),
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_series(path: Path) -> dict:
    """Metrics and steps of one trial file, cut to the epochs whose every series was written."""
    with open_h5(path) as f:
        metrics = f["metrics"]
        layers = [_text(name) for name in metrics["dist_E"].attrs["layer_names"]]
        rows = min(metrics[name].shape[0] for name in metrics)
        series = {name: metrics[name][:rows] for name in metrics}
        if "phase" not in series:
            series["phase"] = np.ones(rows, dtype=np.int64)
        if "steps" in f:
            count = min(f["steps/dist_E"].shape[0], f["steps/epoch"].shape[0])
            step_epochs = f["steps/epoch"][:count]
            kept = step_epochs <= (series["epoch"][-1] if rows else -1)
            series["step_epoch"] = step_epochs[kept]
            series["step_dist_E"] = f["steps/dist_E"][:count][kept]
    series["layers"] = layers
    return series


def _read_trial(path: Path) -> tuple[dict, dict | None]:
    """(attributes, series) of a trial file; series is None when the file cannot be read."""
    for attempt in range(2):
        attrs = read_status(path)
        if attrs["status"] != "damaged":
            try:
                return attrs, _read_series(path)
            except Exception as error:  # h5py raises several types for truncated or half-written files
                attrs = {"status": "damaged", "error": f"{type(error).__name__}: {error}".splitlines()[0]}
        if attempt == 0:
            time.sleep(RETRY_DELAY_S)
    return attrs, None


def _with_totals(layer_values: dict[str, np.ndarray], layers: list[str]) -> dict[str, np.ndarray]:
    """Append a 'total' column to each (rows, L) array: the norm over layers."""
    return {name: np.concatenate([values, np.sqrt(np.sum(values**2, axis=1, keepdims=True))], axis=1)
            for name, values in layer_values.items()}


def _epoch_table(row: dict, series: dict) -> pd.DataFrame:
    layers = series["layers"] + [TOTAL]
    values = _with_totals({name: series[name] for name in ("dist_E", "dist_init", "norm")}, series["layers"])
    epochs = len(series["epoch"])
    width = len(layers)

    def per_epoch(name):
        return np.repeat(series[name], width)

    table = {
        "trial_id": row["trial_id"], "experiment": row["experiment"], "group": row["group"],
        "config": row["config"], "mode": row["mode"], "seed": row["seed"], "status": row["status"],
        "epoch": per_epoch("epoch"), "phase": per_epoch("phase"), "layer": np.tile(layers, epochs),
        **{name: values[name].reshape(-1) for name in ("dist_E", "dist_init", "norm")},
        "loss": per_epoch("loss"), "accuracy": per_epoch("accuracy"), "grad_norm": per_epoch("grad_norm"),
    }
    return pd.DataFrame(table, columns=EPOCH_COLUMNS)


def _step_table(row: dict, series: dict) -> pd.DataFrame | None:
    if "step_epoch" not in series or len(series["step_epoch"]) == 0:
        return None
    layers = series["layers"] + [TOTAL]
    dist_E = _with_totals({"dist_E": series["step_dist_E"]}, series["layers"])["dist_E"]
    epoch = series["step_epoch"]
    steps = len(epoch)
    # Steps of one epoch are contiguous in the file (appended in order, truncated whole on resume).
    first_of_epoch = np.searchsorted(epoch, epoch, side="left") if np.all(np.diff(epoch) >= 0) else None
    step_in_epoch = (np.arange(steps) - first_of_epoch) if first_of_epoch is not None else np.zeros(steps, int)
    width = len(layers)
    table = {
        "trial_id": row["trial_id"], "experiment": row["experiment"], "config": row["config"], "mode": row["mode"],
        "seed": row["seed"], "status": row["status"], "step": np.repeat(np.arange(steps), width),
        "epoch": np.repeat(epoch, width), "step_in_epoch": np.repeat(step_in_epoch, width),
        "layer": np.tile(layers, steps), "dist_E": dist_E.reshape(-1),
    }
    return pd.DataFrame(table, columns=STEP_COLUMNS)


def read_results(out_dir: Path | str) -> Results:
    """Read the manifest and every trial file of ``out_dir``; never writes anything."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    folder = out_dir / "trials"
    trial_rows, epoch_tables, step_tables = [], [], []
    for entry in manifest["trials"]:
        row = _manifest_row(entry)
        path = folder / f"{row['trial_id']}.h5"
        row["file"] = str(path.relative_to(out_dir))
        if not path.exists():
            row.update(status="missing", epochs_done=-1)
            trial_rows.append(row)
            continue
        attrs, series = _read_trial(path)
        row.update(status=attrs["status"], error=attrs.get("error", attrs.get("last_error", "")))
        for key in ("device", "hostname", "git_commit", "started_at", "finished_at"):
            row[key] = _text(attrs.get(key, ""))
        row["wall_seconds"] = float(attrs.get("wall_seconds", 0.0))
        row["pack_size"] = int(attrs.get("pack_size", 1))
        row["attempts"] = int(attrs.get("attempts", 0))
        row["epochs_done"] = int(attrs.get("epochs_done", -1))
        if series is not None and row["status"] == "complete" and len(series["epoch"]) != row["total_epochs"] + 1:
            row["status"] = "inconsistent"
            row["error"] = (f"marked complete but holds {len(series['epoch'])} epoch rows, "
                            f"expected {row['total_epochs'] + 1}")
        trial_rows.append(row)
        if series is not None:
            epoch_tables.append(_epoch_table(row, series))
            step_table = _step_table(row, series)
            if step_table is not None:
                step_tables.append(step_table)

    trials = pd.DataFrame(trial_rows).reindex(columns=TRIAL_COLUMNS)
    for column in ("error", "device", "hostname", "git_commit", "started_at", "finished_at", "file"):
        trials[column] = trials[column].fillna("")
    trials["wall_seconds"] = trials["wall_seconds"].fillna(0.0)
    trials["pack_size"] = trials["pack_size"].fillna(1).astype(int)
    trials["attempts"] = trials["attempts"].fillna(0).astype(int)
    epochs = pd.concat(epoch_tables, ignore_index=True) if epoch_tables else pd.DataFrame(columns=EPOCH_COLUMNS)
    steps = pd.concat(step_tables, ignore_index=True) if step_tables else pd.DataFrame(columns=STEP_COLUMNS)

    known = {f"{trial_id}.h5" for trial_id in trials["trial_id"]}
    listing = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return Results(
        out_dir=out_dir, manifest=manifest, trials=trials, epochs=epochs, steps=steps,
        unexpected_files=[n for n in listing if n.endswith(".h5") and n not in known],
        set_aside_files=[n for n in listing if ".h5.damaged-" in n],
        checkpoint_files=[n for n in listing if n.endswith(".state.pt")],
    )


def load(out_dir: Path | str) -> pd.DataFrame:
    """The tidy epochs table of a results folder (see the module docstring)."""
    return read_results(out_dir).epochs


def load_trials(out_dir: Path | str) -> pd.DataFrame:
    """One row per trial of the manifest, with its status (complete, running, failed, missing, damaged)."""
    return read_results(out_dir).trials


def load_steps(out_dir: Path | str) -> pd.DataFrame:
    """The CNN's per-step phase-2 dist_E, one row per trial x step x layer (plus 'total')."""
    return read_results(out_dir).steps
