"""Checks before the queue: what would otherwise fail on the nodes, or part-way through a grid, said in one
line before anything is queued (``submit``, ``resubmit`` and their dry runs).

- **Devices**: a grid whose ``device`` contradicts the profile (``cpu`` on a profile that requests GPUs, where
  every task would fail on its node after waiting in the queue; ``cuda`` where no GPU is requested or visible)
  is refused, naming what to set.
- **Storage**: the bytes the trials still to run will write (their weight snapshots, as ``plan`` counts them,
  less what their files already hold) against the free space of OUT's file system and, where the site tells
  it, the user's quota there (``pipeline.launch.storage``). More than either is refused; a quota that cannot be read
  is said to be unknown. ``PIPELINE_FREE_SPACE_CHECK=0`` turns the check off, as it does the check before
  each write.
- **Hours on this machine**: a local submission estimated at more than ``LOCAL_HOURS_LIMIT`` CPU-hours
  needs ``--allow-long-local``: a forgotten ``--cluster`` must not start the paper's grid on a login node.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.experiments import Trial
from pipeline.folder import ResultsFolder
from pipeline.launch import local_gpus, storage
from pipeline.launch.backends import backend_of
from pipeline.launch.layout import Plan
from pipeline.launch.profiles import Profile
from pipeline.settings import quoted
from pipeline.trialfile.cost import format_bytes, snapshot_bytes

# Beyond this many estimated CPU-hours a local submission must be asked for (the demo is about 0.2).
LOCAL_HOURS_LIMIT = 4.0
LONG_LOCAL_FLAG = "--allow-long-local"


def _examples(trials: list) -> str:
    names = [t.trial_id for t in trials[:2]]
    return ", ".join(names) + (", ..." if len(trials) > 2 else "")


def check_devices(trials: list[Trial], profile: Profile, visible_gpus: Sequence[str] | None = None) -> None:
    """Refuse trials whose ``device`` the profile's nodes cannot give them. ``visible_gpus``: the GPUs a local
    submission would share out (``pipeline.launch.local_gpus``), looked up only when needed."""
    on_cpu = [t for t in trials if t.settings.device == "cpu"]
    on_cuda = [t for t in trials if t.settings.device.startswith("cuda")]
    if profile.gpus > 0 and on_cpu:
        raise ConfigError(f"{len(on_cpu)} trial(s) of this grid set device='cpu' ({_examples(on_cpu)}), but profile "
                          f"{profile.name} requests GPUs, where a task trains on CUDA or fails: add --set device=auto "
                          "(make ... SET=device=auto), or submit with a CPU profile (--cluster local)")
    here = backend_of(profile).runs_here
    if profile.gpus > 0 and here:
        gpus = _visible(visible_gpus)
        if not gpus:
            raise ConfigError(f"profile {profile.name} requests GPUs, but none is visible here (CUDA_VISIBLE_DEVICES, "
                              "nvidia-smi -L): run it where there is one, or use --cluster local")
    if on_cuda and profile.gpus == 0:
        if not here:
            raise ConfigError(f"{len(on_cuda)} trial(s) of this grid set device={on_cuda[0].settings.device!r} "
                              f"({_examples(on_cuda)}), but profile {profile.name} requests no GPU: add --set "
                              "device=auto, or submit with a GPU profile (--cluster t4, a40 or your site's)")
        if not _visible(visible_gpus):
            raise ConfigError(f"{len(on_cuda)} trial(s) of this grid set device={on_cuda[0].settings.device!r} "
                              f"({_examples(on_cuda)}), but no GPU is visible here (CUDA_VISIBLE_DEVICES, "
                              "nvidia-smi -L): add --set device=auto, or submit to a GPU profile")


def _visible(visible_gpus: Sequence[str] | None) -> list[str]:
    if visible_gpus is not None:
        return list(visible_gpus)
    return local_gpus.visible_gpus()


def bytes_to_write(out_dir: Path, trials: list) -> int:
    """The weight snapshots the trials will write, less what their files already hold (resumed trials)."""
    folder = ResultsFolder.of(out_dir)
    total = 0
    for trial in trials:
        path = folder.trial_file(trial.trial_id)
        written = path.stat().st_size if path.exists() else 0
        total += max(0, snapshot_bytes(trial.settings) - written)
    return total


def storage_check(out_dir: Path, trials: list[Trial], free: int | None = None, quota: storage.Quota | None = None) -> str:
    """One line: what the trials will write against the free space and quota of OUT's file system; a
    ConfigError, in one line with the ways out, where it does not fit. ``free`` and ``quota`` replace the
    lookups (``pipeline.launch.storage``)."""
    out_dir = Path(out_dir)
    need = bytes_to_write(out_dir, trials)
    mount = storage.mount_of(out_dir)
    where = f"{quoted(out_dir)} ({mount.fstype or 'file system'} at {mount.point})"
    if os.environ.get("PIPELINE_FREE_SPACE_CHECK", "1") == "0":
        return f"storage: about {format_bytes(need)} to write into {where}; not checked (PIPELINE_FREE_SPACE_CHECK=0)"
    try:
        available = storage.free_bytes(out_dir) if free is None else free
        free_words = f"{format_bytes(available)} free"
    except OSError as error:
        available, free_words = None, f"free space unknown ({error.strerror or error})"
    found = storage.quota_of(out_dir) if quota is None else quota
    ways_out = ("free space there, submit into a larger file system (--out on scratch), or keep fewer weight "
                "snapshots (--set weights_every=0 keeps the first and last epoch)")
    if available is not None and need > available:
        raise ConfigError(f"the trials to run write about {format_bytes(need)} of weight snapshots, but {where} has "
                          f"{format_bytes(available)} free: {ways_out}")
    if found.left is not None and need > found.left:
        raise ConfigError(f"the trials to run write about {format_bytes(need)} of weight snapshots, but your quota on "
                          f"{where} has {format_bytes(found.left)} left ({found.words}): {ways_out}")
    home = ("; this is your home directory, which clusters usually keep small: results belong on scratch (--out)"
            if storage.under_home(out_dir) else "")
    return f"storage: about {format_bytes(need)} to write into {where}: {free_words}; quota {found.words}{home}"


def check_local_hours(plan: Plan, allowed: bool, visible_gpus: Sequence[str] | None = None) -> str | None:
    """For a local submission: refuse one estimated beyond ``LOCAL_HOURS_LIMIT`` CPU-hours unless ``allowed``;
    returns the line to print where it is allowed, else None. A machine with GPUs (``visible_gpus``) is not
    a login node, and CPU-hours say nothing of it: not checked there."""
    if not backend_of(plan.profile).runs_here or plan.profile.gpus > 0 or _visible(visible_gpus):
        return None
    hours = sum(unit.seconds for array in plan.arrays for task in array.tasks for unit in task.units) / 3600
    if hours <= LOCAL_HOURS_LIMIT:
        return None
    if not allowed:
        raise ConfigError(f"{plan.trials} trials estimated at {hours:,.0f} CPU-hours would run on this machine "
                          f"(--cluster local, the default): to run them on a cluster add --cluster t4 (or a40, or "
                          f"your site's profile); to run them here all the same add {LONG_LOCAL_FLAG}")
    return f"running {plan.trials} trials estimated at {hours:,.0f} CPU-hours on this machine ({LONG_LOCAL_FLAG})"
