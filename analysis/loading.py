"""Read a results folder (``manifest.json`` + ``trials/*.h5``) into tidy pandas tables, read-only.

Tables (every column is documented in ``analysis/README.md``):

- *trials*: one row per trial of the manifest, whatever became of it. ``status`` is the file's status as
  :func:`pipeline.trialfile.files.inspect` judges it (complete, running, failed, cancelled, damaged, inconsistent),
  or ``missing`` (no file).
- *epochs*: one row per trial x epoch x layer, plus a row with ``layer == "total"`` per trial x epoch whose
  dist_E, dist_init and norm are the Euclidean norms over the layers (the Frobenius norms of the whole
  measured weight set).
- *steps*: dist_E after single optimizer steps, for experiments that record them, with the same layers.

A trial's labels (cell, mode) come from the manifest (``pipeline.trialfile.manifest.labels_of``, which also reads
manifests written before labels were stored); its *swept* settings are the manifest's, or, for
manifests that did not record them, the settings in which trials of one cell and mode differ. The
``series`` column names, in words, the line a trial belongs to in a figure.

Every readable trial is in *epochs* and *steps*, complete or not; statistics pick complete ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import result_tables
from pipeline import experiments, schema
from pipeline.experiments import Experiment
from pipeline.folder import CHECKPOINT_SUFFIX, TRIAL_SUFFIX, ResultsFolder, is_set_aside_damaged
from pipeline.progress import iterate
from pipeline.settings import ConfigError
from pipeline.trialfile.files import FileState, inspect, open_h5, plain
from pipeline.trialfile.manifest import entries, labels_of, read_manifest, trial_of

TOTAL = schema.TOTAL  # the row of a per-layer series' total over the layers
# One column per cell key of the registered experiments ("group", "variant"), filled for the trials of
# the experiment that uses it and empty ("") for the others.
CELL_KEYS = list(dict.fromkeys(e.cell_key for e in experiments.REGISTRY.values()))
LABELS = ["trial_id", "experiment", "cell", *CELL_KEYS, "mode"]
# Swept settings go between LABELS and AFTER_SWEPT; the rest of each table follows.
AFTER_SWEPT = ["seed", "series"]
# What a trial ran with (pipeline.trialfile.provenance); the package list and the diff's text are kept aside
# (Results.texts): they are long and the same for most trials.
PROVENANCE = ["python_version", "torch_version", "cuda_version", "cudnn_version", "gpu_driver_version", "device_model",
              "data_files", "git_diff_sha256"]
PROVENANCE_TEXTS = ("packages", "git_diff")
TRIAL_REST = ["swept", "dtype", "total_epochs", "status", "epochs_done", "error", "data_source", "device", "hostname",
              "git_commit", *PROVENANCE, "wall_seconds", "pack_size", "started_at", "finished_at", "attempts", "file",
              "index", "settings"]
# The epochs table: a row per trial x epoch x layer, every series of the trial-file schema that it shows (per-layer
# series layer by layer, scalars repeated over the layers).
EPOCH_LAYER_SERIES = [s.name for s in schema.EPOCH_SERIES if s.in_epochs_table and s.per_layer]
EPOCH_SCALAR_SERIES = [s.name for s in schema.EPOCH_SERIES if s.in_epochs_table and not s.per_layer]
EPOCH_REST = ["status", schema.ROW_EPOCH, schema.ROW_PHASE, "layer", *EPOCH_LAYER_SERIES, *EPOCH_SCALAR_SERIES]
STEP_REST = ["status", "step", schema.ROW_EPOCH, schema.ROW_PHASE, "step_in_epoch", "layer", schema.STEP_DIST_E]
FIXED_COLUMNS = set(LABELS + AFTER_SWEPT + TRIAL_REST + EPOCH_REST + STEP_REST)

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
    swept_columns: list[str] = field(default_factory=list)  # in table order
    # What trials measured once after training (``results/`` of their files; ``analysis.result_tables``): one row
    # per trial with its scalar measurements, and the tables its experiment's analysis reads from the arrays
    # (by name, e.g. Experiment S's spectra and perturbation runs).
    measurements: pd.DataFrame = field(default_factory=pd.DataFrame)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    unexpected_files: list[str] = field(default_factory=list)  # trials/*.h5 not named in the manifest
    set_aside_files: list[str] = field(default_factory=list)  # *.h5.damaged-*: the pipeline restarted those
    checkpoint_files: list[str] = field(default_factory=list)  # *.state.pt: trials interrupted or running
    # Long provenance texts (the package list, the diff of a dirty tree) -> the trials that recorded each.
    texts: dict[str, dict[str, list[str]]] = field(default_factory=dict)


class UnknownExperiment(Experiment):
    """Stands in for an experiment this code does not know (a folder written by a newer pipeline), so
    that its trials are still tabulated, drawn with default styles, and reported as having no claim. A
    subclass per name (``experiment_of``): an experiment's name is a property of its class."""

    cell_key = "cell"


def experiment_of(name: str) -> Experiment:
    known = experiments.REGISTRY.get(name)
    return known if known is not None else type(f"Unknown({name})", (UnknownExperiment,), {"name": name})()


def swept_column(setting: str) -> str:
    """A swept setting's column: its name, unless a table already has a column of that name (``loss``)."""
    return f"setting_{setting}" if setting in FIXED_COLUMNS else setting


def _settings_of(entry: dict, experiment: Experiment) -> tuple[dict, set, float]:
    """(settings, names that do not affect the trial, total epochs) of a manifest entry."""
    raw = {k: v for k, v in entry.get("settings", entry.get("config", {})).items() if k != "experiment"}
    if isinstance(experiment, UnknownExperiment):
        return raw, set(), math.nan
    try:
        settings = trial_of(entry).settings
    except ConfigError:
        # An old manifest may hold a setting this pipeline no longer has; the rest still describes it.
        names = {f.name for f in dataclasses.fields(experiment.settings_type)} | set(experiment.aliases)
        settings = experiment.make_settings({k: v for k, v in raw.items() if k in names})
    return dataclasses.asdict(settings), experiment.irrelevant(settings), experiment.total_epochs(settings)


def _labels(entry: dict, settings: dict, experiment: Experiment) -> dict:
    if "labels" in entry or isinstance(experiment, UnknownExperiment):
        return entry.get("labels", {"cell_key": "cell", "cell": "?", "mode": "?"})
    try:
        return labels_of(entry)
    except ConfigError:
        return {"cell_key": experiment.cell_key, "cell": str(settings.get(experiment.cell_key, "?")),
                "mode": str(settings.get(experiment.mode_key, "?"))}


def _reconstructed_swept(rows: list[dict]) -> None:
    """Fill ``swept`` of entries whose manifest did not record it: the settings (not labels, not the seed)
    in which trials of one experiment, cell and mode differ, where they affect the trial."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["_swept"] is None:
            groups.setdefault((row["experiment"], row["cell"], row["mode"]), []).append(row)
    for members in groups.values():
        experiment = members[0]["_experiment"]
        fixed = {"seed", experiment.cell_key, experiment.mode_key}
        names = [k for k in members[0]["_settings"] if k not in fixed]
        varying = [k for k in names
                   if len({json.dumps(m["_settings"].get(k)) for m in members if k not in m["_irrelevant"]}) > 1]
        for m in members:
            m["_swept"] = {k: m["_settings"][k] for k in varying if k not in m["_irrelevant"]}


def _manifest_rows(manifest: dict) -> tuple[list[dict], list[str]]:
    """One row per manifest entry with labels, swept settings and series; and the swept settings' names."""
    rows = []
    for entry in entries(manifest):
        experiment = experiment_of(entry["experiment"])
        settings, irrelevant, total = _settings_of(entry, experiment)
        labels = _labels(entry, settings, experiment)
        rows.append({"index": int(entry["index"]), "trial_id": entry["trial_id"], "experiment": entry["experiment"],
                     "cell": str(labels["cell"]), "mode": str(labels["mode"]), "_cell_key": labels["cell_key"],
                     "seed": int(settings.get("seed", 0)), "dtype": str(settings.get("dtype", "")),
                     "total_epochs": total, "settings": json.dumps(settings, sort_keys=True),
                     "_settings": settings, "_irrelevant": irrelevant, "_experiment": experiment,
                     "_swept": dict(entry["swept"]) if "swept" in entry else None})
    _reconstructed_swept(rows)
    # Every trial of an experiment gets a value for each of its experiment's swept settings that affects
    # it, so that a folder grown by a second grid (which swept what the first held fixed) reads as one.
    keys_by_experiment: dict[str, list[str]] = {}
    for row in rows:
        keys = keys_by_experiment.setdefault(row["experiment"], [])
        keys += [k for k in row["_swept"] if k not in keys]
    swept_names = list(dict.fromkeys(k for keys in keys_by_experiment.values() for k in keys))
    for row in rows:
        experiment, settings = row["_experiment"], row["_settings"]
        swept = {k: settings.get(k, row["_swept"].get(k)) for k in keys_by_experiment[row["experiment"]]
                 if k not in row["_irrelevant"] and (k in settings or k in row["_swept"])}
        named = {k: settings[k] for k in experiment.series_settings if k in settings and k not in row["_irrelevant"]}
        named.update({k: v for k, v in swept.items() if k not in named})
        row.update({key: "" for key in CELL_KEYS})
        if row["_cell_key"] in CELL_KEYS:
            row[row["_cell_key"]] = row["cell"]
        row.update({swept_column(k): swept.get(k, "") for k in swept_names})
        row["swept"] = json.dumps(swept, sort_keys=True)
        row["series"] = experiment.series_words(row["mode"], named)
    return rows, swept_names


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_series(path: Path, rows: int) -> dict:
    """Metrics and steps of one trial file, cut to the epochs whose every series was written."""
    with open_h5(path) as f:
        metrics = f[schema.METRICS]
        layered = next(name for name in schema.LAYER_SERIES if name in metrics)
        layers = [_text(name) for name in metrics[layered].attrs[schema.LAYER_NAMES_ATTR]]
        series = {name: metrics[name][:rows] for name in metrics}
        # A series a file's schema did not have yet (step_perp before version 4) reads as unknown.
        for missing in schema.EPOCH_SERIES:
            if missing.name not in series:
                width = (len(layers),) if missing.per_layer else ()
                series[missing.name] = (np.ones(rows, dtype=np.int64) if missing.name == schema.ROW_PHASE
                                        else np.full((rows, *width), np.nan))
        if schema.STEPS in f:
            steps = f[schema.STEPS]
            count = min(steps[schema.STEP_DIST_E].shape[0], steps[schema.STEP_EPOCH].shape[0])
            step_epochs = steps[schema.STEP_EPOCH][:count]
            kept = step_epochs <= (series[schema.ROW_EPOCH][-1] if rows else -1)
            series["step_epoch"] = step_epochs[kept]
            series["step_dist_E"] = steps[schema.STEP_DIST_E][:count][kept]
        if schema.RESULTS in f:
            arrays: dict[str, np.ndarray] = {}
            f[schema.RESULTS].visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                                         if hasattr(obj, "shape") else None)
            series[schema.RESULTS] = {"attrs": {k: plain(v) for k, v in f[schema.RESULTS].attrs.items()},
                                      "arrays": arrays}
    series["layers"] = layers
    return series


def _read_trial(path: Path) -> tuple[FileState, dict | None]:
    """The file's state and its series (None when it cannot be read)."""
    for attempt in range(2):
        state = inspect(path)
        if state.status != "damaged":
            try:
                return state, _read_series(path, state.rows)
            except Exception as error:  # h5py raises several types for truncated or half-written files
                state = FileState("damaged", state.attrs, problem=f"{type(error).__name__}: {error}".splitlines()[0])
        if attempt == 0:
            time.sleep(RETRY_DELAY_S)
    return state, None


def _with_totals(layer_values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Append a 'total' column to each (rows, L) array: its rows' totals over layers, as the schema sums them."""
    return {name: np.concatenate([values, np.array([[schema.total_over_layers(row)] for row in values],
                                                   dtype=float).reshape(len(values), 1)], axis=1)
            for name, values in layer_values.items()}


def _epoch_table(labels: dict, series: dict) -> pd.DataFrame:
    layers = series["layers"] + [TOTAL]
    values = _with_totals({name: series[name] for name in EPOCH_LAYER_SERIES})
    width = len(layers)
    epochs = series[schema.ROW_EPOCH]
    table = {
        **labels, schema.ROW_EPOCH: np.repeat(epochs, width),
        schema.ROW_PHASE: np.repeat(series[schema.ROW_PHASE], width), "layer": np.tile(layers, len(epochs)),
        **{name: values[name].reshape(-1) for name in EPOCH_LAYER_SERIES},
        **{name: np.repeat(series[name], width) for name in EPOCH_SCALAR_SERIES},
    }
    return pd.DataFrame(table)


def _step_table(labels: dict, series: dict) -> pd.DataFrame | None:
    if "step_epoch" not in series or len(series["step_epoch"]) == 0:
        return None
    layers = series["layers"] + [TOTAL]
    dist_E = _with_totals({schema.STEP_DIST_E: series["step_dist_E"]})[schema.STEP_DIST_E]
    epoch = series["step_epoch"]
    steps, width = len(epoch), len(layers)
    # Steps of one epoch are contiguous in the file (appended in order, truncated whole on resume).
    ordered = np.all(np.diff(epoch) >= 0)
    step_in_epoch = np.arange(steps) - np.searchsorted(epoch, epoch, side="left") if ordered else np.zeros(steps, int)
    # Epoch rows are 0, 1, ..., so an epoch's phase is found by its position (0 where none was written).
    known = (epoch >= 0) & (epoch < len(series["phase"]))
    phase = np.where(known, series["phase"][np.clip(epoch, 0, max(len(series["phase"]) - 1, 0))], 0)
    table = {
        **labels, "step": np.repeat(np.arange(steps), width), schema.ROW_EPOCH: np.repeat(epoch, width),
        schema.ROW_PHASE: np.repeat(phase, width), "step_in_epoch": np.repeat(step_in_epoch, width),
        "layer": np.tile(layers, steps), schema.STEP_DIST_E: dist_E.reshape(-1),
    }
    return pd.DataFrame(table)


def _file_fields(state: FileState) -> dict:
    attrs = {k: plain(v) for k, v in state.attrs.items()}
    fields = {"status": state.status,
              "error": state.problem or str(attrs.get("last_error", attrs.get("error", ""))),
              "epochs_done": int(attrs.get("epochs_done", -1)),
              "wall_seconds": float(attrs.get("wall_seconds", 0.0)), "pack_size": int(attrs.get("pack_size", 1)),
              "attempts": int(attrs.get("attempts", 0))}
    for key in ("data_source", "device", "hostname", "git_commit", "started_at", "finished_at", *PROVENANCE):
        fields[key] = _text(attrs.get(key, ""))
    return fields


def read_results(out_dir: Path | str) -> Results:
    """Read the manifest and every trial file of ``out_dir``; never writes anything."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    where = ResultsFolder(out_dir)
    folder = where.trials
    rows, swept_names = _manifest_rows(manifest)
    swept_columns = [swept_column(k) for k in swept_names]
    label_columns = LABELS + swept_columns + AFTER_SWEPT
    epoch_tables, step_tables = [], []
    measured: list[dict] = []
    table_rows: dict[str, list[dict]] = {}
    texts: dict[str, dict[str, list[str]]] = {}
    for row in iterate(rows, "reading trial files"):
        path = where.trial_file(row["trial_id"])
        row["file"] = where.relative(path)
        if not path.exists():
            row.update(status="missing", epochs_done=-1)
            continue
        state, series = _read_trial(path)
        row.update(_file_fields(state))
        for name in PROVENANCE_TEXTS:
            text = _text(state.attrs.get(name, ""))
            if text:
                texts.setdefault(name, {}).setdefault(text, []).append(row["trial_id"])
        if math.isnan(row["total_epochs"]) and "total_epochs" in state.attrs:
            row["total_epochs"] = int(state.attrs["total_epochs"])
        if series is not None:
            labels = {column: row[column] for column in label_columns} | {"status": row["status"]}
            epoch_tables.append(_epoch_table(labels, series))
            step_table = _step_table(labels, series)
            if step_table is not None:
                step_tables.append(step_table)
            if schema.RESULTS in series:
                scalars, rows_by_table = result_tables.read(row["_experiment"].results_analysis, labels,
                                                            series[schema.RESULTS])
                measured.append(scalars)
                for name, table in rows_by_table.items():
                    table_rows.setdefault(name, []).extend(table)

    trials = pd.DataFrame([{k: v for k, v in row.items() if not k.startswith("_")} for row in rows])
    trials = trials.reindex(columns=label_columns + TRIAL_REST)
    for column in ("error", "data_source", "device", "hostname", "git_commit", "started_at", "finished_at", "file",
                   *PROVENANCE):
        trials[column] = trials[column].fillna("")
    trials["wall_seconds"] = trials["wall_seconds"].fillna(0.0)
    trials["pack_size"] = trials["pack_size"].fillna(1).astype(int)
    trials["attempts"] = trials["attempts"].fillna(0).astype(int)
    for column in ("total_epochs", "epochs_done"):
        trials[column] = pd.to_numeric(trials[column]).astype("Int64")
    epoch_columns = label_columns + EPOCH_REST
    step_columns = label_columns + STEP_REST
    epochs = (pd.concat(epoch_tables, ignore_index=True)[epoch_columns] if epoch_tables
              else pd.DataFrame(columns=epoch_columns))
    steps = (pd.concat(step_tables, ignore_index=True)[step_columns] if step_tables
             else pd.DataFrame(columns=step_columns))

    known = {where.trial_file(trial_id).name for trial_id in trials["trial_id"]}
    listing = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return Results(
        out_dir=out_dir, manifest=manifest, trials=trials, epochs=epochs, steps=steps, swept_columns=swept_columns,
        measurements=pd.DataFrame(measured), tables={name: pd.DataFrame(rows) for name, rows in table_rows.items()},
        unexpected_files=[n for n in listing if n.endswith(TRIAL_SUFFIX) and n not in known],
        set_aside_files=[n for n in listing if is_set_aside_damaged(n)],
        checkpoint_files=[n for n in listing if n.endswith(CHECKPOINT_SUFFIX)], texts=texts,
    )


def load(out_dir: Path | str) -> pd.DataFrame:
    """The tidy epochs table of a results folder (see the module docstring)."""
    return read_results(out_dir).epochs


def load_trials(out_dir: Path | str) -> pd.DataFrame:
    """One row per trial of the manifest, with its status."""
    return read_results(out_dir).trials


def load_steps(out_dir: Path | str) -> pd.DataFrame:
    """dist_E after single optimizer steps, one row per trial x step x layer (plus 'total')."""
    return read_results(out_dir).steps
