"""The states a crash can leave, under stated persistence models, at every point of a recording.

A file system keeps, for every inode, what was made durable (its bytes at its last ``fsync``; a directory's
entries at the directory's last ``fsync``) and what is only in memory: the operations issued since. A node
that dies keeps the durable part and *some* of the rest. Which part is the persistence model:

``kill``     the process dies, the machine does not: every operation issued reached the file system (the
             page cache outlives the process). One state per crash point.
``prefix``   the machine dies. Each file keeps its un-synced data operations as any prefix, in the order
             they were issued; each directory keeps its un-synced entry operations (create, link, rename,
             remove) as any prefix; files and directories independently (a file's bytes can be durable
             while the directory entry that names it is not, and the other way round).
``blocks``   the pessimistic model: each 4 KiB block that un-synced operations touched holds any version it
             had since the last ``fsync`` (any subset of blocks, in any order, torn at block boundaries),
             the file's size any size it had since; a directory keeps any subset of its un-synced entry
             operations.

``fsync`` of a file makes its bytes and size durable (not its name); ``fsync`` of a directory makes its
entries durable. :func:`crash_states` yields, for a crash after operation k, the states of the files a check
cares about: every state of the model when there are at most ``limit`` of them, else ``limit`` of them
chosen at random (seeded by k) together with the structured ones (everything durable only, everything
issued, each file's every prefix); the caller counts which.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .trace import Op, Recording

BLOCK = 4096
MODELS = ("kill", "prefix", "blocks")


@dataclass(frozen=True)
class State:
    """A folder after a crash: relative path -> (inode id, bytes) for files; the directories that exist."""

    files: tuple[tuple[str, int, bytes], ...]
    dirs: tuple[str, ...]

    def digest(self) -> str:
        hasher = hashlib.sha1()
        for path in self.dirs:
            hasher.update(b"d" + path.encode() + b"\0")
        links: dict[int, str] = {}
        for path, inode, content in self.files:
            first = links.setdefault(inode, path)  # hard links: the same bytes under two names
            hasher.update(b"f" + path.encode() + b"\0" + first.encode() + b"\0")
            hasher.update(hashlib.sha1(content).digest())
        return hasher.hexdigest()

    def file(self, path: str) -> bytes | None:
        for name, _, content in self.files:
            if name == path:
                return content
        return None


class _FileComponent:
    """The un-synced history of one file: its durable bytes and the data operations issued since."""

    def __init__(self, inode: int, durable: bytes, pending: list[Op]):
        self.inode, self.durable, self.pending = inode, durable, pending
        self._prefixes: dict[int, bytes] = {}

    def prefix(self, count: int) -> bytes:
        if count not in self._prefixes:
            content = bytearray(self.durable)
            for op in self.pending[:count]:
                _apply_data(content, op)
            self._prefixes[count] = bytes(content)
        return self._prefixes[count]

    def havoc(self, size_count: int, seed: int) -> bytes:
        """Not a state of any model: the file with its size as after ``size_count`` operations and every byte
        that un-synced operations wrote (or zeroed, cut and extended again) filled with random bytes: the
        bytes whose value differs between the states of the block model. A recovery that gives the same
        outcome for this as for the real versions never used them (see ``block_families``)."""
        content = bytearray(self.prefix(size_count))
        rng = random.Random(seed)
        for lo, hi in self._unsettled():
            hi = min(hi, len(content))
            if lo < hi:
                content[lo:hi] = rng.randbytes(hi - lo)
        return bytes(content)

    def _unsettled(self) -> list[tuple[int, int]]:
        ranges, size = [], len(self.durable)
        largest = max([size] + [len(self.prefix(n)) for n in range(len(self.pending) + 1)])
        for op in self.pending:
            if op.kind == "write":
                ranges.append((op.offset, op.offset + len(op.data)))
            elif op.size < largest:
                ranges.append((op.size, largest))
        return ranges

    # -- the block model -------------------------------------------------------------------------------
    def _touches(self, op: Op, block: int) -> bool:
        lo, hi = block * BLOCK, (block + 1) * BLOCK
        if op.kind == "write":
            return op.offset < hi and op.offset + len(op.data) > lo
        return op.size < hi  # a truncation zeroes (or cuts) what lies beyond its size

    def block_plan(self) -> tuple[list[int], dict[int, list[int]]]:
        """(the distinct sizes it had, as the prefix counts that reach them; block -> the prefix counts after
        which the block changed, 0 included)."""
        if not hasattr(self, "_plan"):
            self._plan = self._block_plan()
        return self._plan

    def _block_plan(self) -> tuple[list[int], dict[int, list[int]]]:
        sizes, size, seen = [0], len(self.durable), {len(self.durable)}
        for count, op in enumerate(self.pending, 1):
            size = _size_after(size, op)
            if size not in seen:
                seen.add(size)
                sizes.append(count)
        largest = max(len(self.prefix(c)) for c in sizes) if sizes else len(self.durable)
        largest = max(largest, len(self.durable), *(op.offset + len(op.data) for op in self.pending if op.kind == "write"))
        versions: dict[int, list[int]] = {}
        for block in range((largest + BLOCK - 1) // BLOCK):
            counts = [0] + [count for count, op in enumerate(self.pending, 1) if self._touches(op, block)]
            if len(counts) > 1:
                versions[block] = counts
        return sizes, versions

    def blocks(self, size_count: int, chosen: dict[int, int]) -> bytes:
        """The file with its size as after ``size_count`` operations and each block in ``chosen`` as after
        that many operations (the others as after ``size_count``)."""
        base = bytearray(self.prefix(size_count))
        size = len(base)
        for block, count in chosen.items():
            lo = block * BLOCK
            if lo >= size:
                continue
            version = self.prefix(count)[lo: lo + BLOCK]
            version = version + bytes(BLOCK - len(version))
            base[lo: min(size, lo + BLOCK)] = version[: min(size, lo + BLOCK) - lo]
        return bytes(base)


def _size_after(size: int, op: Op) -> int:
    if op.kind == "write":
        return max(size, op.offset + len(op.data))
    return op.size


def _apply_data(content: bytearray, op: Op) -> None:
    if op.kind == "write":
        if len(content) < op.offset:
            content.extend(bytes(op.offset - len(content)))
        content[op.offset: op.offset + len(op.data)] = op.data
    elif op.kind == "truncate":
        if op.size < len(content):
            del content[op.size:]
        else:
            content.extend(bytes(op.size - len(content)))


def _apply_entry(entries: dict[str, int], op: Op) -> None:
    """An entry operation, as a file system that persisted it alone would: skipped where it cannot apply."""
    if op.kind == "add":
        entries[op.name] = op.target
    elif op.kind == "remove":
        entries.pop(op.name, None)
    elif op.kind == "rename" and op.name in entries:
        entries[op.new_name] = entries.pop(op.name)


class Timeline:
    """Replays a recording; at each crash point, what is durable and what is pending."""

    def __init__(self, recording: Recording):
        self.recording = recording
        self.ops = recording.ops

    def walk(self, marks: bool = False) -> Iterator[tuple[int, _Snapshot]]:
        """(k, the file system after operation k) for every operation (marks only if asked); k = -1 before the
        first, k = len(ops) after the last and every mark."""
        snapshot = _Snapshot(self.recording)
        yield -1, snapshot
        for k, op in enumerate(self.ops):
            snapshot.apply(op)
            if marks or op.kind != "mark":
                yield k, snapshot
        yield len(self.ops), snapshot


class _Snapshot:
    def __init__(self, recording: Recording):
        self.is_dir = {i: node.is_dir for i, node in recording.inodes.items()}
        self.latest: dict[int, bytearray] = {i: bytearray() for i, d in self.is_dir.items() if not d}
        self.entries: dict[int, dict[str, int]] = {i: {} for i, d in self.is_dir.items() if d}
        self.durable: dict[int, bytes] = {i: b"" for i in self.latest}
        self.durable_entries: dict[int, dict[str, int]] = {i: {} for i in self.entries}
        self.pending: dict[int, list[Op]] = {}
        self.root = recording.root

    def apply(self, op: Op) -> None:
        if op.kind in ("write", "truncate"):
            _apply_data(self.latest[op.inode], op)
            self.pending.setdefault(op.inode, []).append(op)
        elif op.kind in ("add", "remove", "rename"):
            _apply_entry(self.entries[op.inode], op)
            self.pending.setdefault(op.inode, []).append(op)
        elif op.kind == "fsync":
            if self.is_dir[op.inode]:
                self.durable_entries[op.inode] = dict(self.entries[op.inode])
            else:
                self.durable[op.inode] = bytes(self.latest[op.inode])
            self.pending.pop(op.inode, None)

    def latest_names(self) -> dict[int, set[str]]:
        """inode -> its paths now (directories included; the folder is '')."""
        names: dict[int, set[str]] = {self.root: {""}}
        frontier = [(self.root, "")]
        while frontier:
            inode, path = frontier.pop()
            for name, child in self.entries[inode].items():
                child_path = _join(path, name)
                names.setdefault(child, set()).add(child_path)
                if self.is_dir[child]:
                    frontier.append((child, child_path))
        return names

    # -- the kill model --------------------------------------------------------------------------------
    def latest_state(self, wanted: Callable[[str], bool]) -> State:
        return self._state(wanted, lambda inode: self.entries[inode], lambda inode: bytes(self.latest[inode]))

    def _state(self, wanted, entries_of, content_of) -> State:
        files, dirs = [], []

        def walk(inode: int, path: str) -> None:
            for name, child in sorted(entries_of(inode).items()):
                child_path = f"{path}/{name}" if path else name
                if not wanted(child_path):
                    continue
                if self.is_dir[child]:
                    dirs.append(child_path)
                    walk(child, child_path)
                else:
                    files.append((child_path, child, content_of(child)))

        walk(self.root, "")
        return State(tuple(files), tuple(dirs))

    # -- crash states ----------------------------------------------------------------------------------
    def components(self, wanted: Callable[[str], bool]) -> tuple[list[_FileComponent], dict[int, list[Op]]]:
        """The files with un-synced operations that a state under ``wanted`` can show, and the directories
        with un-synced entry operations on such names."""
        names = self._names()
        files = [_FileComponent(inode, self.durable[inode], ops) for inode, ops in sorted(self.pending.items())
                 if not self.is_dir[inode] and any(wanted(p) for p in names.get(inode, ()))]
        dirs = {}
        for inode, ops in sorted(self.pending.items()):
            if self.is_dir[inode]:
                prefix = names.get(inode, {""} if inode == self.root else set())
                kept = [op for op in ops if any(wanted(_join(p, n)) for p in prefix for n in (op.name, op.new_name) if n)]
                if kept:
                    dirs[inode] = kept
        return files, dirs

    def _names(self) -> dict[int, set[str]]:
        """Every path an inode has or may have after a crash (latest, durable, or named by a pending op)."""
        names: dict[int, set[str]] = {self.root: {""}}
        frontier = [self.root]
        while frontier:
            inode = frontier.pop()
            for path in list(names[inode]):
                candidates = dict(self.entries[inode])
                candidates.update(self.durable_entries[inode])
                pairs = list(candidates.items())
                for op in self.pending.get(inode, []):
                    if op.kind == "add":
                        pairs.append((op.name, op.target))
                    elif op.kind == "rename":
                        pairs.append((op.new_name, op.target))
                        pairs.append((op.name, op.target))
                for name, child in pairs:
                    child_path = _join(path, name)
                    known = names.setdefault(child, set())
                    if child_path not in known:
                        known.add(child_path)
                        if self.is_dir[child]:
                            frontier.append(child)
        return names

    def crash_states(self, model: str, wanted: Callable[[str], bool], limit: int, seed: int
                     ) -> tuple[list[tuple[State, set[int]]], bool]:
        """(states, each with the inodes left in a crash state rather than as issued; whether the model's
        states were more than ``limit`` and these are a sample of them)."""
        if model == "kill":
            return [(self.latest_state(wanted), set())], False
        owners, choices, files, dirs = self._choices(model, wanted)
        total = _count(choices)
        sampled = total > limit
        if not sampled:
            combos: Iterator = itertools.product(*[o if isinstance(o, list) else o.all() for o in choices])
        else:
            combos = _sampled(choices, limit, random.Random(seed))
        return self._unique(self._build(owners, combo, files, dirs, wanted) for combo in combos), sampled

    def _choices(self, model: str, wanted):
        files, dirs = self.components(wanted)
        owners, choices = [], []
        for component in files:
            choices.append(_file_choices(component, model))
            owners.append(component.inode)
        for inode, ops in dirs.items():
            choices.append(_dir_choices(ops, model))
            owners.append(inode)
        return owners, choices, {c.inode: c for c in files}, dirs

    def _build(self, owners, combo, files, dirs, wanted) -> tuple[State, set[int]]:
        content: dict[int, bytes] = {}
        entries: dict[int, dict[str, int]] = {}
        crashed = set()
        for owner, choice in zip(owners, combo):
            if owner in dirs:
                entries[owner] = dict(self.durable_entries[owner])
                for op in choice:
                    _apply_entry(entries[owner], op)
                full = len(choice) == len(dirs[owner])
            else:
                content[owner] = _file_content(files[owner], choice)
                full = content[owner] == bytes(self.latest[owner])
            if not full:
                crashed.add(owner)
        state = self._state(wanted, functools.partial(self._chosen_entries, entries),
                            functools.partial(self._chosen_content, content))
        return state, crashed

    @staticmethod
    def _unique(built) -> list[tuple[State, set[int]]]:
        states, seen = [], set()
        for state, crashed in built:
            key = state.digest()
            if key not in seen:
                seen.add(key)
                states.append((state, crashed))
        return states

    def block_families(self, wanted: Callable[[str], bool], limit: int, seed: int, large: int = 256
                       ) -> tuple[list[Family], bool]:
        """The block model's states at this point, in families: one per combination of the components with at
        most ``large`` states each (journals, directories, small files: every combination, up to ``limit``).
        A family's larger files (an HDF5 file in the middle of a commit, a temporary copy) are given as
        their durable and their issued bytes (real states, judged one by one) and as *havoc*: every block
        that un-synced operations touched filled with random bytes, at the smallest and the largest size
        they had, twice each. If recovery gives one and the same acceptable outcome for all of these, it never
        read those blocks, and every one of the family's ``covered`` states recovers to it; otherwise
        ``draw`` gives that many of its real states at random, to be judged one by one."""
        owners, choices, files, dirs = self._choices("blocks", wanted)
        # Only files have blocks to fill with havoc; a directory with many un-synced entries (a policy that
        # never syncs it) stays among the small ones, drawn from when there are too many combinations.
        big = [i for i, o in enumerate(choices) if owners[i] in files and not isinstance(o, list) and o.count > large]
        if not big:
            states, sampled = self.crash_states("blocks", wanted, limit, seed)
            return [Family([s], [], 0, None) for s in states], sampled
        small = [i for i in range(len(choices)) if i not in big]
        small_choices = [choices[i] for i in small]
        total = _count(small_choices)
        sampled = total > limit
        combos = (itertools.product(*[o if isinstance(o, list) else list(o.all()) for o in small_choices])
                  if not sampled else _sampled(small_choices, limit, random.Random(seed)))
        covered = 1
        for i in big:
            covered *= choices[i].count
        families = []
        for picked in combos:
            def combo(big_choices, picked=picked):
                full: list = [None] * len(choices)
                for i, choice in zip(small, picked):
                    full[i] = choice
                for i, choice in zip(big, big_choices):
                    full[i] = choice
                return full

            real = self._unique(self._build(owners, combo([choices[i].structured[e] for i in big]), files, dirs,
                                            wanted) for e in (0, -1))
            havoc = []
            for size_end in (0, -1):
                for havoc_seed in (1, 2):
                    havoc_choices = [("havoc", choices[i].sizes[size_end], havoc_seed) for i in big]
                    havoc.append(self._build(owners, combo(havoc_choices), files, dirs, wanted)[0])

            def draw(count: int, rng: random.Random, combo=combo):
                return self._unique(self._build(owners, combo([choices[i].draw(rng) for i in big]), files, dirs,
                                                wanted) for _ in range(count))

            families.append(Family(real, havoc, covered, draw))
        return families, sampled

    def _chosen_entries(self, chosen: dict[int, dict[str, int]], inode: int) -> dict[str, int]:
        return chosen.get(inode, self.entries[inode])

    def _chosen_content(self, chosen: dict[int, bytes], inode: int) -> bytes:
        return chosen[inode] if inode in chosen else bytes(self.latest[inode])


@dataclass
class Family:
    real: list  # (State, crashed inodes): states of the model, judged one by one
    havoc: list  # States with the family's large files' un-synced blocks randomised (not states of the model)
    covered: int  # the model's states the havoc runs stand for
    draw: Callable | None  # (count, rng) -> real states of the family, when the havoc runs do not agree


def _count(choices) -> int:
    total = 1
    for options in choices:
        total *= len(options) if isinstance(options, list) else options.count
    return total


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


class _Options:
    """Choices too many to list: counted, enumerated lazily, or drawn."""

    def __init__(self, count: int, all_of, draw, structured, sizes=()):
        self.count, self.all, self.draw, self.structured = count, all_of, draw, structured
        self.sizes = sizes  # the block model's: the prefix counts after which the file is smallest and largest


def _file_choices(component: _FileComponent, model: str):
    if model == "prefix":
        return [("prefix", n) for n in range(len(component.pending) + 1)]
    sizes, versions = component.block_plan()
    blocks = sorted(versions)
    count = len(sizes)
    for block in blocks:
        count *= len(versions[block])

    def all_of():
        for size in sizes:
            for picked in itertools.product(*[versions[b] for b in blocks]):
                yield ("blocks", size, dict(zip(blocks, picked)))

    def draw(rng: random.Random):
        return ("blocks", rng.choice(sizes), {b: rng.choice(versions[b]) for b in blocks})

    # Every prefix is a state of the block model too (every block and the size as after n operations).
    structured = [("prefix", n) for n in range(len(component.pending) + 1)]
    lengths = {n: len(component.prefix(n)) for n in sizes}
    extremes = (min(sizes, key=lengths.__getitem__), max(sizes, key=lengths.__getitem__))
    return _Options(count, all_of, draw, structured, extremes)


def _dir_choices(ops: list[Op], model: str):
    if model == "prefix":
        return [tuple(ops[:n]) for n in range(len(ops) + 1)]

    def all_of():
        for mask in itertools.product((False, True), repeat=len(ops)):
            yield tuple(op for op, kept in zip(ops, mask) if kept)

    def draw(rng: random.Random):
        return tuple(op for op in ops if rng.random() < 0.5)

    structured = [tuple(ops[:n]) for n in range(len(ops) + 1)]
    return _Options(2 ** len(ops), all_of, draw, structured)


def _file_content(component: _FileComponent, choice) -> bytes:
    if choice[0] == "prefix":
        return component.prefix(choice[1])
    if choice[0] == "havoc":
        return component.havoc(choice[1], choice[2])
    return component.blocks(choice[1], choice[2])


def _sampled(choices: list, limit: int, rng: random.Random) -> Iterator[tuple]:
    """``limit`` combinations: everything as issued, everything as durable, then half structured ones (one
    component at one of its prefixes, the others as issued or as durable), drawn at random, and half drawn
    from the whole model."""
    def listed(options):
        return options if isinstance(options, list) else options.structured

    issued = tuple(listed(o)[-1] for o in choices)
    durable = tuple(listed(o)[0] for o in choices)
    yield issued
    yield durable
    structured = [(index, choice, base) for index, options in enumerate(choices) for choice in listed(options)
                  for base in (issued, durable)]
    rng.shuffle(structured)
    for produced in range(2, limit):
        if produced % 2 and structured:
            index, choice, base = structured.pop()
            yield base[:index] + (choice,) + base[index + 1:]
        else:
            yield tuple(rng.choice(o) if isinstance(o, list) else o.draw(rng) for o in choices)
