"""The trial file's schema: every per-row series, the single steps, the snapshots, in one place.

The writer (``pipeline.trialfile.store``), the readers (``pipeline.trialfile.files``, ``analysis.loading``), the row a trial
hands its sinks (``pipeline.trialfile.sink.EpochRecord``), the console line, the TensorBoard curves and the
README's table of the file are all made from the declarations below; ``tests/trialfile/test_schema.py`` checks the
README against them. A new per-row measurement is one :class:`Series` here and the code that measures it
(a per-layer one: ``MeasuredModel.layer_measurements``); ``python -m pipeline.schema`` then rewrites the
README's table.

What an experiment measures once, after training (``results/``), it declares itself (the tables its
analysis reads from there); this module only names the group.

Torch-free: ``status`` and the analysis read files through it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# The first version whose snapshots hold the whole model (weights/phase<p>/), so that a model can be rebuilt;
# an unfinished file of an older one restarts (its snapshots would mix two layouts).
WHOLE_MODEL_SCHEMA = 3
# 4: metrics/step_perp. A file of version 3 resumes without it: a writer appends the series its file has.
# 5: checksums (CHECKSUMMED_SCHEMA). A file of version 4 resumes without them being checked.
SCHEMA_VERSION = 5

# A root attribute: the CRC-32 of every other root attribute (pipeline.trialfile.files.attrs_checksum), renewed by every
# write, so that attributes read back other than written (a flipped bit, a torn metadata block) are seen.
# Every dataset carries HDF5's Fletcher-32 checksum per chunk for the same reason: a read that does not match
# fails. The attributes of files of an earlier version are not checked (they have no checksum).
ATTRS_CHECKSUM = "attrs_crc32"
CHECKSUMMED_SCHEMA = 5

METRICS = "metrics"
STEPS = "steps"
WEIGHTS = "weights"
RESULTS = "results"  # what an experiment measures once after training; it declares its own tables
# weights/phase<p>/: the parameters of phase p's model that no measured layer holds (schema 3).
PHASE_GROUP = "phase"
LAYER_NAMES_ATTR = "layer_names"

ROW_EPOCH, ROW_PHASE = "epoch", "phase"
# The per-row series by name: the code that measures one uses these, never the string.
LOSS, ACCURACY, SECONDS, GRAD_NORM = "loss", "accuracy", "seconds", "grad_norm"
DIST_E, DIST_INIT, NORM, STEP_PERP = "dist_E", "dist_init", "norm", "step_perp"
# Where every series but the scalars is written per measured layer.
ALWAYS, WITH_PHASES = "always", "experiments with phases"


@dataclass(frozen=True)
class Series:
    """One per-row series of ``metrics/``: row e is the state after e epochs (row 0: before training)."""

    name: str
    words: str  # what it is, for the README's table
    per_layer: bool = False  # (E+1, L) with attribute layer_names, else (E+1,)
    dtype: str = "f8"
    applies: str = ALWAYS  # ALWAYS, or WITH_PHASES (experiments whose trials have phases)
    console: str = ""  # its label in the console line ("" : not shown there); per layer: the total
    console_format: str = ".3e"
    tensorboard: str | None = None  # its TensorBoard tag (per layer: <tag>/<layer> and <tag>/total); None: none
    in_epochs_table: bool = True  # a column of the analysis's epochs table

    def shape(self) -> str:
        return "(E+1, L)" if self.per_layer else "(E+1,)"

    def numpy_dtype(self) -> str:
        return {"f8": "float64", "i8": "int64"}[self.dtype]


EPOCH_SERIES: tuple[Series, ...] = (
    Series(ROW_EPOCH, "the row's epoch: 0, 1, ..., E", dtype="i8", in_epochs_table=False),
    Series(ROW_PHASE, "the phase whose model the row measures: 1 or 2", dtype="i8", applies=WITH_PHASES,
           in_epochs_table=False),
    Series(LOSS, "mean loss on the untransformed training data", console="loss", console_format=".4f",
           tensorboard="loss"),
    Series(ACCURACY, "accuracy on the untransformed training data (NaN for a regression target)", console="acc",
           console_format=".3f", tensorboard="accuracy"),
    Series(SECONDS, "wall time of the epoch (of the whole pack, for packed seeds)", tensorboard="seconds",
           in_epochs_table=False),
    Series(GRAD_NORM, "norm of the (last) gradient applied in the epoch (NaN at row 0)", tensorboard="grad_norm"),
    Series(DIST_E, "‖A − Π_E A‖_F per measured layer, in weight space", per_layer=True, console="dist_E",
           tensorboard="dist_E"),
    Series(DIST_INIT, "‖A − A⁰‖_F per layer: the distance from the start of the current phase", per_layer=True,
           console="travelled", tensorboard="travelled"),
    Series(NORM, "‖A‖_F per layer", per_layer=True),
    Series(STEP_PERP, "‖Π_⊥(A_e − A_(e−1))‖_F per layer: the part of the epoch's step off E (0 at row 0)",
           per_layer=True, tensorboard="step_perp"),
)
SERIES: dict[str, Series] = {s.name: s for s in EPOCH_SERIES}
# The values a row carries besides its epoch and phase (EpochRecord.values).
ROW_VALUES = tuple(s.name for s in EPOCH_SERIES if s.name not in (ROW_EPOCH, ROW_PHASE))
LAYER_SERIES = tuple(s.name for s in EPOCH_SERIES if s.per_layer)
SCALAR_SERIES = tuple(s.name for s in EPOCH_SERIES if not s.per_layer)

# Single optimizer steps, for experiments that record them (the CNN's phase 2): one row per step.
STEP_DIST_E, STEP_EPOCH = DIST_E, ROW_EPOCH
STEP_SERIES: tuple[Series, ...] = (
    Series(STEP_DIST_E, "dist_E per layer after each single optimizer step", per_layer=True),
    Series(STEP_EPOCH, "the epoch the step belongs to", dtype="i8"),
)
# Snapshots: weights/epochs and weights/phase say which epoch and phase each one is.
SNAPSHOT_EPOCHS, SNAPSHOT_PHASE = "epochs", "phase"


def applies(series: Series, multi_phase: bool) -> bool:
    return series.applies == ALWAYS or multi_phase


def series_of(multi_phase: bool) -> tuple[Series, ...]:
    """The per-row series a trial file holds."""
    return tuple(s for s in EPOCH_SERIES if applies(s, multi_phase))


def row_bytes(layers: int) -> int:
    """The bytes one row adds to ``metrics/`` (at most)."""
    return sum(8 * (layers if s.per_layer else 1) for s in EPOCH_SERIES)


def metric_path(name: str) -> str:
    return f"{METRICS}/{name}"


# A per-layer series' value for the whole measured weight set, as the console, the live curves and the analysis's
# epochs table (its ``layer == TOTAL`` rows) give it.
TOTAL = "total"


def total_over_layers(values: Iterable[float]) -> float:
    """A per-layer series' total over the layers: the Euclidean norm of its values (for distances and norms, the
    Frobenius norm of the whole measured weight set). Summed in layer order, so that every reader gets the same
    bits."""
    return math.sqrt(sum(float(v) * float(v) for v in values))


def console_line(epoch: int, phase: int, values: Mapping, layer_names: list[str], total_epochs: int,
                 prefix: str = "", per_layer: bool = False, position: str = "") -> str:
    """The one line a row is reported by: its epoch and phase (or, where the row is not an epoch, its
    ``position``: a search's iteration and stage), the series with a console label (per-layer series by their
    total over layers, and with ``per_layer`` layer by layer for the first of them) and the row's seconds."""
    words = [f"{prefix}{position}"] if position else [f"{prefix}epoch {epoch}/{total_epochs}", f"phase {phase}"]
    shown_layers = False
    for series in EPOCH_SERIES:
        if not series.console or series.name not in values:
            continue
        value = values[series.name]
        if series.per_layer:
            text = f"{series.console} {'total=' if per_layer and not shown_layers else ''}" \
                   f"{total_over_layers(value):{series.console_format}}"
            if per_layer and not shown_layers:
                text += " [" + " ".join(f"{n}={float(v):{series.console_format}}" for n, v in zip(layer_names, value)) + "]"
                shown_layers = True
        else:
            text = f"{series.console} {float(value):{series.console_format}}"
        words.append(text)
    words.append(f"{float(values['seconds']):.2f}s")
    return " ".join(words)


# -- the README's table --------------------------------------------------------------------------------
README_BEGIN = "<!-- trial-file schema: made by `python -m pipeline.schema` from pipeline/schema.py -->"
README_END = "<!-- end of the trial-file schema -->"


def readme_table() -> str:
    """The README's table of the per-row and per-step series, as this module declares them."""
    rows = ["| dataset | shape | type | what |", "| --- | --- | --- | --- |"]
    for series in EPOCH_SERIES:
        where = "" if series.applies == ALWAYS else f" ({series.applies} only)"
        rows.append(f"| `{metric_path(series.name)}` | {series.shape()} | {series.numpy_dtype()} | "
                    f"{series.words}{where} |")
    for series in STEP_SERIES:
        shape = "(S, L)" if series.per_layer else "(S,)"
        rows.append(f"| `{STEPS}/{series.name}` | {shape} | {series.numpy_dtype()} | {series.words} (experiments "
                    "that record single steps) |")
    return "\n".join([README_BEGIN, *rows, README_END])


def readme_section(text: str) -> str | None:
    """The schema table as a README holds it (None where it has none)."""
    found = re.search(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), text, re.S)
    return found.group(0) if found else None


def rewrite_readme(path: Path) -> bool:
    """Replace the README's schema table by the declared one; whether anything changed."""
    text = path.read_text()
    current = readme_section(text)
    if current is None:
        raise ValueError(f"{path} has no schema table (between {README_BEGIN!r} and {README_END!r})")
    updated = text.replace(current, readme_table())
    if updated != text:
        path.write_text(updated)
    return updated != text


if __name__ == "__main__":
    readme = Path(__file__).resolve().parent.parent / "README.md"
    print(f"{readme}: {'rewritten' if rewrite_readme(readme) else 'already up to date'}")
