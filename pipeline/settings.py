"""Trial settings: the names the pipeline accepts, their checks, and ``key=value`` overrides.

A trial's settings are a flat, JSON-serialisable dataclass (one class per experiment, in
``pipeline/experiments/``); this module holds what they share. It imports no torch, so that ``plan``,
``status`` and the launch layer start in a fraction of a second, and every bad value is caught here,
before anything is submitted, with one line naming the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pipeline.errors import ConfigError, UserError  # noqa: F401 (where the configuration's modules import them)

T = TypeVar("T")

# Sampled Aug: samples per minibatch that share one random group element (the paper's batch).
AUG_BATCH = 25
# Rows per forward/backward pass when a full-batch gradient or an evaluation is accumulated in chunks: the
# activations alive at once stay those of this many rows.
CHUNK_SIZE = 1000
# How often a trial writes its resume checkpoint, at most (seconds); 0: every epoch.
CHECKPOINT_EVERY_S = 60.0

DTYPES = ("float32", "float64")
MODES = ("equi", "aug", "nom")
LOSSES = ("cross_entropy", "softmax_cross_entropy", "mse")
DATA_SOURCES = ("auto", "official", "vendored")
# Both MNIST sources hold the 10,000 digits of the test split (the paper trains on it).
MNIST_SAMPLES = 10_000
# Bounds on sizes, checked before anything runs (``plan`` included): beyond them a trial fits no machine,
# and a slip of the keyboard (epochs=100000000) would exhaust memory or hang while merely planning.
MAX_EPOCHS = 100_000  # rows of one trial (the paper's longest has 300)
MAX_IMAGE_SIDE = 28  # the MNIST digits are 28 x 28: a larger side would only upsample them
MAX_CHANNELS = 4096  # channels of one layer (the paper's widest has 64)
MAX_WEIGHTS = 1_000_000_000  # values of one weight snapshot, 4 GB in float32 (the paper's largest: 41 million)
MAX_SEEDS = 100_000  # seeds of one grid section
MAX_TRIALS = 200_000  # trials of one grid (two sections at their bound on seeds): a plan stays about a minute's work
MAX_AUG_PASSES = 10_000  # sampled Aug passes an epoch (the paper's 25; the largest exact orbit has 784)


def did_you_mean(value: object, accepted: Iterable[object]) -> str:
    """" (did you mean 'x'?)" for a misspelt name close to accepted ones, else ""."""
    close = difflib.get_close_matches(str(value), [str(a) for a in accepted], n=2, cutoff=0.8)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def quoted(path: object) -> str:
    """A path as messages print it: as the shell would need it (a path with spaces or quotes stays one
    word that can be pasted back into a command)."""
    return shlex.quote(str(path))


def check_choice(name: str, value: object, accepted: Collection[object]) -> None:
    if value not in accepted:
        raise ConfigError(f"unknown {name} {value!r}{did_you_mean(value, accepted)}; accepted: "
                          f"{', '.join(map(str, accepted))}")


def check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")


def check_at_most(name: str, value: int, limit: int, what: str) -> None:
    """A size within its bound (what the bound is about, for the message)."""
    if value > limit:
        raise ConfigError(f"{name}={value} is too large ({what}); accepted: at most {limit}")


def check_image_side(name: str, value: int) -> None:
    check_at_most(name, value, MAX_IMAGE_SIDE, f"images are resized from the {MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} MNIST "
                                               "digits")


def check_rate(name: str, value: object) -> None:
    """A learning rate: a finite number > 0 (NaN, infinities and 0 train nothing or diverge)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def check_nonnegative(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def check_device(value: str) -> None:
    """'auto', 'cpu', 'cuda' or 'cuda:N'. Whether CUDA is there is decided where the trial runs."""
    kind, _, index = str(value).partition(":")
    valid = value in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit())
    if not isinstance(value, str) or not valid:
        raise ConfigError(f"unknown device {value!r}; accepted: auto, cpu, cuda, cuda:N")


@dataclass(frozen=True)
class Augmentation:
    """How Aug computes its objective: ``orbit`` (every group element) or ``sampled:P`` (P random passes)."""

    kind: str  # "orbit" or "sampled"
    passes: int = 0  # sampled only
    batch_size: int = AUG_BATCH  # sampled only: samples per minibatch sharing one random element

    @classmethod
    def parse(cls, text: str, batch_size: int = AUG_BATCH) -> Augmentation:
        if text == "orbit":
            return cls("orbit")
        kind, _, passes = str(text).partition(":")
        if kind == "sampled" and passes.isascii() and passes.isdigit() and 0 < int(passes) <= MAX_AUG_PASSES:
            return cls("sampled", int(passes), batch_size)
        raise ConfigError(f"unknown augment {text!r}; accepted: orbit, sampled:P (P a whole number from 1 to "
                          f"{MAX_AUG_PASSES:,})")


@dataclass
class CommonSettings:
    """What every trial has, whatever its experiment."""

    experiment: ClassVar[str]  # each experiment's settings class names it
    seed: int = 0
    n_samples: int = 10000
    dtype: str = "float32"
    device: str = "auto"
    chunk_size: int = CHUNK_SIZE
    data_source: str = "auto"
    weights_every: int = 1  # weight snapshot every k epochs (0: first and last only)

    def validate(self) -> None:
        """Raise ConfigError unless the settings make a trial; each experiment's settings check their own too."""
        self.validate_common()

    def validate_common(self) -> None:
        check_count("seed", self.seed)
        check_choice("dtype", self.dtype, DTYPES)
        check_device(self.device)
        check_choice("data_source", self.data_source, DATA_SOURCES)
        check_positive_int("chunk_size", self.chunk_size)
        check_positive_int("n_samples", self.n_samples)
        if self.n_samples > MNIST_SAMPLES:
            raise ConfigError(f"n_samples={self.n_samples} is more than the data holds; accepted: 1..{MNIST_SAMPLES}")
        check_count("weights_every", self.weights_every)


def atomic(default: T, **metadata: object) -> T:
    """A setting whose text contains commas (e.g. channel widths "32,64,64"): ``--set`` never splits it
    into a list of values; sweep it with a TOML array instead."""
    return field(default=default, metadata={"atomic": True, **metadata})


def field_types(cls: type) -> dict[str, type]:
    return {f.name: type(f.default) for f in dataclasses.fields(cls) if f.init}


def is_atomic(cls: type, name: str) -> bool:
    return any(f.name == name and f.metadata.get("atomic") for f in dataclasses.fields(cls))


def parse_value(key: str, text: object, target: type) -> Any:
    """Convert an override's text (or a TOML value) to the type of the setting it sets (``target``: a value of a
    type known only when called, hence Any)."""
    if target is float and isinstance(text, int) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str):
        if target is str:
            raise ConfigError(f"bad value {text!r} for {key}: expected text")
        return text
    try:
        if target is bool:
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
        if target is int:
            return int(text)
        if target is float:
            return float(text)
    except (ValueError, KeyError):
        raise ConfigError(f"bad value {text!r} for {key}: expected {target.__name__}") from None
    return text


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x,y"]`` -> {"a": "1", "b": "x,y"}; a pair without '=' is an error."""
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad override {pair!r}: expected key=value")
        result[key.strip()] = value.strip()
    return result
