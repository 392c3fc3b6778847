"""Resolved configurations of single trials, and the parsing of ``key=value`` overrides.

A trial configuration is a flat, JSON-serialisable record: what ``manifest.json`` and the trial file's
``config`` attribute store, and all that is needed to rerun the trial.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .groups import GROUP_NAMES
from .models.cnn import CONFIGS
from .numerics import DTYPES
from .training import LOSSES, MODES, Augmentation


class ConfigError(ValueError):
    """A bad name or value in a configuration, reported as one line."""


def _choice(name, value, accepted):
    if value not in accepted:
        raise ConfigError(f"unknown {name} {value!r}; accepted: {', '.join(map(str, accepted))}")


def _positive(name, value, kind=int):
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive {kind.__name__}, got {value!r}")


@dataclass
class CommonSettings:
    seed: int = 0
    n_samples: int = 10000
    dtype: str = "float32"
    device: str = "auto"
    chunk_size: int = 1000  # rows per forward/backward when accumulating a full-batch gradient
    data_source: str = "auto"
    weights_every: int = 1  # weight snapshot every k epochs (0: first and last only)

    def validate_common(self):
        _choice("dtype", self.dtype, DTYPES)
        for name in ("n_samples", "chunk_size"):
            _positive(name, getattr(self, name))
        if self.weights_every < 0:
            raise ConfigError(f"weights_every must be >= 0, got {self.weights_every}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; accepted: auto, cpu, cuda, cuda:N")


@dataclass
class GroupsTrial(CommonSettings):
    """One Experiment G trial (SCIENCE.md section 3)."""

    experiment: str = field(default="groups", init=False)
    group: str = "rot"
    mode: str = "nom"
    n: int = 14
    channels: int = 32
    epochs: int = 50
    lr: float = 5e-5
    augment: str = "sampled:25"
    aug_batch: int = 25
    loss: str = "cross_entropy"
    invariant_activation: str = "auto"

    def validate(self) -> "GroupsTrial":
        self.validate_common()
        _choice("group", self.group, GROUP_NAMES)
        _choice("mode", self.mode, MODES)
        _choice("loss", self.loss, LOSSES)
        _choice("invariant_activation", self.invariant_activation, ("auto", "tanh", "leaky_relu"))
        for name in ("n", "channels", "epochs", "aug_batch"):
            _positive(name, getattr(self, name))
        _positive("lr", float(self.lr), float)
        try:
            Augmentation.parse(self.augment)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        return self

    @property
    def trial_id(self) -> str:
        return f"{self.group}-{self.mode}-s{self.seed:03d}"

    @property
    def total_epochs(self) -> int:
        return self.epochs


@dataclass
class CNNTrial(CommonSettings):
    """One Experiment C trial (SCIENCE.md section 4): Equi phase 1, then phase 2 unconstrained."""

    experiment: str = field(default="cnn", init=False)
    config: str = "cross"
    cnn_channels: str = "32,64,64"
    image_size: int = 28
    basis_seed: int = 0
    phase1_epochs: int = 250
    phase1_lr: float = 5e-4
    phase1_batch: int = 100
    phase2_epochs: int = 50
    phase2_lr: float = 2.5e-4
    phase2_optimizer: str = "gd"  # "gd": full-batch gradient descent; "sgd": minibatches (reference script)
    phase2_batch: int = 100
    phase2_mode: str = "aug"  # "aug" (orbit of C4) or "nom" (the contrast extension)

    def validate(self) -> "CNNTrial":
        self.validate_common()
        _choice("config", self.config, CONFIGS)
        _choice("phase2_optimizer", self.phase2_optimizer, ("gd", "sgd"))
        _choice("phase2_mode", self.phase2_mode, ("aug", "nom"))
        try:
            widths = self.channel_widths
        except ValueError:
            raise ConfigError(f"cnn_channels must be three positive integers a,b,c, got {self.cnn_channels!r}") from None
        if len(widths) != 3 or min(widths) <= 0:
            raise ConfigError(f"cnn_channels must be three positive integers a,b,c, got {self.cnn_channels!r}")
        if self.image_size % 4:
            raise ConfigError(f"image_size must be a multiple of 4, got {self.image_size}")
        for name in ("phase1_batch", "phase2_batch"):
            _positive(name, getattr(self, name))
        for name in ("phase1_epochs", "phase2_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        return self

    @property
    def channel_widths(self) -> tuple[int, ...]:
        return tuple(int(c) for c in str(self.cnn_channels).split(","))

    @property
    def trial_id(self) -> str:
        return f"cnn-{self.config}-s{self.seed:03d}"

    @property
    def total_epochs(self) -> int:
        return self.phase1_epochs + self.phase2_epochs


TRIAL_TYPES = {"groups": GroupsTrial, "cnn": CNNTrial}
TrialConfig = GroupsTrial | CNNTrial


def field_types(cls) -> dict[str, type]:
    return {f.name: type(f.default) for f in dataclasses.fields(cls) if f.init}


def parse_value(key: str, text, target: type):
    """Convert an override's text to the type of the field it sets."""
    if not isinstance(text, str):
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


def make_trial(experiment: str, values: dict) -> TrialConfig:
    _choice("experiment", experiment, TRIAL_TYPES)
    cls = TRIAL_TYPES[experiment]
    types = field_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} for {experiment}; accepted: {', '.join(sorted(types))}")
    return cls(**{k: parse_value(k, v, types[k]) for k, v in values.items()}).validate()


def trial_from_json(text: str) -> TrialConfig:
    values = json.loads(text)
    experiment = values.pop("experiment")
    return make_trial(experiment, values)


def trial_to_json(trial: TrialConfig) -> str:
    return json.dumps(dataclasses.asdict(trial), sort_keys=True)


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """``["a=1", "b=x,y"]`` -> {"a": "1", "b": "x,y"}; a pair without '=' is an error."""
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad override {pair!r}: expected key=value")
        result[key.strip()] = value.strip()
    return result
