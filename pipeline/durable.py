"""Writes that survive the machine, not only the process: what a file system keeps when a node dies.

After a process is killed, everything it wrote is in the page cache and reaches the disk. After a node dies
(power, a kernel panic, NODE_FAIL), only what was made durable is there, and in whatever order the file
system chose: a file's bytes are durable once the file is synced, and a name (a file created, renamed,
linked or removed) once *its directory* is synced — on every file system, local or clustered, which is why
nothing here asks which one it is. Every write whose loss would cost work goes through these: the trial file
and its journal (``pipeline.trialfile.journal``), checkpoints, the manifest, the submission log and the leases.
``tests/crash`` checks it, state by state, under the persistence models it states.

``fdatasync`` is used for files: it makes the bytes and the size durable (what a reader needs), not the
times.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Directories on some file systems cannot be opened for syncing, or refuse it (their entries are durable
# by other means there): nothing to do.
_UNSYNCABLE = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR)


def sync(fd: int) -> None:
    """Make a file's bytes and size durable."""
    os.fdatasync(fd)


def sync_file(path: Path) -> None:
    """The same for a file that a library wrote and closed (HDF5, torch.save)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_directory(path: Path) -> None:
    """Make the names in a directory durable (after a create, rename, link or unlink in it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        if error.errno in _UNSYNCABLE:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _UNSYNCABLE:
            raise
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p``, each directory it creates durable in its parent."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        sync_directory(directory.parent)


def replace(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (the same directory), durably: its bytes must be durable already."""
    os.replace(source, target)
    sync_directory(Path(target).parent)


def unlink(path: Path) -> bool:
    """Remove a file durably; False if there was none."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    sync_directory(Path(path).parent)
    return True


def write_new(path: Path, data: bytes) -> None:
    """Write a file that nothing else names yet (a private temporary), durably, before it is linked or renamed
    into place: a name made durable before its bytes would read as an empty or half-written file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, token: str) -> None:
    """Replace the file at ``path`` with ``data``, all or nothing and durably, through a private temporary
    named by ``token``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    try:
        write_new(tmp, data)
        replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
