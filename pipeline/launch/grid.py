"""Experiment grids: declarative TOML files that expand deterministically into ordered trial lists.

A grid file has one section per experiment (``[groups]``, ``[cnn]``, ...). Every key of a section is a
trial setting; a setting given a list of values is an *axis*, and the section expands to every
combination of its axes: the experiment's labels first (its cell, e.g. the group, then the mode), then the
other axes in the order they are written, the seed last. A section written ``[[groups]]`` (several
tables) expands table by table: an extra arm for some cells only, such as exact-orbit Aug for the cheap
groups, without the full product. ``seeds`` is a count (N -> 0..N-1), a range
"a-b" or a list. Plural names (``groups``, ``modes``, ``seeds``, ``variants``) are accepted for the axes
that always had them. Sections expand in the order of the experiment registry, so index i names the same
trial everywhere.

A grid may build on another: ``extends = "demo"`` (a preset, or a .toml path relative to the file) takes
that grid, and this file's keys win (a section that is a table in both is merged key by key).

Overrides (``--set key=value``) apply to every section that knows the key; ``groups.key=...`` restricts
one to a section. A comma-separated value makes an axis (``--set lr=1e-4,5e-5``), except for settings
whose value is a comma-separated list itself (``cnn_channels``; sweep those with a TOML array).

Trial ids are the experiment's labels, then every other setting that varies across the experiment's trials
and applies to this one, then the seed:
``rot-aug-s007``, ``rot-aug-orbit-s007``, ``cnn-cross-nom-s012``, ``rot-nom-lr0.0001-s000``. A setting
that does not affect a trial (``augment`` for a Nom trial) is neither swept for it nor in its id, and
the trial is run once however many values that axis has. In an experiment with arms (``arm_key``:
Experiment G's full-batch GD and its minibatch-SGD extension), the id prefix names the arm and another
setting counts as swept only where it varies within an arm: ``rot-nom-s000`` and ``rot-nom-sgd-s000``
although the two arms differ in learning rate and epochs. An experiment whose cells a grid configures one by
one (``settings_per_cell``: Experiment S, a budget per network) names a setting only where it varies within a
cell: ``stab-rot-s000`` whatever budget its section gives rot.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipeline import experiments
from pipeline.experiments import Experiment, Trial
from pipeline.names import check_script_text
from pipeline.settings import (
    MAX_SEEDS,
    MAX_TRIALS,
    CommonSettings,
    ConfigError,
    did_you_mean,
    field_types,
    is_atomic,
    quoted,
)

JOBS_DIR = Path(__file__).resolve().parents[2] / "jobs"
GRID_KEYS = {"description", "launch", "extends"}
LAUNCH_KEYS = {"trials_per_task": int, "pack_seeds": bool}
SEED_NAMES = ("seeds", "seed")


@dataclass
class Grid:
    name: str
    source: str
    description: str
    # experiment -> its tables ({setting: value or list of values}, overrides applied); a section written as
    # [[name]] has several tables, each expanding on its own (e.g. one group's extra arm), named together
    sections: dict[str, list[dict]]
    launch: dict  # launcher hints (e.g. trials_per_task), read by the launcher
    overrides: dict[str, str]

    def shape(self, trials: list[Trial] | None = None) -> str:
        """What the grid holds, counted from its trials (never from words a preset wrote before its ``--set``):
        "Experiment G: 16 cells x 10 seeds (0-9); Experiment C: 6 cells x 30 seeds (0-29)"."""
        trials = self.trials() if trials is None else trials
        parts = []
        for name in dict.fromkeys(t.experiment for t in trials):
            mine = [t for t in trials if t.experiment == name]
            cells = {t.trial_id.rsplit("-s", 1)[0] for t in mine}
            seeds = sorted({t.settings.seed for t in mine})
            runs = (f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1
                    else ",".join(map(str, seeds)))
            per_cell = "" if len(mine) == len(cells) * len(seeds) else f", {len(mine)} trials"
            parts.append(f"{experiments.get(name).title}: {len(cells)} cell(s) x {len(seeds)} seed(s) ({runs}){per_cell}")
        return "; ".join(parts)

    def trials(self) -> list[Trial]:
        check_size(self)  # before anything is expanded: a slip of the keyboard must not hang the command
        trials: list[Trial] = []
        for name in experiments.REGISTRY:
            if name in self.sections:
                experiment = experiments.get(name)
                combinations = [s for table in self.sections[name] for s in expand_table(experiment, table)]
                trials += name_trials(experiment, _unique(combinations), start=len(trials))
        duplicates = sorted(i for i, n in Counter(t.trial_id for t in trials).items() if n > 1)
        if duplicates:
            raise ConfigError(f"grid {self.name!r} expands to duplicate trial ids, e.g. {duplicates[0]!r}")
        return trials


def check_size(grid: Grid) -> None:
    """Refuse, in one line, a grid whose tables would expand to more than MAX_TRIALS combinations (counted
    from the lengths of their axes, before any is expanded)."""
    count = sum(math.prod(len(value) for value in table.values() if isinstance(value, list))
                for tables in grid.sections.values() for table in tables)
    if count > MAX_TRIALS:
        raise ConfigError(f"grid {grid.name!r} expands to {count:,} combinations of settings; accepted: at most "
                          f"{MAX_TRIALS:,} trials in a grid (fewer seeds or values, or several folders)")


def expand_table(experiment: Experiment, table: dict) -> list[CommonSettings]:
    """The settings of every combination of one table's axes, in grid order."""
    table = dict(table)
    seeds = table.pop("seed", [0])
    labels = [key for key in (experiment.cell_key, experiment.mode_key) if key in table]
    others = [key for key in table if key not in labels]
    axes = [key for key in labels + others if isinstance(table[key], list)]
    fixed = {key: value for key, value in table.items() if key not in axes}
    return [experiment.make_settings({**fixed, **dict(zip(axes, values)), "seed": seed})
            for values in itertools.product(*(table[key] for key in axes)) for seed in seeds]


def expand_section(experiment: Experiment, table: dict, start: int = 0) -> list[Trial]:
    """The trials of one table on its own, numbered from ``start``."""
    return name_trials(experiment, _unique(expand_table(experiment, table)), start)


def _unique(combinations: list) -> list:
    """Each trial once: axes of settings that do not affect a trial (canonicalised away) would repeat it."""
    seen, unique = set(), []
    for settings in combinations:
        if repr(settings) not in seen:
            seen.add(repr(settings))
            unique.append(settings)
    return unique


def name_trials(experiment: Experiment, combinations: list, start: int = 0) -> list[Trial]:
    """Trials numbered from ``start``, each id naming the settings in which it differs from the others of
    its experiment (besides the labels and the seed)."""
    labels = {experiment.cell_key, experiment.mode_key, "seed"}
    names = [f.name for f in fields(experiment.settings_type) if f.init and f.name not in labels]
    arm = experiment.arm_key
    arms: dict[object, list] = {}
    for settings in combinations:
        arms.setdefault(getattr(settings, arm) if arm else None, []).append(settings)
    groups = list(arms.values())
    if experiment.settings_per_cell:
        cells: dict[object, list] = {}
        for settings in combinations:
            cells.setdefault(getattr(settings, experiment.cell_key), []).append(settings)
        groups = list(cells.values())
    swept = [key for key in names if key == arm and len(arms) > 1
             or key != arm and any(_varies(key, members, experiment) for members in groups)]
    trials: list[Trial] = []
    for settings in combinations:
        ignored = experiment.irrelevant(settings)
        distinguishing = {key: getattr(settings, key) for key in swept if key not in ignored}
        # The arm is named by the id prefix (the experiment's own arm keeps its ids).
        tokens = "".join(f"-{_token(key, value)}" for key, value in distinguishing.items() if key != arm)
        trial_id = f"{experiment.id_prefix(settings)}{tokens}-s{settings.seed:03d}"
        trials.append(Trial(start + len(trials), trial_id, settings, distinguishing))
    return trials


def _varies(key: str, combinations: list, experiment: Experiment) -> bool:
    return len({getattr(s, key) for s in combinations if key not in experiment.irrelevant(s)}) > 1


def _token(key: str, value: object) -> str:
    """A swept value as a piece of a trial id: text values alone, numbers after their setting's name."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        text = f"{key}{text}"
    return re.sub(r"[^A-Za-z0-9.+-]", "", text)


def available_presets() -> list[str]:
    return sorted(p.stem for p in JOBS_DIR.glob("*.toml"))


def _grid_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    preset = JOBS_DIR / f"{name_or_path}.toml"
    if preset.exists():
        return preset
    raise ConfigError(f"unknown grid {name_or_path!r}{did_you_mean(name_or_path, available_presets())}; accepted: "
                      f"a .toml file or one of {', '.join(available_presets())}")


def parse_seeds(value: int | str | list[int | str]) -> list[int]:  # as a grid file or --set writes it
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            seeds = _seed_range(value, 0, value)
        elif isinstance(value, list):
            seeds = [int(v) for v in value]
        elif "-" in str(value) and "," not in str(value):
            first, last = (int(v) for v in str(value).split("-"))
            seeds = _seed_range(value, first, last + 1)
        elif "," in str(value):
            seeds = [int(v) for v in str(value).split(",")]
        else:
            seeds = _seed_range(value, 0, int(value))
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"bad value {value!r} for seeds; accepted: a count N, a range a-b or a list a,b,c") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"bad value {value!r} for seeds; accepted: a count N, a range a-b or a list a,b,c")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"a list of {len(seeds)} seeds; accepted: at most {MAX_SEEDS} in one section")
    return seeds


def _seed_range(value: object, start: int, stop: int) -> list[int]:
    if stop - start > MAX_SEEDS:
        raise ConfigError(f"seeds={value} is {stop - start} seeds; accepted: at most {MAX_SEEDS} in one section")
    return list(range(start, stop))


def _settable(experiment: Experiment) -> dict[str, str]:
    """Every name a section of ``experiment`` accepts -> the setting it sets."""
    names = {name: name for name in field_types(experiment.settings_type)}
    names.update(experiment.aliases)
    names.update({alias: "seed" for alias in SEED_NAMES})
    return names


def _as_axis(experiment: Experiment, key: str, written: str, value: Any) -> Any:  # a TOML value, or a list of them
    """A section value: a list of values (an axis) or a single value; every axis value is checked on its
    own, so that an error names the axis it came from."""
    if key == "seed":
        return parse_seeds(value)
    if isinstance(value, str) and "," in value and not is_atomic(experiment.settings_type, key):
        value = [item.strip() for item in value.split(",") if item.strip()]
        if not value:
            raise ConfigError(f"{written} is empty")
    if not isinstance(value, list):
        if written == key:
            return value
        value = [value]  # a plural axis name (``modes = "aug"``) names an axis of one value
    if not value:
        raise ConfigError(f"{written} is empty; give at least one value")
    for item in value:
        try:
            experiment.make_settings({key: item})
        except ConfigError as error:
            message = str(error)
            raise ConfigError(message.replace("; accepted", f" in {written}; accepted", 1) if "; accepted" in message
                              else f"{message} (in {written})") from None
    return list(dict.fromkeys(value))  # a value given twice is one trial, not two


def _read_document(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"grid file {quoted(path)} is not valid TOML: {error}") from None


def _document(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A grid file with what it extends folded in: ``extends = "preset"`` (or a path, relative to the file)
    reads that grid first; then this file's keys win. A section written as a table in both files is merged
    key by key; anything else (a value, a ``[[section]]`` list of tables) replaces the base's."""
    document = _read_document(path)
    base_name = document.pop("extends", None)
    if base_name is None:
        return document
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"extends in {quoted(path)} must name a grid preset or a .toml file, got {base_name!r}")
    beside = path.parent / base_name
    base_path = beside if beside.suffix == ".toml" and beside.exists() else _grid_path(base_name)
    if base_path.resolve() in {p.resolve() for p in chain + (path,)}:
        raise ConfigError(f"grid {quoted(path)} extends itself: {' -> '.join(p.stem for p in chain + (path, base_path))}")
    merged = dict(_document(base_path, chain + (path,)))
    for key, value in document.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_grid(name_or_path: str, overrides: dict[str, str] | None = None) -> Grid:
    path = _grid_path(name_or_path)
    document = _document(path)
    known_sections = set(experiments.REGISTRY)
    unknown = sorted(set(document) - GRID_KEYS - known_sections)
    if unknown:
        accepted = sorted(GRID_KEYS | known_sections)
        raise ConfigError(f"unknown section {unknown[0]!r} in {quoted(path)}{did_you_mean(unknown[0], accepted)}; accepted: "
                          f"{', '.join(accepted)}")
    launch = _launch_hints(document, path)
    sections = _sections(document, path)
    overrides = dict(overrides or {})
    _apply_overrides(sections, overrides, path)
    resolved = {name: [{key: _as_axis(experiments.get(name), key, written, value)
                        for key, (written, value) in table.items()} for table in tables]
                for name, tables in sections.items()}
    # The name goes into sbatch scripts (the job name) and every message: one line, as a name should be.
    grid = Grid(check_script_text(path.stem, "grid file name"), str(path), document.get("description", ""), resolved,
                launch, overrides)
    grid.trials()  # every value is checked here, before anything runs
    return grid


def _launch_hints(document: dict, path: Path) -> dict[str, Any]:
    """The grid's [launch] table, each key known and of its type."""
    launch: dict[str, Any] = dict(document.get("launch", {}))
    for key, value in launch.items():
        if key not in LAUNCH_KEYS:
            raise ConfigError(f"unknown key {key!r} in [launch] of {quoted(path)}{did_you_mean(key, LAUNCH_KEYS)}; "
                              f"accepted: {', '.join(sorted(LAUNCH_KEYS))}")
        expected = LAUNCH_KEYS[key]
        if not (isinstance(value, int) and value >= 1 if expected is int else isinstance(value, expected)):
            raise ConfigError(f"[launch] {key} in {quoted(path)} must be a positive {LAUNCH_KEYS[key].__name__}, "
                              f"got {value!r}")
    return launch


def _sections(document: dict, path: Path) -> dict[str, list[dict]]:
    """Each experiment's tables: setting -> (the name it was written as, its value), every name known."""
    known_sections = set(experiments.REGISTRY)
    written_sections = {name: document[name] if isinstance(document[name], list) else [document[name]]
                        for name in experiments.REGISTRY if name in document}
    if not written_sections:
        raise ConfigError(f"grid {quoted(path)} has no experiment section; accepted: "
                          f"{', '.join(f'[{n}]' for n in known_sections)}")

    sections: dict[str, list[dict]] = {}
    for name, tables in written_sections.items():
        settable = _settable(experiments.get(name))
        sections[name] = []
        for written in tables:
            bad = sorted(set(written) - set(settable))
            if bad:
                raise ConfigError(f"unknown key {bad[0]!r} in [{name}] of {quoted(path)}{did_you_mean(bad[0], settable)}; "
                                  f"accepted: {', '.join(sorted(settable))}")
            sections[name].append({settable[key]: (key, value) for key, value in written.items()})
    return sections


def _apply_overrides(sections: dict[str, list[dict]], overrides: dict[str, str], path: Path) -> None:
    """``--set KEY=VALUE`` (``SECTION.KEY`` for one experiment's tables) into every table it applies to."""
    for key, value in overrides.items():
        scope, _, bare = key.rpartition(".")
        if scope and scope not in sections:
            raise ConfigError(f"unknown section {scope!r} in override {key!r}; this grid has: {', '.join(sections)}")
        targets = [scope] if scope else list(sections)
        applied = [name for name in targets if bare in _settable(experiments.get(name))]
        if not applied:
            accepted = sorted(set().union(*(_settable(experiments.get(name)) for name in targets)))
            raise ConfigError(f"unknown key {bare!r} for grid {path.stem}{did_you_mean(bare, accepted)}; accepted: "
                              f"{', '.join(accepted)}")
        for name in applied:
            for table in sections[name]:
                table[_settable(experiments.get(name))[bare]] = (bare, value)
