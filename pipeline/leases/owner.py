"""What a lease says, and how it is written and read: the owner it names (host and boot, PID namespace,
process id and start time, the scheduler's task), the heartbeat settings, and the file operations a lease is
made of (a private temporary file, an exclusive hard link, a watch on its bytes).

Whether an owner lives is judged here (:meth:`Owner.state`): by its process where this process can see
it, by the queue of the scheduler whose task it is (``pipeline.schedulers``), else by watching the lease.
Taking, renewing and releasing leases is ``pipeline.leases.ownership``; removing a dead one is
``pipeline.leases.breaking``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pipeline import durable, schedulers
from pipeline.schedulers.base import QueueView
from pipeline.settings import ConfigError, quoted

# A scheduler's queue as a caller hands it over (``pipeline.schedulers.view``).
JobStates = str | QueueView | Mapping[str, str] | None

HEARTBEAT_VARIABLE = "PIPELINE_LEASE_HEARTBEAT_S"
STALE_VARIABLE = "PIPELINE_LEASE_STALE_S"
DEFAULT_HEARTBEAT_S = 30.0
# A breaker holds its guard for milliseconds; one that was killed holding it costs the next at most this.
BREAK_GUARD_WAIT_S = 3.0


def _seconds(variable: str, default: float) -> float:
    text = os.environ.get(variable, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{variable}={text!r} is not a number of seconds > 0")
    return value


def heartbeat_s() -> float:
    """How often an owner renews its leases (``PIPELINE_LEASE_HEARTBEAT_S``, default 30 s)."""
    return _seconds(HEARTBEAT_VARIABLE, DEFAULT_HEARTBEAT_S)


def _own_heartbeat_s() -> float:
    """The interval this process beats at, as its leases record it (a bad setting is refused where a lease
    is taken; here the beat it falls back to)."""
    try:
        return heartbeat_s()
    except ConfigError:
        return DEFAULT_HEARTBEAT_S


def stale_after_s() -> float:
    """How long an unproven lease must be seen not to change before it is taken over
    (``PIPELINE_LEASE_STALE_S``, default ten heartbeats). Below three heartbeats a healthy owner whose
    beat is late once or twice (a slow file system) would be taken over: refused."""
    beat = heartbeat_s()
    stale = _seconds(STALE_VARIABLE, 10 * beat)
    if stale < 3 * beat * (1 - 1e-9):  # three heartbeats exactly is allowed, whatever the rounding
        raise ConfigError(f"{STALE_VARIABLE}={stale:g} is below three heartbeats ({HEARTBEAT_VARIABLE}={beat:g} s): a "
                          f"live owner would be taken over; accepted: at least {3 * beat:g}")
    return stale


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    """This process's PID namespace ("pid:[4026531836]"): a PID means something only inside its own."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: with the boot id, a process's identity
    (a PID alone is recycled). None if there is no such process, or it is a zombie (it does no work)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


@dataclass
class Owner:
    host: str
    boot_id: str
    pid: int
    start_ticks: int | None
    slurm_job: str = ""  # "123_4" for an array task, "123" for a job
    command: str = ""
    acquired_at: float = 0.0
    heartbeat_at: float = 0.0
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid_ns: str = ""  # "" in leases written before namespaces were recorded: unknown
    # How often the owner renews the lease (its PIPELINE_LEASE_HEARTBEAT_S); 0 in leases written before it was
    # recorded: unknown. Staleness is judged against the owner's beat, not the taker's.
    heartbeat_s: float = 0.0
    # Why the owner stopped, when its trial file could not say it (a full disk, an I/O error): the lease is
    # left with this note (written in place, needing no new space) instead of being released. An owner that
    # says it stopped is gone, whatever its process.
    stopped: str = ""
    # What the lease file held, byte for byte, when read (a lease is removed only if it still holds this);
    # not part of the lease itself.
    raw: str = field(default="", compare=False, repr=False)

    @classmethod
    def this_process(cls) -> Owner:
        now = time.time()
        return cls(socket.gethostname(), _boot_id(), os.getpid(), process_start_ticks(os.getpid()),
                   schedulers.queued().task_id(), " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3])[:80],
                   now, now, pid_ns=pid_namespace(), heartbeat_s=_own_heartbeat_s())

    def same_machine(self, other: Owner) -> bool:
        return self.host == other.host and self.boot_id == other.boot_id

    def same_processes(self, other: Owner) -> bool:
        """Whether this owner's PID means the same process to ``other`` (same machine, same namespace)."""
        return self.same_machine(other) and bool(self.pid_ns) and self.pid_ns == other.pid_ns

    def describe(self) -> str:
        me = Owner.this_process()
        namespace = " (another PID namespace)" if self.same_machine(me) and not self.same_processes(me) else ""
        job = f" (SLURM job {self.slurm_job})" if self.slurm_job else ""
        where = f"pid {self.pid} on {self.host}{namespace}{job}"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.acquired_at))
        return f"{where} since {since}, last heartbeat {max(0.0, time.time() - self.heartbeat_at):.0f} s ago"

    def state(self, job_states: JobStates = "read") -> str:
        """'alive', 'gone' (provably) or 'unproven' (only watching the lease can tell).

        ``job_states``: the queue of the scheduler whose task it is (``pipeline.schedulers.view``): "read" to
        read it if needed, a :class:`~pipeline.schedulers.base.QueueView` (read when first needed), a dict (job
        id -> state) someone read, or None if it could not be read."""
        if self.stopped:
            return "gone"  # it said so itself, on its way out
        me = Owner.this_process()
        if self.host == me.host and self.boot_id and self.boot_id != me.boot_id:
            return "gone"  # the machine rebooted since
        if self.same_processes(me):
            if self.pid == me.pid and self.start_ticks == me.start_ticks:
                return "alive"
            return "alive" if process_start_ticks(self.pid) == self.start_ticks else "gone"
        # Another host or another PID namespace: its PID proves nothing here, either way.
        if self.slurm_job:
            if self.slurm_job == me.slurm_job:
                return "gone"  # SLURM runs one incarnation of a task at a time: this is its requeued self
            lives = schedulers.view(job_states).alive(self.slurm_job)
            if lives is not None:
                return "alive" if lives else "gone"
        if abs(time.time() - self.heartbeat_at) < stale_limit_s(self):
            return "alive"  # recent by its own clock: waiting errs on the safe side
        return "unproven"


def stale_limit_s(holder: Owner | UnreadableLease) -> float:
    """How long a lease must be seen unchanged before it is taken over: this process's stale limit, but never
    less than three of the *owner's* heartbeats, which its lease records (a taker set to beat every second
    took a live owner beating every 30 s over in 3 s). A lease that does not say (unreadable, or written
    before it was recorded) is judged by this process's limit."""
    stale = stale_after_s()
    beat = holder.heartbeat_s
    if isinstance(beat, (int, float)) and not isinstance(beat, bool) and math.isfinite(beat) and beat > 0:
        return max(stale, 3 * float(beat))
    return stale


class UnreadableLease:
    """A lease file that is there but cannot be read (empty, cut short, not ours): it blocks no one for ever.
    Nobody can prove its owner alive or dead, so it is watched like any unproven lease."""

    def __init__(self, raw: str, problem: str):
        self.raw, self.problem = raw, problem
        self.token = "unreadable-" + hashlib.sha256(raw.encode(errors="replace")).hexdigest()[:16]
        self.pid, self.host, self.boot_id, self.pid_ns, self.start_ticks = -1, "?", "", "", None
        self.slurm_job, self.stopped = "", ""
        self.heartbeat_s = 0.0  # its owner's beat is not known: judged by the taker's stale limit

    def describe(self) -> str:
        return f"an unreadable lease ({self.problem})"

    def state(self, job_states: JobStates = "read") -> str:
        return "unproven"

    def same_machine(self, other: Owner) -> bool:
        return False

    def same_processes(self, other: Owner) -> bool:
        return False


def read_owner(path: Path) -> Owner | UnreadableLease | None:
    """The owner recorded in a lease file; None if there is none (a lease is never half-written, but a
    crashed node, a full disk or a person can leave one empty or garbled: :class:`UnreadableLease`)."""
    try:
        raw = Path(path).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError as error:
        return UnreadableLease("", f"{type(error).__name__}: {error}")
    try:
        values = json.loads(raw)
        if not isinstance(values, dict):
            raise TypeError("not an object")
        # Fields a later version adds are not this version's business; the ones it knows must all be there.
        known = {name: value for name, value in values.items() if name in _OWNER_FIELDS}
        owner = Owner(**known)
    except (ValueError, TypeError) as error:
        problem = "empty file" if not raw.strip() else f"not a lease: {type(error).__name__}"
        return UnreadableLease(raw, problem)
    owner.raw = raw
    return owner


_OWNER_FIELDS = {f.name for f in fields(Owner)} - {"raw"}


def read_raw(path: Path) -> str | None:
    try:
        return Path(path).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ""


def write_private(path: Path, owner: Owner) -> Path:
    """The lease written to a temporary file of the owner's, created exclusively: its name shows the token,
    which the lease itself shows to anyone, so a link may have been planted there; it is removed (the link,
    not what it points to), never written through."""
    tmp = path.with_name(f".{path.name}.{owner.token}.tmp")
    text = json.dumps({k: v for k, v in asdict(owner).items() if k != "raw"}).encode()
    for _ in range(2):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            continue
        with open(fd, "wb") as handle:
            handle.write(text)
            handle.flush()
            # Durable before it is linked or renamed into place: a lease's name must never outlive its content.
            durable.sync(handle.fileno())
        return tmp
    raise FileExistsError(errno.EEXIST, f"{quoted(tmp)} keeps coming back: not a file this process made")


def link_exclusively(source: Path, target: Path) -> bool:
    """Hard-link source to target unless target exists. NFS may report failure for a link it made (a lost
    reply to a retried request), so success is read off the source's link count."""
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    except OSError:
        if os.stat(source).st_nlink != 2:
            return False
    durable.sync_directory(Path(target).parent)
    return True


def watch_unchanged(path: Path, raw: str, period_s: float) -> str:
    """Watch the file at ``path`` on this process's own clock: 'changed' (someone renews or replaced it),
    'gone' (released) or 'unchanged' (not a byte moved for ``period_s`` seconds)."""
    deadline = time.monotonic() + period_s
    poll = max(0.05, min(1.0, heartbeat_s() / 4))
    while True:
        now = read_raw(path)
        if now is None:
            return "gone"
        if now != raw:
            return "changed"
        if time.monotonic() >= deadline:
            return "unchanged"
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


