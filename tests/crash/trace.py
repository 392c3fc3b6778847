"""Recording what a workload does to the files of a results folder, byte for byte, from its system calls.

The workload runs under ``strace -f`` (every thread and child process), which logs every call that writes,
truncates, syncs, creates, renames, links or removes, with the whole of every buffer written (``-xx -s``).
Nothing in the pipeline is trusted to report its own writes: HDF5 writes from C, torch.save through Python's
file objects, the journal through ``os.pwrite``; all of them meet the kernel here. Reads are not logged
(their buffers would make the log hundreds of megabytes); the few calls that move a file position without
writing (``lseek``) are, and every ``lseek`` result is checked against the position the recorder expects, so
that a read it did not see cannot silently misplace a write.

:func:`parse` turns the log into :class:`Op` s on the folder's files, named by *inode* (``Op.inode``, an id
of the recorder's own) rather than by path, as a file system sees them: data operations on an inode
(``write``, ``truncate``), ``fsync`` of an inode (a file's or a directory's), and directory operations
(``add``, ``remove``, ``rename`` of an entry). ``mark`` operations are lines the workload wrote to its marks
file (``MARK begin trial install`` ...), in order with the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

TRACED = ("openat,open,creat,close,write,pwrite64,writev,pwritev,pwritev2,lseek,ftruncate,truncate,fsync,fdatasync,"
          "sync,syncfs,sync_file_range,rename,renameat,renameat2,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,"
          "copy_file_range,sendfile,dup,dup2,dup3,fcntl,clone,clone3,fork,vfork,execve,fallocate,mmap,newfstatat,"
          "fstat,statx")
# Larger than any single write of the smoke workloads; a longer one would be cut, and is refused.
STRING_LIMIT = 1 << 29


class TraceError(RuntimeError):
    """The log holds something the recorder cannot model faithfully: it stops rather than guess."""


@dataclass
class Op:
    kind: str  # write, truncate, fsync, add, remove, rename, mark
    inode: int = -1  # the file (write, truncate, fsync) or the directory (add, remove, rename)
    offset: int = 0
    data: bytes = b""
    size: int = 0
    name: str = ""  # the entry (add, remove; rename: the old name)
    new_name: str = ""  # rename
    target: int = -1  # add, rename: the inode the entry names (rename: the one renamed)
    text: str = ""  # mark
    is_dir: bool = False  # add: a new directory


@dataclass
class Inode:
    is_dir: bool
    content: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)  # a directory's
    number: int | None = None  # the real st_ino when the workload ran (journal headers name it)
    device: int | None = None


@dataclass
class Recording:
    """The operations on the folder's files, and the folder as the workload left it (for checks)."""

    ops: list[Op]
    inodes: dict[int, Inode]  # their final state
    root: int  # the folder's own inode id


class _Description:
    """An open file description: what dup'd descriptors and forked processes share."""

    def __init__(self, inode: int | None, append: bool, writable: bool):
        self.inode, self.append, self.writable, self.position = inode, append, writable, 0


_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^([a-z0-9_]+)\((.*)\)\s+=\s+(-?\d+|0x[0-9a-f]+|\?)(.*)$", re.S)
_HEX = re.compile(r'"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?')
_FD = re.compile(r"^(-?\d+|AT_FDCWD)(?:<((?:\\x[0-9a-f]{2})*)>)?$")


def _bytes(text: str) -> bytes:
    match = _HEX.fullmatch(text.strip())
    if match is None:
        raise TraceError(f"not a string: {text[:80]!r}")
    if match.group(2):
        raise TraceError("a write longer than strace's string limit: raise STRING_LIMIT")
    return bytes.fromhex(match.group(1).replace("\\x", ""))


def _text(text: str) -> str:
    return os.fsdecode(_bytes(text))


def _split(args: str) -> list[str]:
    """Top-level arguments of a call (strings, arrays, structures and <path> annotations kept whole)."""
    parts, depth, start, quoted, i = [], 0, 0, False, 0
    while i < len(args):
        c = args[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "[{(<":
            depth += 1
        elif c in "]})>":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
        i += 1
    parts.append(args[start:].strip())
    return parts


class _Recorder:
    def __init__(self, root: Path, marks: Path):
        self.root, self.marks = os.path.normpath(root), os.path.normpath(marks)
        self.inodes: dict[int, Inode] = {0: Inode(True)}
        self.next_inode = 1
        self.ops: list[Op] = []
        self.tables: dict[int, dict[int, _Description | None]] = {}  # pid -> fd -> description (None: marks)
        self.cloexec: dict[int, set[int]] = {}
        self.pending: dict[int, str] = {}

    # -- paths -----------------------------------------------------------------------------------------
    def _inside(self, path: str) -> str | None:
        """The path relative to the folder ('' for the folder itself), or None outside it."""
        path = os.path.normpath(path)
        if path == self.root:
            return ""
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1:]
        return None

    def _lookup(self, relative: str) -> int | None:
        inode = 0
        for part in relative.split("/") if relative else []:
            entries = self.inodes[inode].entries
            if part not in entries:
                return None
            inode = entries[part]
        return inode

    def _parent(self, relative: str) -> tuple[int, str]:
        head, _, name = relative.rpartition("/")
        parent = self._lookup(head)
        if parent is None or not self.inodes[parent].is_dir:
            raise TraceError(f"no directory for {relative!r}")
        return parent, name

    def _path_arg(self, pid: int, dirfd: str, path: str) -> str:
        """An absolute path from a (dirfd, path) pair; -y names the dirfd's path."""
        path_text = _text(path)
        if path_text.startswith("/"):
            return path_text
        match = _FD.match(dirfd)
        if match is None or match.group(2) is None:
            raise TraceError(f"a relative path without its directory: {dirfd} {path_text}")
        return os.path.join(_text('"' + match.group(2) + '"'), path_text)

    # -- descriptors -------------------------------------------------------------------------------------
    def _table(self, pid: int) -> dict[int, _Description | None]:
        return self.tables.setdefault(pid, {})

    def _description(self, pid: int, fd_arg: str) -> _Description | None:
        match = _FD.match(fd_arg)
        if match is None or match.group(1) == "AT_FDCWD":
            return None
        return self._table(pid).get(int(match.group(1)))

    def _is_marks(self, pid: int, fd_arg: str) -> bool:
        match = _FD.match(fd_arg)
        return bool(match and match.group(1) != "AT_FDCWD" and int(match.group(1)) in self._table(pid)
                    and self._table(pid)[int(match.group(1))] is None)

    # -- the model -----------------------------------------------------------------------------------------
    def _emit(self, op: Op) -> None:
        self.ops.append(op)
        if op.kind == "write":
            content = self.inodes[op.inode].content
            end = op.offset + len(op.data)
            if len(content) < op.offset:
                content.extend(bytes(op.offset - len(content)))
            content[op.offset:end] = op.data
        elif op.kind == "truncate":
            content = self.inodes[op.inode].content
            if op.size < len(content):
                del content[op.size:]
            else:
                content.extend(bytes(op.size - len(content)))
        elif op.kind == "add":
            self.inodes[op.inode].entries[op.name] = op.target
        elif op.kind == "remove":
            del self.inodes[op.inode].entries[op.name]
        elif op.kind == "rename":
            entries = self.inodes[op.inode].entries
            entries[op.new_name] = entries.pop(op.name)

    def _new_inode(self, is_dir: bool) -> int:
        number = self.next_inode
        self.next_inode += 1
        self.inodes[number] = Inode(is_dir)
        return number

    def _apply_write(self, description: _Description, data: bytes, offset: int | None) -> None:
        assert description.inode is not None
        if offset is None:
            offset = len(self.inodes[description.inode].content) if description.append else description.position
            description.position = offset + len(data)
        if data:
            self._emit(Op("write", description.inode, offset=offset, data=data))

    # -- calls ---------------------------------------------------------------------------------------------
    def line(self, raw: str) -> None:
        match = _LINE.match(raw)
        if match is None:
            return
        pid, rest = int(match.group(1)), match.group(2)
        if rest.startswith("+++") or rest.startswith("---"):
            return
        if rest.endswith("<unfinished ...>"):
            self.pending[pid] = rest[: -len("<unfinished ...>")]
            return
        if rest.startswith("<..."):
            head = self.pending.pop(pid, None)
            if head is None:
                raise TraceError(f"a resumed call that never began: {rest[:80]}")
            rest = head + rest.split("resumed>", 1)[1]
        call = _CALL.match(rest)
        if call is None:
            if "= ?" in rest:
                return  # a call cut short by the process's exit: it had no effect to record
            raise TraceError(f"unparsed line: {rest[:120]}")
        name, args, result = call.group(1), _split(call.group(2)), call.group(3)
        if result == "?" or (not result.startswith("0x") and int(result) < 0):
            return
        value = int(result, 16) if result.startswith("0x") else int(result)
        handler = getattr(self, "_" + name, None)
        if handler is not None:
            handler(pid, args, value, call.group(4))

    def _open_common(self, pid: int, path: str, flags: str, fd: int) -> None:
        table = self._table(pid)
        cloexec = self.cloexec.setdefault(pid, set())
        if "O_CLOEXEC" in flags:
            cloexec.add(fd)
        else:
            cloexec.discard(fd)
        if os.path.normpath(path) == self.marks:
            table[fd] = None
            return
        relative = self._inside(path)
        if relative is None:
            table.pop(fd, None)
            return
        inode = self._lookup(relative)
        if inode is None:
            if "O_CREAT" not in flags:
                raise TraceError(f"opened {relative!r}, which the recorder never saw made")
            parent, entry = self._parent(relative)
            inode = self._new_inode("O_DIRECTORY" in flags)
            self._emit(Op("add", parent, name=entry, target=inode))
        elif "O_TRUNC" in flags and not self.inodes[inode].is_dir:
            self._emit(Op("truncate", inode, size=0))
        table[fd] = _Description(inode, "O_APPEND" in flags, "O_WRONLY" in flags or "O_RDWR" in flags)

    def _openat(self, pid, args, fd, _):
        self._open_common(pid, self._path_arg(pid, args[0], args[1]), args[2], fd)

    def _open(self, pid, args, fd, _):
        self._open_common(pid, self._path_arg(pid, "AT_FDCWD", args[0]), args[1], fd)

    def _creat(self, pid, args, fd, _):
        self._open_common(pid, self._path_arg(pid, "AT_FDCWD", args[0]), "O_CREAT|O_TRUNC|O_WRONLY", fd)

    def _close(self, pid, args, value, _):
        self._table(pid).pop(int(_FD.match(args[0]).group(1)), None)

    def _dup_to(self, pid: int, old: str, new: int, cloexec: bool) -> None:
        table = self._table(pid)
        source = int(_FD.match(old).group(1))
        if source in table:
            table[new] = table[source]
        else:
            table.pop(new, None)
        (self.cloexec.setdefault(pid, set()).add if cloexec else self.cloexec.setdefault(pid, set()).discard)(new)

    def _dup(self, pid, args, value, _):
        self._dup_to(pid, args[0], value, False)

    def _dup2(self, pid, args, value, _):
        self._dup_to(pid, args[0], value, False)

    def _dup3(self, pid, args, value, _):
        self._dup_to(pid, args[0], value, "O_CLOEXEC" in args[2])

    def _fcntl(self, pid, args, value, _):
        if args[1].startswith("F_DUPFD"):
            self._dup_to(pid, args[0], value, args[1] == "F_DUPFD_CLOEXEC")
        elif args[1] == "F_SETFD":
            fd = int(_FD.match(args[0]).group(1))
            (self.cloexec.setdefault(pid, set()).add if "FD_CLOEXEC" in args[2] else
             self.cloexec.setdefault(pid, set()).discard)(fd)

    def _fork_to(self, pid: int, child: int, shares_table: bool) -> None:
        if shares_table:
            self.tables[child] = self._table(pid)
            self.cloexec[child] = self.cloexec.setdefault(pid, set())
        else:
            self.tables[child] = dict(self._table(pid))
            self.cloexec[child] = set(self.cloexec.get(pid, set()))

    def _clone(self, pid, args, value, _):
        self._fork_to(pid, value, any("CLONE_FILES" in a for a in args))

    def _clone3(self, pid, args, value, _):
        self._fork_to(pid, value, "CLONE_FILES" in args[0])

    def _fork(self, pid, args, value, _):
        self._fork_to(pid, value, False)

    _vfork = _fork

    def _execve(self, pid, args, value, _):
        table = dict(self._table(pid))  # a thread group that execs leaves the shared table to itself
        for fd in self.cloexec.get(pid, set()):
            table.pop(fd, None)
        self.tables[pid] = table
        self.cloexec[pid] = set()

    def _lseek(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is None:
            return
        checked = description.writable and not description.append  # a read-only descriptor writes nothing
        if checked and args[2] == "SEEK_CUR" and int(args[1]) == 0 and value != description.position:
            raise TraceError(f"the position of a traced file moved unseen ({description.position} -> {value}): a "
                             "read the recorder does not log")
        description.position = value

    def _ftruncate(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._emit(Op("truncate", description.inode, size=int(args[1])))

    def _truncate(self, pid, args, value, _):
        relative = self._inside(self._path_arg(pid, "AT_FDCWD", args[0]))
        if relative is not None:
            self._emit(Op("truncate", self._lookup(relative), size=int(args[1])))

    def _fsync(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._emit(Op("fsync", description.inode))

    _fdatasync = _fsync

    def _sync(self, pid, args, value, _):
        for inode in list(self.inodes):
            self._emit(Op("fsync", inode))

    _syncfs = _sync

    def _sync_file_range(self, pid, args, value, _):
        if self._description(pid, args[0]) is not None:
            raise TraceError("sync_file_range on a traced file: its guarantees are not modelled")

    def _pwrite64(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._apply_write(description, _bytes(args[1])[:value], int(args[3]))
        elif self._is_marks(pid, args[0]):
            self._mark(_bytes(args[1])[:value])

    def _write(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._apply_write(description, _bytes(args[1])[:value], None)
        elif self._is_marks(pid, args[0]):
            self._mark(_bytes(args[1])[:value])

    def _writev(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._apply_write(description, self._iovec(args[1], value), None)
        elif self._is_marks(pid, args[0]):
            self._mark(self._iovec(args[1], value))

    def _pwritev(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._apply_write(description, self._iovec(args[1], value), int(args[3]))

    _pwritev2 = _pwritev

    @staticmethod
    def _iovec(text: str, length: int) -> bytes:
        return b"".join(_bytes(m.group(0)) for m in _HEX.finditer(text))[:length]

    def _write_data(self, description: _Description, data: bytes, offset: int | None) -> None:
        self._apply_write(description, data, offset)

    def _mark(self, data: bytes) -> None:
        for line in data.decode().splitlines():
            if line.startswith("MARK "):
                self._emit(Op("mark", text=line[5:]))

    def _copy_file_range(self, pid, args, value, _):
        source, target = self._description(pid, args[0]), self._description(pid, args[2])
        if target is None:
            return
        if source is None:
            raise TraceError("copy_file_range into a traced file from one that is not traced")
        if args[1] != "NULL" or args[3] != "NULL":
            raise TraceError("copy_file_range with explicit offsets is not modelled")
        content = self.inodes[source.inode].content
        data = bytes(content[source.position: source.position + value])
        source.position += value
        self._apply_write(target, data, None)

    def _sendfile(self, pid, args, value, _):
        if self._description(pid, args[0]) is not None:
            raise TraceError("sendfile into a traced file is not modelled")

    def _fallocate(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is None:
            return
        if args[1] != "0":
            raise TraceError(f"fallocate mode {args[1]} on a traced file is not modelled")
        end = int(args[2]) + int(args[3])
        if end > len(self.inodes[description.inode].content):
            self._emit(Op("truncate", description.inode, size=end))

    def _mmap(self, pid, args, value, _):
        if "MAP_SHARED" in args[3] and "PROT_WRITE" in args[2] and self._description(pid, args[4]) is not None:
            raise TraceError("a shared writable mapping of a traced file is not modelled")

    def _entry_op(self, kind: str, absolute: str, is_dir: bool = False) -> None:
        relative = self._inside(absolute)
        if relative is None or relative == "":
            return
        parent, entry = self._parent(relative)
        if kind == "add":
            self._emit(Op("add", parent, name=entry, target=self._new_inode(is_dir), is_dir=is_dir))
        else:
            self._emit(Op("remove", parent, name=entry))

    def _mkdir(self, pid, args, value, _):
        self._entry_op("add", self._path_arg(pid, "AT_FDCWD", args[0]), is_dir=True)

    def _mkdirat(self, pid, args, value, _):
        self._entry_op("add", self._path_arg(pid, args[0], args[1]), is_dir=True)

    def _rmdir(self, pid, args, value, _):
        self._entry_op("remove", self._path_arg(pid, "AT_FDCWD", args[0]))

    def _unlink(self, pid, args, value, _):
        self._entry_op("remove", self._path_arg(pid, "AT_FDCWD", args[0]))

    def _unlinkat(self, pid, args, value, _):
        self._entry_op("remove", self._path_arg(pid, args[0], args[1]))

    def _rename_paths(self, old: str, new: str) -> None:
        old_rel, new_rel = self._inside(old), self._inside(new)
        if old_rel is None and new_rel is None:
            return
        if old_rel is None or new_rel is None:
            raise TraceError(f"a rename into or out of the folder is not modelled: {old} -> {new}")
        old_parent, old_name = self._parent(old_rel)
        new_parent, new_name = self._parent(new_rel)
        if old_parent != new_parent:
            raise TraceError(f"a rename across directories is not modelled: {old_rel} -> {new_rel}")
        target = self.inodes[old_parent].entries.get(old_name)
        if target is None:
            raise TraceError(f"renamed {old_rel!r}, which the recorder never saw made")
        self._emit(Op("rename", old_parent, name=old_name, new_name=new_name, target=target))

    def _rename(self, pid, args, value, _):
        self._rename_paths(self._path_arg(pid, "AT_FDCWD", args[0]), self._path_arg(pid, "AT_FDCWD", args[1]))

    def _renameat(self, pid, args, value, _):
        self._rename_paths(self._path_arg(pid, args[0], args[1]), self._path_arg(pid, args[2], args[3]))

    def _renameat2(self, pid, args, value, _):
        if args[4] not in ("0", ""):
            raise TraceError(f"renameat2 flags {args[4]} are not modelled")
        self._renameat(pid, args, value, _)

    def _link_paths(self, old: str, new: str) -> None:
        old_rel, new_rel = self._inside(old), self._inside(new)
        if new_rel is None:
            return
        if old_rel is None:
            raise TraceError(f"a link into the folder from outside it is not modelled: {old}")
        inode = self._lookup(old_rel)
        parent, entry = self._parent(new_rel)
        self._emit(Op("add", parent, name=entry, target=inode))

    def _link(self, pid, args, value, _):
        self._link_paths(self._path_arg(pid, "AT_FDCWD", args[0]), self._path_arg(pid, "AT_FDCWD", args[1]))

    def _linkat(self, pid, args, value, _):
        self._link_paths(self._path_arg(pid, args[0], args[1]), self._path_arg(pid, args[2], args[3]))

    def _stat_result(self, relative: str | None, inode: int | None, text: str) -> None:
        if inode is None:
            if relative is None:
                return
            inode = self._lookup(relative)
            if inode is None:
                return
        number = re.search(r"\bst(?:x)?_ino=(\d+)", text)
        device = re.search(r"\bst_dev=makedev\((0x[0-9a-f]+), (0x[0-9a-f]+|\d+)\)", text)
        if number:
            self.inodes[inode].number = int(number.group(1))
        if device:
            self.inodes[inode].device = os.makedev(int(device.group(1), 16), int(device.group(2), 0))

    def _newfstatat(self, pid, args, value, _):
        if _text(args[1]) == "":
            description = self._description(pid, args[0])
            if description is not None:
                self._stat_result(None, description.inode, args[2])
            return
        self._stat_result(self._inside(self._path_arg(pid, args[0], args[1])), None, args[2])

    def _fstat(self, pid, args, value, _):
        description = self._description(pid, args[0])
        if description is not None:
            self._stat_result(None, description.inode, args[1])

    def _statx(self, pid, args, value, _):
        if _text(args[1]) == "":
            description = self._description(pid, args[0])
            if description is not None:
                self._stat_result(None, description.inode, args[4])
            return
        self._stat_result(self._inside(self._path_arg(pid, args[0], args[1])), None, args[4])


def parse(log: Path, root: Path, marks: Path) -> Recording:
    recorder = _Recorder(root, marks)
    with open(log, encoding="ascii", errors="strict") as handle:
        for raw in handle:
            recorder.line(raw.rstrip("\n"))
    return Recording(recorder.ops, recorder.inodes, 0)


def record(argv: list[str], root: Path, marks: Path, log: Path, env: dict | None = None,
           cwd: Path | None = None) -> Recording:
    """Run ``argv`` under strace (the folder ``root`` made empty first) and parse what it did to the folder."""
    if shutil.which("strace") is None:
        raise TraceError("strace is not installed (apt-get install strace)")
    root, marks = Path(root), Path(marks)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    marks.unlink(missing_ok=True)
    command = ["strace", "-f", "-y", "-v", "-xx", "-s", str(STRING_LIMIT), "--seccomp-bpf", "-o", str(log),
               "-e", f"trace={TRACED}", *argv]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if result.returncode != 0:
        raise TraceError(f"the workload failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    recording = parse(log, root, marks)
    _check_against_disk(recording, root)
    return recording


def _check_against_disk(recording: Recording, root: Path) -> None:
    """The recorder's final picture of the folder must be the folder, byte for byte."""
    def walk(inode: int, path: Path) -> None:
        node = recording.inodes[inode]
        names = sorted(p.name for p in path.iterdir())
        if names != sorted(node.entries):
            raise TraceError(f"{path}: on disk {names}, recorded {sorted(node.entries)}")
        for name, child in node.entries.items():
            if recording.inodes[child].is_dir:
                walk(child, path / name)
            elif (path / name).read_bytes() != bytes(recording.inodes[child].content):
                raise TraceError(f"{path / name}: the recorded bytes differ from the file's")

    walk(recording.root, root)
