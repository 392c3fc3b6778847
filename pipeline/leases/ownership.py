"""One owner per trial (and per folder's submission): leases that are safe on cluster file systems.

Whatever trains a trial first takes its *lease*, ``trials/<trial_id>.lease``: a small JSON file naming the
owner (host and boot, PID namespace, process id and start time, which together survive PID reuse and
containers; the SLURM job and array task when there is one) and a heartbeat that a thread of the owner
renews every :func:`heartbeat_s` seconds. A second writer, whoever starts it, finds the lease and refuses
the trial, naming the owner. Only the owner ever creates, replaces or deletes the trial's file.

Taking a lease is atomic on NFS and Lustre, where POSIX locks may not be: the lease is written complete
to a private temporary file, then hard-linked to its name, which fails if the name exists (an exclusive
create that never exposes a half-written lease).

Whether a lease's owner still lives is *proven* where it can be: on this machine and in this PID
namespace by its process (the PID and its start time); on SLURM by the queue (a job RUNNING or SUSPENDED
lives, a job SLURM no longer runs does not, and a task finding its own job id is its own requeued self).
A heartbeat recent by the owner's clock is taken as life too (erring that way only delays a takeover).
Anything else (another host without an answer from SLURM, another PID namespace, a lease that cannot be
read) is *unproven*, and is never judged from the owner's clock: the taker watches the lease, on its own
clock, and takes it over only if it does not change for :func:`stale_after_s` seconds (at least three
heartbeats). The dead lease is then removed by one breaker at a time (if it is still the lease judged
dead), and takers race for the name as for a free lease: exactly one wins.

The same mechanism guards a results folder while ``submit`` or ``resubmit`` decides what to launch and
records it (``OUT/.submit.lease``), so two concurrent submissions cannot both launch a trial.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from pipeline import durable
from pipeline.errors import UserError
from pipeline.folder import ResultsFolder
from pipeline.schedulers import slurm_queue as queue
from pipeline.schedulers.identity import slurm_task
from pipeline.settings import ConfigError, quoted

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


class Busy(UserError, RuntimeError):
    """Someone else holds the lease; the message names them."""

    def __init__(self, what: str, owner: Owner | UnreadableLease):
        self.owner = owner
        super().__init__(f"{what} is held by {owner.describe()}")


class LostOwnership(UserError, RuntimeError):
    """This process's lease was taken over (its heartbeat lapsed): it must stop writing at once."""


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
        return cls(socket.gethostname(), _boot_id(), os.getpid(), process_start_ticks(os.getpid()), slurm_task(),
                   " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3])[:80], now, now, pid_ns=pid_namespace(),
                   heartbeat_s=_own_heartbeat_s())

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

    def state(self, job_states="read") -> str:
        """'alive', 'gone' (provably) or 'unproven' (only watching the lease can tell).

        ``job_states``: the SLURM queue: "read" to read it if needed, a :class:`queue.QueueView` (read
        when first needed), a dict (job id -> state) someone read, or None if it could not be read."""
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
            states = queue.view(job_states).states()
            if states is not None:
                return "alive" if states.get(self.slurm_job) in queue.ACTIVE_STATES else "gone"
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

    def state(self, job_states="read") -> str:
        return "unproven"

    def same_machine(self, other) -> bool:
        return False

    def same_processes(self, other) -> bool:
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


def _read_raw(path: Path) -> str | None:
    try:
        return Path(path).read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return ""


def _write_private(path: Path, owner: Owner) -> Path:
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


def _link_exclusively(source: Path, target: Path) -> bool:
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
        now = _read_raw(path)
        if now is None:
            return "gone"
        if now != raw:
            return "changed"
        if time.monotonic() >= deadline:
            return "unchanged"
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Lease:
    """A held lease; renew() keeps it alive, release() gives it up (only if it is still ours)."""

    def __init__(self, path: Path, owner: Owner, what: str):
        self.path, self.owner, self.what = Path(path), owner, what
        self.noted = False  # left with a note of why its owner stopped (note_stop), not released

    @classmethod
    def acquire(cls, path: Path, what: str, job_states="read", note=_note) -> Lease:
        """Take the lease at ``path`` or raise :class:`Busy` naming its live owner. An unproven lease is
        watched for the stale period first (``note`` says so, and says when it is broken)."""
        path = Path(path)
        stale = stale_after_s()  # a bad setting is refused before anything is touched
        durable.make_dirs(path.parent)
        jobs = queue.view(job_states)
        owner = Owner.this_process()
        tmp = _write_private(path, owner)
        try:
            for _ in range(8):  # each round either takes the lease or removes a dead owner's
                if _link_exclusively(tmp, path):
                    lease = cls(path, owner, what)
                    KEEPER.hold(lease)
                    return lease
                holder = read_owner(path)
                if holder is None:
                    continue  # released between our attempt and our read
                if holder.token == owner.token:
                    lease = cls(path, owner, what)
                    KEEPER.hold(lease)
                    return lease
                verdict = holder.state(jobs)
                if verdict == "alive":
                    raise Busy(what, holder)
                if verdict == "unproven":
                    limit = stale_limit_s(holder)
                    why = (f"{STALE_VARIABLE}" if limit == stale else
                           f"three of its owner's heartbeats of {holder.heartbeat_s:g} s, more than {STALE_VARIABLE}")
                    note(f"{what}: its lease ({holder.describe()}) cannot be proven alive or dead from here; "
                         f"watching it for {limit:g} s ({why}) before taking it over")
                    seen = watch_unchanged(path, holder.raw, limit)
                    if seen == "changed":
                        raise Busy(what, read_owner(path) or holder)
                    if seen == "gone":
                        continue
                    note(f"{what}: took over its lease ({holder.describe()}), unchanged for {limit:g} s: "
                         f"{quoted(path)}")
                _break(path, holder)
            raise Busy(what, read_owner(path) or owner)
        finally:
            tmp.unlink(missing_ok=True)

    def still_ours(self) -> bool:
        holder = read_owner(self.path)
        return holder is not None and holder.token == self.owner.token

    def renew(self) -> None:
        """Refresh the heartbeat; raise LostOwnership if someone took the lease over meanwhile."""
        if not self.still_ours():
            raise LostOwnership(f"{self.what}: this process's lease was taken over by another owner")
        self.owner.heartbeat_at = time.time()
        tmp = _write_private(self.path, self.owner)
        try:
            durable.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        KEEPER.drop(self)
        if not self.noted and self.still_ours():
            durable.unlink(self.path)

    def note_stop(self, reason: str) -> bool:
        """Leave the lease behind saying why its owner stopped, for ``status`` to tell, where the trial's
        file could not record it (the disk is full, or the file meets an I/O error). The note is written over
        the lease in place: a full disk has no room for a new file, but the lease's own block is there.
        Whoever takes the trial next finds the owner gone (it said so) and takes the lease over at once."""
        KEEPER.drop(self)  # no heartbeat may replace the note
        if not self.still_ours():
            return False
        self.owner.stopped = " ".join(reason.split())[:500]
        text = json.dumps({k: v for k, v in asdict(self.owner).items() if k != "raw"}).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                # Padded to the old length (JSON allows trailing spaces): nothing to truncate, nothing to allocate.
                os.pwrite(fd, text.ljust(os.fstat(fd).st_size), 0)
            finally:
                os.close(fd)
        except OSError:
            return False
        self.noted = True
        return True


def _remove_if_same(path: Path, raw: str, token: str) -> bool:
    """Remove the file at ``path`` if it still holds ``raw``; True if it did. The file is first moved
    aside under a private name, so that a file someone put there meanwhile is put back, not deleted.

    A file that already differs is left where it is: moving a live lease aside, even for an instant, frees
    its name, and a taker that links in that instant would win a lease that is then put back under it, or
    not put back at all (two owners). Callers hold the breaker's guard, and a dead owner writes nothing, so
    the file cannot change between this look and the move."""
    if _read_raw(path) != raw:
        return False
    aside = path.with_name(f".{path.name}.{token}.removed")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if _read_raw(aside) == raw:
            return True
        try:
            os.link(aside, path)  # not the one judged: put it back (unless the name is taken again)
        except FileExistsError:
            pass
        return False
    finally:
        aside.unlink(missing_ok=True)


def _break(path: Path, holder) -> None:
    """Remove the lease of a dead or stale owner, one breaker at a time.

    Breakers take a guard beside the lease (the same exclusive link) and, holding it, remove the lease only
    if it is still the one they judged dead. Without the guard, a breaker that read the dead lease could
    remove the fresh lease another taker had just made, and two takers would both believe they own it. A
    guard left by a breaker that was killed holding it is removed after a short wait."""
    guard = path.with_name(path.name + ".breaking")
    me = Owner.this_process()
    tmp = _write_private(guard, me)
    try:
        if not _link_exclusively(tmp, guard):
            _clear_leftover_guard(guard, me)
            return  # the caller's next round tries again
        try:
            if _remove_if_same(path, holder.raw, me.token):
                durable.sync_directory(path.parent)
        finally:
            if _read_raw(guard) == _read_raw(tmp):
                guard.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)


def _clear_leftover_guard(guard: Path, me: Owner) -> None:
    """Wait for another breaker's guard to go; one that stays (its breaker was killed) is removed."""
    raw = _read_raw(guard)
    if raw is None:
        return
    breaker = read_owner(guard)
    if breaker is not None and not isinstance(breaker, UnreadableLease) and breaker.same_processes(me) \
            and process_start_ticks(breaker.pid) != breaker.start_ticks:
        seen = "unchanged"  # its breaker is provably gone
    else:
        seen = watch_unchanged(guard, raw, BREAK_GUARD_WAIT_S)
    if seen == "unchanged":
        _remove_if_same(guard, raw, me.token)


class _Keeper:
    """Renews every lease this process holds from a daemon thread: an epoch can last longer than the stale
    limit (the 784-element orbit at paper size), and the owner must stay provably alive through it."""

    def __init__(self):
        self.leases: dict[int, Lease] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.lost: list[Lease] = []

    def hold(self, lease: Lease) -> None:
        with self.lock:
            self.leases[id(lease)] = lease
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
                self.thread.start()

    def drop(self, lease: Lease) -> None:
        with self.lock:
            self.leases.pop(id(lease), None)

    def _run(self) -> None:
        while True:
            try:
                time.sleep(heartbeat_s())
            except ConfigError:
                time.sleep(DEFAULT_HEARTBEAT_S)  # refused where leases are taken; the beat goes on
            with self.lock:
                held = list(self.leases.values())
            for lease in held:
                try:
                    lease.renew()
                except LostOwnership:
                    self.drop(lease)
                    self.lost.append(lease)
                except OSError:
                    pass  # a full disk or a flaky mount: the next beat tries again


KEEPER = _Keeper()


def trial_lease_path(out_dir: Path, trial_id: str) -> Path:
    return ResultsFolder.of(out_dir).trial_lease(trial_id)


def acquire_trial(out_dir: Path, trial_id: str) -> Lease:
    return Lease.acquire(trial_lease_path(out_dir, trial_id), f"trial {trial_id}")


def task_lease_path(out_dir: Path, job_id: str) -> Path:
    return ResultsFolder.of(out_dir).task_lease(job_id)


def guard_folder(out_dir: Path, wait_s: float = 120.0, poll_s: float = 0.5) -> Lease:
    """Hold the folder's submission guard, waiting up to ``wait_s`` for another submission to finish (and
    the stale period for a guard that nobody can be proven to hold)."""
    deadline = time.time() + wait_s
    while True:
        try:
            return Lease.acquire(ResultsFolder.of(out_dir).submit_guard, f"the submission guard of {quoted(out_dir)}")
        except Busy:
            if time.time() >= deadline:
                raise
            time.sleep(poll_s)
