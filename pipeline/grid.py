"""Experiment grids: declarative TOML files that expand deterministically into ordered trial lists.

A grid file has one section per experiment. In ``[groups]`` the axes are ``groups``, ``modes`` and
``seeds``; in ``[cnn]`` they are ``configs`` and ``seeds``; every other key is a trial setting
(``pipeline.config``). ``seeds`` is a count (N -> 0..N-1), a range "a-b" or a list. Trials are ordered
section by section, then axis by axis in the order above, so index i names the same trial everywhere.

Overrides (``--set key=value``) apply to every section that knows the key; ``groups.key=...`` or
``cnn.key=...`` restricts one to a section. Lists are comma-separated.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from .config import TRIAL_TYPES, ConfigError, TrialConfig, field_types, make_trial
from .groups import GROUP_NAMES
from .models.cnn import CONFIGS
from .training import MODES

JOBS_DIR = Path(__file__).resolve().parent.parent / "jobs"
AXES = {"groups": ("groups", "modes", "seeds"), "cnn": ("configs", "seeds")}
AXIS_CHOICES = {"groups": GROUP_NAMES, "modes": MODES, "configs": tuple(CONFIGS)}
GRID_KEYS = {"description", "launch"}
LAUNCH_KEYS = {"trials_per_task": int, "pack_seeds": bool}


@dataclass
class Grid:
    name: str
    source: str
    description: str
    sections: dict[str, dict]  # experiment -> axes and settings, overrides applied
    launch: dict  # launcher hints (e.g. trials_per_task), read by the SLURM launcher
    overrides: dict[str, str]

    def trials(self) -> list[TrialConfig]:
        trials = []
        for experiment in ("groups", "cnn"):
            if experiment not in self.sections:
                continue
            section = dict(self.sections[experiment])
            axes = {axis: section.pop(axis) for axis in AXES[experiment]}
            seeds = axes.pop("seeds")
            if experiment == "groups":
                combos = [{"group": g, "mode": m} for g in axes["groups"] for m in axes["modes"]]
            else:
                combos = [{"config": c} for c in axes["configs"]]
            for combo in combos:
                for seed in seeds:
                    trials.append(make_trial(experiment, {**section, **combo, "seed": seed}))
        ids = [t.trial_id for t in trials]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"grid {self.name!r} expands to duplicate trial ids, e.g. {duplicates[0]!r}")
        return trials


def available_presets() -> list[str]:
    return sorted(p.stem for p in JOBS_DIR.glob("*.toml"))


def _grid_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    preset = JOBS_DIR / f"{name_or_path}.toml"
    if preset.exists():
        return preset
    raise ConfigError(f"unknown grid {name_or_path!r}; accepted: a .toml file or one of {', '.join(available_presets())}")


def parse_seeds(value) -> list[int]:
    try:
        if isinstance(value, int):
            seeds = list(range(value))
        elif isinstance(value, list):
            seeds = [int(v) for v in value]
        elif "-" in str(value) and "," not in str(value):
            first, last = (int(v) for v in str(value).split("-"))
            seeds = list(range(first, last + 1))
        elif "," in str(value):
            seeds = [int(v) for v in str(value).split(",")]
        else:
            seeds = list(range(int(value)))
    except ValueError:
        raise ConfigError(f"bad value {value!r} for seeds; accepted: a count N, a range a-b or a list a,b,c") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"bad value {value!r} for seeds; accepted: a count N, a range a-b or a list a,b,c")
    return seeds


def _parse_axis(axis: str, value) -> list:
    if axis == "seeds":
        return parse_seeds(value)
    items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
    for item in items:
        if item not in AXIS_CHOICES[axis]:
            raise ConfigError(f"unknown {axis[:-1]} {item!r} in {axis}; accepted: {', '.join(AXIS_CHOICES[axis])}")
    if not items:
        raise ConfigError(f"{axis} is empty; accepted: {', '.join(AXIS_CHOICES[axis])}")
    return items


def _settable(experiment: str) -> set[str]:
    return set(AXES[experiment]) | set(field_types(TRIAL_TYPES[experiment])) - {"seed", "group", "mode", "config"}


def load_grid(name_or_path: str, overrides: dict[str, str] | None = None) -> Grid:
    path = _grid_path(name_or_path)
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"grid file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(document) - GRID_KEYS - set(AXES))
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r} in {path}; accepted: {', '.join(sorted(GRID_KEYS | set(AXES)))}")
    launch = dict(document.get("launch", {}))
    for key, value in launch.items():
        if key not in LAUNCH_KEYS:
            raise ConfigError(f"unknown key {key!r} in [launch] of {path}; accepted: {', '.join(sorted(LAUNCH_KEYS))}")
        if not isinstance(value, LAUNCH_KEYS[key]):
            raise ConfigError(f"[launch] {key} in {path} must be {LAUNCH_KEYS[key].__name__}, got {value!r}")
    sections = {exp: dict(document[exp]) for exp in AXES if exp in document}
    if not sections:
        raise ConfigError(f"grid {path} has no [groups] or [cnn] section")
    for experiment, section in sections.items():
        bad = sorted(set(section) - _settable(experiment))
        if bad:
            raise ConfigError(f"unknown key {bad[0]!r} in [{experiment}] of {path}; accepted: {', '.join(sorted(_settable(experiment)))}")
        for axis in AXES[experiment]:
            if axis not in section:
                raise ConfigError(f"[{experiment}] of {path} needs {axis}")

    overrides = dict(overrides or {})
    for key, value in overrides.items():
        scope, _, bare = key.rpartition(".")
        targets = [scope] if scope else list(sections)
        if scope and scope not in sections:
            raise ConfigError(f"unknown section {scope!r} in override {key!r}; this grid has: {', '.join(sections)}")
        applied = [exp for exp in targets if bare in _settable(exp)]
        if not applied:
            accepted = sorted(set().union(*(_settable(exp) for exp in targets)))
            raise ConfigError(f"unknown key {bare!r} for grid {path.stem}; accepted: {', '.join(accepted)}")
        for experiment in applied:
            sections[experiment][bare] = value

    for experiment, section in sections.items():
        for axis in AXES[experiment]:
            section[axis] = _parse_axis(axis, section[axis])
    grid = Grid(path.stem, str(path), document.get("description", ""), sections, launch, overrides)
    grid.trials()  # every value is checked here, before anything runs
    return grid
