"""What a crash state must recover to, and what it does: the kinds of files the explorer checks.

A *kind* names the files of a crash state it looks at (``wanted``), the *groups* of files whose operations
the workload marked (``trial``, ``checkpoint``, ...; a group's named files are what an acceptable state is
made of), and the *recovery*: what the next owner or reader does with the folder (``TrialFile.prepare``,
``read_manifest``, ``read_records``, ``read_owner``), reduced to an outcome that can be compared.

A crash state is judged by its outcome against the outcomes of the *acceptable* states at its crash point:
for each group, its files as the last operation that ended left them, or (when the crash fell inside an
operation) as that operation leaves them when it ends. Anything else is one of:

``set aside``   recovery found the state damaged and said so (a trial file renamed ``.damaged-``, a manifest
                refused as damaged, a lease that cannot be read, watched and broken): never read as data.
``wrong``       recovery read it as data, genuine data, but not the state it must be (epochs lost beyond
                the one in flight, a record or a lease gone or back), or recovery itself failed.
``undetected``  recovery read as data what no operation ever wrote (rows, attributes, records, a lease
                owner that were never written).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import State
from .trace import Recording


@dataclass
class Kind:
    name: str
    wanted: Callable[[str], bool]
    groups: dict[str, Callable[[str], bool]]  # group -> which of the wanted files are its own
    recover: Callable[[Path], tuple]
    judge: Callable[[Path, tuple], str]  # for an outcome no acceptable state gives: set aside, wrong, undetected
    history: list = field(default_factory=list)  # every acceptable outcome seen (for the judge)


class Scratch:
    """A folder on tmpfs where a state is laid out for its recovery to run on."""

    def __init__(self, base: Path, recording: Recording):
        self.base = Path(base)
        self.folder = self.base / "folder"
        self.numbers = {i: n.number for i, n in recording.inodes.items() if n.number is not None}

    def lay_out(self, state: State) -> Path:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        for path in state.dirs:
            (self.folder / path).mkdir(parents=True, exist_ok=True)
        placed: dict[int, Path] = {}
        renumbered: dict[int, int] = {}
        for path, inode, content in state.files:
            target = self.folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if inode in placed:
                os.link(placed[inode], target)
                continue
            target.write_bytes(content)
            placed[inode] = target
            if inode in self.numbers:
                renumbered[self.numbers[inode]] = os.stat(target).st_ino
        for path, _, _ in state.files:
            if path.endswith(".journal") or ".journal." in path:
                _renumber_journal(self.folder / path, renumbered, os.stat(self.folder).st_dev)
        return self.folder


def _renumber_journal(path: Path, renumbered: dict[int, int], device: int) -> None:
    """A journal names its file by inode number, which laying the state out anew changes: rewrite a whole
    header (its checksum checks) to name the file's new number. A torn header stays torn."""
    from pipeline.trialfile import journal

    fd = os.open(path, os.O_RDWR)
    try:
        header = journal._header_at(fd)
        if header is None or header.inode not in renumbered:
            return
        fields = {**header.__dict__, "inode": renumbered[header.inode], "device": device}
        os.pwrite(fd, journal._pack(journal.Header(**fields)), 0)
    finally:
        os.close(fd)


# -- trial files ------------------------------------------------------------------------------------------

def logical(path: Path) -> str:
    """The whole content of a trial file as HDF5 shows it (every attribute, every dataset's type, shape and
    bytes), as a digest; 'unreadable: ...' where reading it fails (a checksum that does not match)."""
    import h5py

    hasher = hashlib.sha1()
    try:
        with h5py.File(path, "r", locking=False) as f:
            _hash_attrs(hasher, "/", f.attrs)

            def visit(name, obj):
                hasher.update(name.encode() + b"\0")
                if isinstance(obj, h5py.Dataset):
                    data = obj[()]
                    hasher.update(str(obj.dtype).encode() + str(obj.shape).encode())
                    raw = repr(data.tolist()).encode() if data.dtype.kind == "O" else np.ascontiguousarray(data).tobytes()
                    hasher.update(raw)
                _hash_attrs(hasher, name, obj.attrs)

            f.visititems(visit)
    except Exception as error:
        return f"unreadable: {type(error).__name__}"
    return hasher.hexdigest()


def _hash_attrs(hasher, name: str, attrs) -> None:
    for key in sorted(attrs):
        value = attrs[key]
        hasher.update(f"{name}@{key}=".encode() + repr(value.tolist() if hasattr(value, "tolist") else value).encode())


def _arrays(path: Path) -> tuple[dict, dict]:
    import h5py

    arrays, attrs = {}, {}
    with h5py.File(path, "r", locking=False) as f:
        attrs = {k: f.attrs[k] for k in f.attrs}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj[()]

        f.visititems(visit)
    return arrays, attrs


def _digest_tree(value, hasher) -> None:
    import torch

    if isinstance(value, dict):
        for key in sorted(value, key=str):
            hasher.update(repr(key).encode())
            _digest_tree(value[key], hasher)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _digest_tree(item, hasher)
    elif isinstance(value, torch.Tensor):
        hasher.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
        hasher.update(value.detach().cpu().contiguous().view(-1).numpy().tobytes() if value.numel() else b"")
    else:
        hasher.update(repr(value).encode())


def checkpoint_digest(state: dict | None) -> str | None:
    if state is None:
        return None
    hasher = hashlib.sha1()
    _digest_tree(state, hasher)
    return hasher.hexdigest()


def trial_kind(name: str, trial, reference: Path) -> Kind:
    """A trial file, its journal and its checkpoint: recovered by the next owner (``TrialFile.prepare``).
    ``reference``: the trial file as the workload finished it (every row of an uninterrupted run)."""
    from pipeline.folder import ResultsFolder

    tid = trial.trial_id
    own = (f"{tid}.h5", f".{tid}.h5", f"{tid}.state.pt", f".{tid}.state.pt")
    reference_arrays, reference_attrs = _arrays(reference)

    def wanted(path: str) -> bool:
        return path == "trials" or (path.startswith("trials/") and path[len("trials/"):].startswith(own))

    groups = {"trial": lambda p: p in (f"trials/{tid}.h5", f"trials/{tid}.h5.journal"),
              "checkpoint": lambda p: p == f"trials/{tid}.state.pt"}

    def recover(folder: Path) -> tuple:
        import torch

        from pipeline.trialfile.store import TrialFile

        # One thread while recovering, and the caller's back after: a pytest process that explored a sample
        # went on to run its in-process reference trainings on one thread, and their sums no longer matched
        # the two-thread runs they are compared with bit for bit.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            lines: list[str] = []
            store = TrialFile(folder, trial, log=lines.append)
            try:
                decision = store.prepare()
            except Exception as error:
                return ("failed", f"{type(error).__name__}: {error}".splitlines()[0])
            resumed = store.resume_point()
        finally:
            torch.set_num_threads(threads)
        path = ResultsFolder(folder).trial_file(tid)
        aside = sorted(p.name for p in path.parent.iterdir() if ".damaged-" in p.name or ".inconsistent-" in p.name)
        return ("recovered", decision, resumed["epoch"] if resumed else None, checkpoint_digest(resumed),
                logical(path) if path.exists() else None, bool(aside))

    kind = Kind(name, wanted, groups, recover, lambda folder, outcome: "wrong")

    def judge(folder: Path, outcome: tuple) -> str:
        if outcome[0] == "failed":
            return "wrong"
        _, _, _, digest, content, aside = outcome
        if aside:
            return "set aside"
        saved = {o[3] for o in kind.history if o[0] == "recovered" and o[3] is not None}
        if digest is not None and digest not in saved:
            return "undetected"  # resumed from a checkpoint that was never saved as such
        path = ResultsFolder(folder).trial_file(tid)
        if content is not None and not _genuine(path, reference_arrays, reference_attrs):
            return "undetected"
        return "wrong"

    kind.judge = judge
    return kind


def _genuine(path: Path, reference_arrays: dict, reference_attrs: dict) -> bool:
    """Whether a recovered trial file holds only what the uninterrupted run wrote: each dataset the first
    rows of the finished file's (wall times aside), its settings and identity the finished file's, its
    epochs_done its rows."""
    try:
        arrays, attrs = _arrays(path)
    except Exception:
        return False
    for name, data in arrays.items():
        if name == "metrics/seconds":
            continue
        expected = reference_arrays.get(name)
        if expected is None or data.dtype != expected.dtype or data.shape[1:] != expected.shape[1:]:
            return False
        if not np.array_equal(data, expected[: len(data)], equal_nan=data.dtype.kind == "f"):
            return False
    for key in ("trial_id", "settings", "experiment", "schema_version", "weights_every", "index"):
        if key in reference_attrs and (key not in attrs or attrs[key] != reference_attrs[key]):
            return False
    rows = min((len(a) for n, a in arrays.items() if n.startswith("metrics/")), default=0)
    if attrs.get("status") not in ("running", "failed", "cancelled", "complete"):
        return False
    return int(attrs.get("epochs_done", -1)) == rows - 1


# -- the folder's own files -------------------------------------------------------------------------------

def folder_kind() -> Kind:
    """``manifest.json`` and ``submissions.jsonl``: read by every later command (status, resubmit, cancel)."""
    def wanted(path: str) -> bool:
        return path in ("manifest.json", "submissions.jsonl") or (path.startswith(".manifest.json.") and
                                                                   path.endswith(".tmp"))

    groups = {"manifest": lambda p: p == "manifest.json", "records": lambda p: p == "submissions.jsonl"}

    def recover(folder: Path) -> tuple:
        from pipeline.errors import ConfigError
        from pipeline.launch.records import read_records, read_submissions
        from pipeline.trialfile.manifest import read_manifest

        try:
            document = read_manifest(folder)
            manifest = json.dumps(document, sort_keys=True)
            count = len(document["trials"])
        except ConfigError as error:
            manifest, count = ("damaged" if "damaged" in str(error) else "missing"), 0
        warnings: list[str] = []
        try:
            records = json.dumps(read_records(folder, warn=warnings.append), sort_keys=True)
            launched = [i for s in read_submissions(folder, warn=warnings.append) for t in s["tasks"]
                        for i in t["indices"]]
        except Exception as error:
            return ("failed", f"{type(error).__name__}: {error}".splitlines()[0])
        strays = tuple(sorted({i for i in launched if i >= count})) if manifest not in ("damaged",) else ()
        return ("read", manifest, records, strays)

    kind = Kind("manifest.json + submissions.jsonl", wanted, groups, recover, lambda f, o: "wrong")

    def judge(folder: Path, outcome: tuple) -> str:
        if outcome[0] == "failed":
            return "wrong"
        _, manifest, records, strays = outcome
        manifests = {o[1] for o in kind.history}
        written = {json.dumps(r, sort_keys=True) for o in kind.history for r in json.loads(o[2])}
        if manifest not in manifests and manifest not in ("damaged", "missing"):
            return "undetected"
        if any(json.dumps(r, sort_keys=True) not in written for r in json.loads(records)):
            return "undetected"
        if manifest == "damaged":
            return "set aside"
        return "wrong"

    kind.judge = judge
    return kind


def lease_kind(lease_paths: tuple[str, ...]) -> Kind:
    """Leases (a trial's, the folder's submission guard): read by whoever wants the trial or the folder next."""
    def wanted(path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return path == "trials" or name.endswith(".lease") or ".lease." in name

    groups = {"lease": lambda p: p in lease_paths}

    def recover(folder: Path) -> tuple:
        from pipeline.leases.ownership import UnreadableLease, read_owner

        seen = []
        for path in lease_paths:
            owner = read_owner(folder / path)
            seen.append(None if owner is None else "unreadable" if isinstance(owner, UnreadableLease) else owner.raw)
        return ("read", tuple(seen))

    kind = Kind("leases", wanted, groups, recover, lambda f, o: "wrong")

    def judge(folder: Path, outcome: tuple) -> str:
        written = {raw for o in kind.history for raw in o[1]}
        if any(raw not in written and raw != "unreadable" for raw in outcome[1]):
            return "undetected"
        if "unreadable" in outcome[1]:
            return "set aside"
        return "wrong"

    kind.judge = judge
    return kind
