"""Cluster profiles: where and how to run (partition, GPU request, CPUs, memory, time limits).

Time limits follow each task's estimated cost (``pipeline.launch.layout``), clamped to the partition's
maximum ``max_time_min``; ``[time_limit_min]`` (minutes per trial of an experiment) fixes them instead.

A profile is a TOML file in ``slurm/profiles/`` (or any path). Both common GPU request syntaxes are
supported: ``gpu_syntax = "gres"`` writes ``--gres=gpu:<type>:<n>``, ``"gpus-per-node"`` writes
``--gpus-per-node=<TYPE>:<n>`` (as on NAISS Alvis).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import experiments, schedulers
from pipeline.launch.throughput import gpu_key
from pipeline.settings import ConfigError, did_you_mean, quoted

PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "slurm" / "profiles"
EXECUTORS = tuple(schedulers.SCHEDULERS)  # a profile's executor names its scheduler (and launch backend)
GPU_SYNTAXES = ("gres", "gpus-per-node")


@dataclass
class Profile:
    name: str
    executor: str
    path: str = ""  # the file it was read from: a later resubmit or cancel uses the same one
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpu_type: str = ""
    gpus: int = 0
    gpu_syntax: str = "gres"
    cpus_per_task: int = 1
    mem_gb: int = 8
    array_parallelism: int = 64
    signal_delay_s: int = 90
    workers: int = 0
    setup: list = field(default_factory=list)
    time_limit_min: dict = field(default_factory=dict)  # experiment -> minutes per trial, instead of estimates
    max_time_min: int = 1440  # the partition's longest time limit (`sinfo -o "%P %l"`); longer work is requeued
    min_task_min: int = 10  # cheap trials are packed into tasks of about this many minutes
    additional: dict = field(default_factory=dict)  # any other sbatch option, e.g. {"reservation": "x"}

    def gpu_request(self) -> dict:
        """The submitit SlurmExecutor parameters that ask for the GPUs."""
        if self.gpus <= 0:
            return {}
        if self.gpu_syntax == "gres":
            kind = f"{self.gpu_type.lower()}:" if self.gpu_type else ""
            return {"gres": f"gpu:{kind}{self.gpus}"}
        kind = f"{self.gpu_type}:" if self.gpu_type else ""
        return {"gpus_per_node": f"{kind}{self.gpus}"}

    def gpu_request_words(self) -> str:
        """The GPU request as sbatch reads it: "--gres=gpu:t4:1 (1 x T4 per task)", or "none"."""
        request = self.gpu_request()
        if not request:
            return "none (the tasks run on CPUs)"
        options = " ".join(f"--{key.replace('_', '-')}={value}" for key, value in request.items())
        return f"{options} ({self.gpus} x {gpu_key(self.gpu_type) or 'GPU'} per task)"

    def local_workers(self) -> int:
        cores = os.cpu_count() or 1
        return self.workers if self.workers > 0 else max(1, min(cores, 8))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    path = _profile_path(name_or_path)
    profile = _read(path)
    _check(profile, path)
    return profile


def _profile_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.exists()):
        path = PROFILES_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise ConfigError(f"unknown cluster profile {name_or_path!r}{did_you_mean(name_or_path, available_profiles())}; "
                          "accepted: a .toml file or one of "
                          f"{', '.join(available_profiles())}")
    return path


def _read(path: Path) -> Profile:
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"cluster profile {quoted(path)} is not valid TOML: {error}") from None
    known = set(Profile.__dataclass_fields__) - {"name", "path"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in cluster profile {quoted(path)}{did_you_mean(unknown[0], known)}; "
                          f"accepted: {', '.join(sorted(known))}")
    try:
        profile = Profile(name=path.stem, path=str(path.resolve()), **values)
    except TypeError as error:
        raise ConfigError(f"cluster profile {quoted(path)} is malformed: {error}") from None
    return profile


def _check(profile: Profile, path: Path) -> None:
    """Each value of a profile within what it accepts, said in one line naming the file."""
    if profile.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {profile.executor!r} in {quoted(path)}; accepted: {', '.join(EXECUTORS)}")
    if profile.gpu_syntax not in GPU_SYNTAXES:
        raise ConfigError(f"unknown gpu_syntax {profile.gpu_syntax!r} in {quoted(path)}; "
                          f"accepted: {', '.join(GPU_SYNTAXES)}")
    for key in ("max_time_min", "min_task_min", "array_parallelism"):
        value = getattr(profile, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} in cluster profile {quoted(path)} must be a positive integer (minutes), got {value!r}")
    for experiment, minutes in profile.time_limit_min.items():
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 1:
            raise ConfigError(f"time_limit_min.{experiment} in cluster profile {quoted(path)} must be a positive integer "
                              f"(minutes per trial), got {minutes!r}")
    bad_experiments = sorted(set(profile.time_limit_min) - set(experiments.REGISTRY))
    if bad_experiments:
        raise ConfigError(f"unknown experiment {bad_experiments[0]!r} in time_limit_min of {quoted(path)}; "
                          f"accepted: {', '.join(experiments.REGISTRY)}")
