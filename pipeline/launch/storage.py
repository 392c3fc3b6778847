"""How much a file system can still take: its free space, and the user's quota where the site tells it.

A grid that writes 470 GB into a home directory with a 50 GB quota fails part-way, cleanly but hours in;
``submit`` asks here first (``pipeline.launch.checks``). Free space comes from ``statvfs`` of the folder (or
of its nearest existing parent). A quota comes from the site's own tools, where they exist and answer:
``lfs quota`` on Lustre, else ``quota``. Anything that cannot be read is *unknown*, never "no limit".

Torch-free: the launch layer uses it before anything is queued.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.trialfile.cost import format_bytes

QUOTA_TIMEOUT_S = 20
KIB = 1024


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str


@dataclass(frozen=True)
class Quota:
    """What the site says about the user's quota on a file system: ``left`` bytes (None: no limit set, or
    not known); ``known`` False when it could not be read; ``words``: what was found, for the line."""

    left: int | None
    known: bool
    words: str


def existing_ancestor(path: Path) -> Path:
    """The folder itself, or the nearest parent that exists (a results folder is made on submission)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged user can still write on the file system of ``path`` (OSError if unreadable)."""
    return shutil.disk_usage(existing_ancestor(path)).free


def mount_of(path: Path, mounts_file: Path = Path("/proc/mounts")) -> Mount:
    """The mount point and file-system type that hold ``path`` (the longest mount point above it)."""
    target = str(existing_ancestor(path).resolve())
    best = Mount("/", "")
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best.point):
            best = Mount(point, fields[2])
    return best


def _run(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=QUOTA_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def _limit_left(used_kib: str, soft_kib: str, hard_kib: str) -> int | None:
    """Bytes left under the tighter of a soft and a hard limit (0: no limit); None where neither is set."""
    used = int(used_kib.rstrip("*"))
    limits = [int(v) for v in (soft_kib, hard_kib) if v.isdigit() and int(v) > 0]
    return max(0, min(limits) - used) * KIB if limits else None


def parse_lfs_quota(text: str, mount: str) -> Quota | None:
    """``lfs quota -q -u USER MOUNT``: the mount, then kbytes used, quota, limit, grace, files, ... (a long
    mount name puts the numbers on the next line). None if the output is not of that form."""
    tokens = text.split()
    if mount not in tokens:
        return None
    numbers = tokens[tokens.index(mount) + 1:]
    if len(numbers) < 3 or not numbers[0].rstrip("*").isdigit():
        return None
    left = _limit_left(numbers[0], numbers[1], numbers[2])
    return Quota(left, True, "no limit set (lfs quota)" if left is None else f"{format_bytes(left)} left (lfs quota)")


def parse_quota(text: str, device: str | None = None) -> Quota | None:
    """``quota -w``: "Disk quotas for user ...: none", or a header and a row per file system: the file system,
    blocks (KiB) used, quota, limit, grace, files, ... ``device``: the row to read (else the only one)."""
    if re.search(r":\s*none\s*$", text.strip().splitlines()[0] if text.strip() else ""):
        return Quota(None, True, "none set (quota)")
    rows = [line.split() for line in text.splitlines()[2:] if line.strip()]
    if device is not None:
        rows = [row for row in rows if row and row[0] == device] or rows
    if len(rows) != 1 or len(rows[0]) < 4 or not rows[0][1].rstrip("*").isdigit():
        return None
    left = _limit_left(rows[0][1], rows[0][2], rows[0][3])
    return Quota(left, True, "no limit set (quota)" if left is None else f"{format_bytes(left)} left (quota)")


def quota_of(path: Path, which: Callable[[str], str | None] = shutil.which,
             run: Callable[[list[str]], str | None] = _run) -> Quota:
    """The user's quota on the file system of ``path``, as the site's tools tell it; unknown otherwise.
    ``which`` and ``run`` are the lookups of commands and their output (tests give their own)."""
    mount = mount_of(path)
    user = getpass.getuser()
    tools = []
    if which("lfs") and mount.fstype == "lustre":
        tools.append("lfs quota")
        text = run(["lfs", "quota", "-q", "-u", user, mount.point])
        found = parse_lfs_quota(text, mount.point) if text is not None else None
        if found is not None:
            return found
    if which("quota"):
        tools.append("quota")
        text = run(["quota", "-w", "-u", user, "-f", mount.point])
        found = parse_quota(text, _device_of(mount.point)) if text is not None else None
        if found is not None:
            return found
    if not tools:
        return Quota(None, False, "unknown (neither `quota` nor `lfs quota` is on this machine: ask your site)")
    return Quota(None, False, f"unknown ({' and '.join(tools)} did not answer for {mount.point})")


def _device_of(point: str, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    try:
        for line in mounts_file.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1] == point:
                return fields[0]
    except OSError:
        pass
    return None


def under_home(path: Path) -> bool:
    """Whether ``path`` lies in the user's home directory, which clusters usually keep small and backed up."""
    home = os.path.expanduser("~")
    target = str(existing_ancestor(path).resolve())
    return home not in ("", "/") and (target == home or target.startswith(home.rstrip("/") + "/"))
