"""All-or-nothing writes to a trial file: a full disk, a kill or a frozen process never leaves half an epoch.

HDF5 is not crash-safe: a write that fails half-way (ENOSPC from a quota that ``df`` does not show, a
kill, a node that freezes in the middle of a close) can leave metadata that points at data never
written, and the file unreadable. Every write to a trial file therefore goes through a *transaction*
(:func:`transaction`), with HDF5 reading and writing the file through :class:`StagedFile`:

- bytes past the file's committed end (new chunks, new metadata) are written straight to the file:
  until the commit they are referenced by nothing, and cutting the file back drops them;
- bytes inside the committed file (metadata, partly filled chunks, attributes) are held in memory;
- at the commit, the original bytes they replace are saved in the *journal*
  (``<trial_id>.h5.journal``, one per owner) and made durable, the journal says "applying" (durably), the
  held bytes are written, the file is made durable, and the journal says "idle" again (durably).

Every step is made durable before the next (``pipeline.durable``), on every file system: a node that dies
keeps only what was synced, in any order, and a commit must never be durable in part without its undo
entries (``tests/crash`` checks every state a crash can leave). A commit that returned is durable.

A failure before the commit (the HDF5 write that hit a full disk, or anything else) cuts the file back
to its committed end: nothing committed was touched. A failure or a kill while the held bytes are
written is undone from the journal, by this process or by the next owner
(``pipeline.trialfile.copying.consistent_copy``).
Once the file is durable the commit stands: a journal that then cannot say "idle" (a full disk) is emptied
instead, which needs no space, and an empty journal is read as "nothing to undo". The journal's header
names the file's inode, so that a journal never undoes another file.

A new owner never writes the file it takes over in place: it takes a ``copying.consistent_copy`` (the
file as of its last commit, whatever its previous writer is doing meanwhile), works on the copy and
renames it into place. A writer that froze and wakes up later writes only into the orphaned inode.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py

from pipeline import durable
from pipeline.folder import journal_of

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

IDLE, APPLYING = 0, 1
_MAGIC = b"PLJRNL01"
# magic, state, seq, inode, device, size (committed end: before the transaction while applying, after it
# when idle), length and checksum of the undo entries that follow the header; then the header's checksum.
_HEADER = struct.Struct("<8sIQQQQQI")
_HEADER_SIZE = _HEADER.size + 4
_ENTRY = struct.Struct("<QQ")
class FileReplaced(RuntimeError):
    """The trial file at the path is no longer the one this process owns (another owner installed its
    own copy): nothing may be written."""


@dataclass(frozen=True)
class Header:
    state: int
    seq: int
    inode: int
    device: int
    size: int
    entries_length: int
    entries_crc: int


def journal_path(path: Path) -> Path:
    return journal_of(Path(path))


def _pack(header: Header) -> bytes:
    body = _HEADER.pack(_MAGIC, header.state, header.seq, header.inode, header.device, header.size,
                        header.entries_length, header.entries_crc)
    return body + struct.pack("<I", zlib.crc32(body))


def _header_at(fd: int) -> Header | None:
    raw = os.pread(fd, _HEADER_SIZE, 0)
    if len(raw) != _HEADER_SIZE or zlib.crc32(raw[:-4]) != struct.unpack("<I", raw[-4:])[0]:
        return None
    magic, *values = _HEADER.unpack(raw[:-4])
    return Header(*values) if magic == _MAGIC else None


def _entries_at(fd: int, header: Header) -> list[tuple[int, bytes]] | None:
    """The undo entries the header vouches for; None if they are not there whole."""
    raw = os.pread(fd, header.entries_length, _HEADER_SIZE)
    if len(raw) != header.entries_length or zlib.crc32(raw) != header.entries_crc:
        return None
    entries, position = [], 0
    while position < len(raw):
        offset, length = _ENTRY.unpack_from(raw, position)
        position += _ENTRY.size
        entries.append((offset, raw[position : position + length]))
        position += length
    return entries


def read_header(path: Path) -> Header | None:
    """The journal's header, or None if there is no journal or its header is not whole."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _header_at(fd)
    finally:
        os.close(fd)


def read_entries(path: Path, header: Header) -> list[tuple[int, bytes]] | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _entries_at(fd, header)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def undo(fd: int, entries: list[tuple[int, bytes]], size: int) -> None:
    """Put back the bytes a transaction replaced and cut off what it appended."""
    for offset, original in entries:
        _pwrite_all(fd, original, offset)
    os.ftruncate(fd, size)
    durable.sync(fd)


def _idle(stat: os.stat_result, seq: int = 0) -> bytes:
    return _pack(Header(IDLE, seq, stat.st_ino, stat.st_dev, stat.st_size, 0, zlib.crc32(b"")))


def start_journal(path: Path, token: str) -> None:
    """Give the file now at ``path`` (just installed by its owner, its bytes durable) a journal of its own,
    and make both names durable. The journal is a new inode, so that a previous owner still holding the old
    journal open writes only into that one."""
    target = journal_path(path)
    tmp = target.with_name(f".{target.name}.{token}.tmp")
    try:
        durable.write_new(tmp, _idle(os.stat(path)))
        durable.replace(tmp, target)  # the directory's sync also makes the file's own rename durable
    finally:
        tmp.unlink(missing_ok=True)


def remove_journal(path: Path, inode: int) -> None:
    """Remove the journal if it is this file's and idle, or emptied (the trial is done with for now)."""
    target = journal_path(path)
    header = read_header(target)
    if header is not None and header.inode == inode and header.state == IDLE:
        target.unlink(missing_ok=True)
    elif header is None and _is_empty(target):
        target.unlink(missing_ok=True)


def _is_empty(path: Path) -> bool:
    try:
        return os.stat(path).st_size == 0
    except FileNotFoundError:
        return False


class StagedFile(io.RawIOBase):
    """What HDF5 reads and writes during a transaction (h5py's file-object driver): appends go to the
    file, overwrites of committed bytes wait in memory for the commit.

    A write that fails (or is interrupted: a second Ctrl-C) is recorded, not raised: an error inside HDF5's
    close leaves its objects half closed (and the interpreter crashing at exit) or is swallowed by its
    cleanup, whereas a close that succeeds in HDF5's eyes ends cleanly, and the transaction then discards
    the epoch and raises what happened. After the first failure nothing more is written."""

    def __init__(self, fd: int, committed_size: int):
        self.fd, self.committed = fd, committed_size
        self.position = 0
        self.staged: list[list] = []  # [start, bytearray], sorted, neither overlapping nor touching
        self.cut_to: int | None = None  # a truncation below the committed end, applied at the commit
        self.failure: BaseException | None = None  # an OSError, or an interrupt

    # -- io.RawIOBase -------------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset += self._size()
        elif whence == io.SEEK_CUR:
            offset += self.position
        self.position = offset
        return offset

    def tell(self) -> int:
        return self.position

    def _size(self) -> int:
        size = max(os.fstat(self.fd).st_size, self.committed)
        return size if self.cut_to is None else min(size, self.cut_to)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(0, self._size() - self.position)
        start, self.position = self.position, self.position + size
        try:
            data = bytearray(os.pread(self.fd, size, start))
        except BaseException as error:  # noqa: B036 (recorded, and raised where the transaction ends)
            self.failure = self.failure or error
            return bytes(size)
        data.extend(bytes(size - len(data)))  # past the end reads as zeros, as HDF5's POSIX driver does
        end = start + size
        for block_start, block in self.staged:
            if block_start < end and block_start + len(block) > start:
                lo, hi = max(block_start, start), min(block_start + len(block), end)
                data[lo - start : hi - start] = block[lo - block_start : hi - block_start]
        return bytes(data)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def write(self, data: ReadableBuffer) -> int:
        data = memoryview(data).cast("B")
        size, start = len(data), self.position
        self.position += size
        if self.failure is not None:
            return size
        try:
            inside = max(0, min(start + size, self.committed) - start)
            if inside:
                self._stage(start, bytes(data[:inside]))
            if inside < size:
                _pwrite_all(self.fd, data[inside:], start + inside)
        except BaseException as error:  # noqa: B036 (an exception here may be swallowed by HDF5's cleanup:
            self.failure = error       # recorded, the transaction discards the epoch and raises it)
        return size

    def truncate(self, size: int | None = None) -> int:
        size = self.position if size is None else size
        if self.failure is not None:
            return size
        try:
            if size < self.committed:
                self.cut_to = size
                if os.fstat(self.fd).st_size > self.committed:
                    os.ftruncate(self.fd, self.committed)
            else:
                self.cut_to = None
                os.ftruncate(self.fd, size)
        except BaseException as error:  # noqa: B036
            self.failure = error
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:  # the descriptor belongs to the transaction
        super().close()

    # -- staging -------------------------------------------------------------------------------------
    def _stage(self, start: int, data: bytes) -> None:
        merged, block_start = bytearray(data), start
        kept = []
        for other_start, block in self.staged:
            other_end = other_start + len(block)
            if other_end < block_start or other_start > block_start + len(merged):
                kept.append([other_start, block])
                continue
            # Overlapping or touching: one block, the newer bytes winning.
            lo = min(other_start, block_start)
            hi = max(other_end, block_start + len(merged))
            combined = bytearray(hi - lo)
            combined[other_start - lo : other_end - lo] = block
            combined[block_start - lo : block_start - lo + len(merged)] = merged
            merged, block_start = combined, lo
        kept.append([block_start, merged])
        kept.sort(key=lambda item: item[0])
        self.staged = kept

    def undo_entries(self) -> list[tuple[int, bytes]]:
        """The committed bytes the commit will replace (and those a truncation would cut off)."""
        entries = [(start, os.pread(self.fd, len(block), start)) for start, block in self.staged]
        if self.cut_to is not None:
            entries.append((self.cut_to, os.pread(self.fd, self.committed - self.cut_to, self.cut_to)))
        return entries


def _entries_bytes(entries: list[tuple[int, bytes]]) -> bytes:
    return b"".join(_ENTRY.pack(offset, len(data)) + data for offset, data in entries)


class _Journal:
    """The journal a transaction opened with its file: written through that descriptor, so that a writer
    that loses the trial while it commits writes only into its own (by then orphaned) journal."""

    def __init__(self, fd: int):
        self.fd = fd

    def header(self) -> Header | None:
        return _header_at(self.fd)

    def emptied(self) -> bool:
        return os.fstat(self.fd).st_size == 0

    def write(self, header: Header, entries: bytes | None = None) -> None:
        if entries is not None:
            _pwrite_all(self.fd, entries, _HEADER_SIZE)
            os.ftruncate(self.fd, _HEADER_SIZE + len(entries))
            durable.sync(self.fd)  # the undo entries are whole before the header vouches for them
        _pwrite_all(self.fd, _pack(header), 0)
        durable.sync(self.fd)

    def empty(self) -> None:
        """Say "nothing to undo" without needing space: the journal of a commit that is durable in the file."""
        os.ftruncate(self.fd, 0)
        durable.sync(self.fd)

    def recover(self, fd: int, inode: int) -> None:
        """Undo a commit of the file that was cut short (this process's, after a failed write)."""
        header = self.header()
        if header is None or header.inode != inode or header.state != APPLYING:
            return
        entries = _entries_at(self.fd, header)
        if entries is None:
            return  # the header never vouched for them: the commit had not started writing
        undo(fd, entries, header.size)
        self.write(Header(IDLE, header.seq, header.inode, header.device, header.size, header.entries_length,
                          header.entries_crc))


@contextlib.contextmanager
def transaction(path: Path, inode: int | None, still_owner: Callable[[], object]) -> Iterator[h5py.File]:
    """Open the trial file for one all-or-nothing write, yielding an ``h5py.File``.

    ``inode``: the file this process installed (None: none, so any file is another's); ``still_owner()``:
    raises unless this process still owns the trial. Both are checked *after* the file is opened, so that a
    process that stops between the check and its writes holds the file it checked, which a new owner never
    writes (it works on a copy)."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR)
    journal_fd = None
    try:
        if os.fstat(fd).st_ino != inode:
            raise FileReplaced(f"{path.name} is no longer the file this process installed")
        try:
            journal_fd = os.open(journal_path(path), os.O_RDWR)
        except FileNotFoundError:
            raise FileReplaced(f"{path.name} has no journal: another process has taken it over") from None
        still_owner()
        journal = _Journal(journal_fd)
        if journal.emptied():
            # This owner's own commit emptied it (its idle mark could not be written): the file is as of that
            # commit, with nothing appended since. Say so again before anything is appended.
            _pwrite_all(journal_fd, _idle(os.fstat(fd)), 0)
            durable.sync(journal_fd)
        header = journal.header()
        if header is None or header.inode != inode:
            raise FileReplaced(f"the journal of {path.name} belongs to another file")
        journal.recover(fd, inode)
        header = journal.header()
        assert header is not None  # recovery rewrites the header, never removes it
        committed = os.fstat(fd).st_size
        if committed > header.size:  # appended by a transaction that failed: referenced by nothing
            os.ftruncate(fd, header.size)
            committed = header.size
        staged = StagedFile(fd, committed)
        try:
            with h5py.File(staged, "r+") as handle:
                yield handle
        except BaseException as error:
            _abort(fd, staged)
            if staged.failure is not None and isinstance(error, Exception):
                raise staged.failure from error  # what failed first, with its errno (a full disk)
            raise
        if staged.failure is not None:  # a write failed, or was interrupted, inside HDF5's close
            _abort(fd, staged)
            raise staged.failure
        _commit(fd, staged, journal, header)
    finally:
        os.close(fd)
        if journal_fd is not None:
            os.close(journal_fd)


def _abort(fd: int, staged: StagedFile) -> None:
    """Nothing committed was written yet: cutting off the appended bytes restores the last commit."""
    try:
        os.ftruncate(fd, staged.committed)
    except OSError:
        pass  # the next transaction cuts them (the journal knows the committed end)


def _commit(fd: int, staged: StagedFile, journal: _Journal, header: Header) -> None:
    final = staged.cut_to if staged.cut_to is not None else max(os.fstat(fd).st_size, staged.committed)
    entries = staged.undo_entries()
    raw = _entries_bytes(entries)
    applying = Header(APPLYING, header.seq + 1, header.inode, header.device, staged.committed, len(raw),
                      zlib.crc32(raw))
    try:
        journal.write(applying, raw)
    except BaseException:
        _abort(fd, staged)  # nothing committed was touched yet
        raise
    try:
        for start, block in staged.staged:
            _pwrite_all(fd, block, start)
        if staged.cut_to is not None:
            os.ftruncate(fd, staged.cut_to)
        durable.sync(fd)  # the commit is whole and durable before the journal says so
    except BaseException:
        try:
            undo(fd, entries, staged.committed)
            journal.write(Header(IDLE, applying.seq, header.inode, header.device, staged.committed, len(raw),
                                 applying.entries_crc))
        except OSError:
            pass  # the journal still says "applying": the next transaction or owner undoes it
        raise
    try:
        journal.write(Header(IDLE, applying.seq, header.inode, header.device, final, len(raw), applying.entries_crc))
    except OSError:
        # The commit is durable in the file: it must stand, not be undone by the "applying" the journal still
        # says. Emptying the journal needs no space; only if even that fails is the commit undone after all.
        journal.empty()
