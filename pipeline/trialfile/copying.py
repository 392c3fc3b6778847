"""A copy of a trial file as it stood at its last commit, taken while its previous writer may still be writing it
(a frozen node, a requeued task): what a new owner of the trial works on, never the file itself
(``pipeline.trialfile.store``). The commits it reads are those of ``pipeline.trialfile.journal``.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from pipeline.errors import UserError
from pipeline.trialfile.journal import APPLYING, IDLE, Header, journal_path, read_entries, read_header, undo

_COPY_CHUNK = 64 * 1024 * 1024


def _copy(source_fd: int, target_fd: int) -> None:
    """Copy a whole file (in the kernel, or on the file server, where the file system can)."""
    try:
        while os.copy_file_range(source_fd, target_fd, _COPY_CHUNK):
            pass
        return
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
            raise
    os.lseek(source_fd, 0, os.SEEK_SET)
    os.lseek(target_fd, 0, os.SEEK_SET)
    os.ftruncate(target_fd, 0)
    while chunk := os.read(source_fd, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target_fd, view):]


class StillWriting(UserError, RuntimeError):
    """The file kept changing while a consistent copy was taken: its previous writer is still at work."""


def consistent_copy(path: Path, target: Path, attempts: int = 20, pause_s: float = 0.1) -> int:
    """Copy the file at ``path`` to ``target`` (a new, private name) as it was at its last commit,
    whatever its writer does meanwhile; returns the source's inode. The source is only read.

    A writer frozen while applying a commit is undone from its journal in the copy; a writer that is
    still committing makes the copy start again (it stops at its next transaction, which finds that it
    no longer owns the trial)."""
    path, target = Path(path), Path(target)
    journal = journal_path(path)
    for _ in range(attempts):
        before = read_header(journal)
        source = os.open(path, os.O_RDONLY)
        try:
            inode = os.fstat(source).st_ino
            fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _copy(source, fd)
                after = read_header(journal)
                _settle(fd, journal, *(h if h is not None and h.inode == inode else None for h in (before, after)))
                return inode  # made durable by whoever renames it into place
            finally:
                os.close(fd)
        except _Retry:
            time.sleep(pause_s)
        finally:
            os.close(source)
    raise StillWriting(f"{path.name} kept changing for {attempts * pause_s:.0f} s while it was copied: its previous "
                       "writer is still writing it; try again")


class _Retry(Exception):
    pass


def _settle(fd: int, journal: Path, before: Header | None, after: Header | None) -> None:
    """Bring a copy taken between two reads of the source's journal header to the source's last commit,
    or raise _Retry if a commit may have been written in part while the copy was taken."""
    if after is None:
        if before is not None:
            raise _Retry()  # the journal went away meanwhile: its writer finished a commit and stopped
        return  # no journal: nobody was writing this file
    if before is None:
        raise _Retry()
    if after.state == IDLE and before.state == IDLE and after.seq == before.seq:
        os.ftruncate(fd, after.size)  # an epoch being written, not yet committed, is not part of it
        return
    same_commit = before.state == APPLYING and before.seq == after.seq
    commit_began = before.state == IDLE and after.seq == before.seq + 1
    if after.state == APPLYING and (same_commit or commit_began):
        entries = read_entries(journal, after)
        if entries is not None:
            undo(fd, entries, after.size)  # the copy holds part of a commit cut short: undo it
            return
    raise _Retry()
