"""One owner per trial (and per folder's submission): leases that are safe on cluster file systems.

Whatever trains a trial first takes its *lease*, ``trials/<trial_id>.lease``: a small JSON file naming the
owner (host and boot, process id and start time, which together survive PID reuse; the SLURM job and
array task when there is one) and a heartbeat that a thread of the owner renews every
:data:`HEARTBEAT_S` seconds. A second writer, whoever starts it, finds the lease and refuses the trial,
naming the owner. Only the owner ever creates, truncates or deletes the trial's file.

Taking a lease is atomic on NFS and Lustre, where POSIX locks may not be: the lease is written complete
to a private temporary file, then hard-linked to its name, which fails if the name exists (an exclusive
create that never exposes a half-written lease). A lease whose owner is provably gone (same host, and its
process is dead or is another process with the same number; the same SLURM array task, requeued; SLURM
no longer runs its job) or whose heartbeat is older than :data:`STALE_AFTER_S` is taken over without a
person deleting anything: one breaker at a time removes it (if it is still the lease judged dead), then
takers race for the name as for a free lease, and exactly one wins.

The same mechanism guards a results folder while ``submit`` or ``resubmit`` decides what to launch and
records it (``OUT/.submit.lease``), so two concurrent submissions cannot both launch a trial.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import queue

HEARTBEAT_S = 30.0
# A lease whose heartbeat is older than this is stale whoever holds it: a node that died without a trace
# (another host, SLURM unreadable) would otherwise block its trials forever. Ten heartbeats of slack.
STALE_AFTER_S = float(os.environ.get("PIPELINE_LEASE_STALE_S", 10 * HEARTBEAT_S))
LEASE_SUFFIX = ".lease"
FOLDER_GUARD = ".submit.lease"


class Busy(RuntimeError):
    """Someone else holds the lease; the message names them."""

    reported = True  # its message is the whole story: no traceback hint

    def __init__(self, what: str, owner: "Owner"):
        self.owner = owner
        super().__init__(f"{what} is held by {owner.describe()}")


class LostOwnership(RuntimeError):
    """This process's lease was taken over (its heartbeat lapsed): it must stop writing at once."""

    reported = True  # its message is the whole story: no traceback hint


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
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


def _slurm_task() -> str:
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    return f"{job}_{task}" if job and task else job


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

    @classmethod
    def this_process(cls) -> "Owner":
        now = time.time()
        return cls(socket.gethostname(), _boot_id(), os.getpid(), process_start_ticks(os.getpid()), _slurm_task(),
                   " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:3])[:80], now, now)

    def describe(self) -> str:
        where = f"pid {self.pid} on {self.host}" + (f" (SLURM job {self.slurm_job})" if self.slurm_job else "")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.acquired_at))
        return f"{where} since {since}, last heartbeat {max(0.0, time.time() - self.heartbeat_at):.0f} s ago"

    def state(self, job_states="read") -> str:
        """'alive', 'gone' (provably) or 'stale' (another host's heartbeat older than STALE_AFTER_S).

        On this host the process itself is the proof either way; elsewhere SLURM may prove a job gone,
        and a heartbeat that stopped long ago is taken as death. ``job_states``: the SLURM queue (job id
        -> state) if the caller has read it, None if it could not be read, "read" to read it here."""
        me = Owner.this_process()
        if self.host == me.host and self.boot_id == me.boot_id:
            if self.pid == me.pid and self.start_ticks == me.start_ticks:
                return "alive"
            return "alive" if process_start_ticks(self.pid) == self.start_ticks else "gone"
        if self.host == me.host:
            return "gone"  # the machine rebooted since
        if self.slurm_job:
            if self.slurm_job == me.slurm_job:
                return "gone"  # SLURM runs one incarnation of a task at a time: this is its requeued self
            states = queue.read_slurm_queue() if job_states == "read" else job_states
            if states is not None and states.get(self.slurm_job) not in queue.ACTIVE_STATES:
                return "gone"
        if time.time() - self.heartbeat_at > STALE_AFTER_S:
            return "stale"
        return "alive"


def read_owner(path: Path) -> Owner | None:
    """The owner recorded in a lease file; None if there is none (a lease is never half-written)."""
    try:
        values = json.loads(Path(path).read_text())
        return Owner(**values)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, OSError):
        # Unreadable yet present: treat as a dead owner so that it can be taken over, never as no lease.
        return Owner(host="?", boot_id="?", pid=-1, start_ticks=None, heartbeat_at=0.0)


def _write_private(path: Path, owner: Owner) -> Path:
    tmp = path.with_name(f".{path.name}.{owner.token}.tmp")
    tmp.write_text(json.dumps(asdict(owner)))
    return tmp


def _link_exclusively(source: Path, target: Path) -> bool:
    """Hard-link source to target unless target exists. NFS may report failure for a link it made (a lost
    reply to a retried request), so success is read off the source's link count."""
    try:
        os.link(source, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        return os.stat(source).st_nlink == 2


class Lease:
    """A held lease; renew() keeps it alive, release() gives it up (only if it is still ours)."""

    def __init__(self, path: Path, owner: Owner, what: str):
        self.path, self.owner, self.what = Path(path), owner, what

    @classmethod
    def acquire(cls, path: Path, what: str, job_states="read") -> "Lease":
        """Take the lease at ``path`` or raise :class:`Busy` naming its live owner."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        owner = Owner.this_process()
        tmp = _write_private(path, owner)
        try:
            for _ in range(5):  # each round either takes the lease or removes a dead owner's
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
                if holder.state(job_states) == "alive":
                    raise Busy(what, holder)
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
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        KEEPER.drop(self)
        if self.still_ours():
            self.path.unlink(missing_ok=True)


# A breaker that died mid-break leaves its guard behind; after this long it no longer counts.
BREAK_GUARD_TIMEOUT_S = 60.0


def _break(path: Path, holder: Owner) -> None:
    """Remove the lease of a dead or stale owner, one breaker at a time.

    Breakers take a guard beside the lease (the same exclusive link) and, holding it, remove the lease only
    if it is still the one they judged dead. Without the guard, a breaker that read the dead lease could
    remove the fresh lease another taker had just made, and two takers would both believe they own it."""
    guard = path.with_name(path.name + ".breaking")
    tmp = _write_private(guard, Owner.this_process())
    try:
        if not _link_exclusively(tmp, guard):
            try:
                if time.time() - guard.stat().st_mtime > BREAK_GUARD_TIMEOUT_S:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return
        try:
            current = read_owner(path)
            if current is not None and current.token == holder.token:
                path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)


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
            time.sleep(HEARTBEAT_S)
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
    return Path(out_dir) / "trials" / f"{trial_id}{LEASE_SUFFIX}"


def acquire_trial(out_dir: Path, trial_id: str) -> Lease:
    return Lease.acquire(trial_lease_path(out_dir, trial_id), f"trial {trial_id}")


def task_lease_path(out_dir: Path, job_id: str) -> Path:
    return Path(out_dir) / "submitit" / "leases" / f"{job_id}{LEASE_SUFFIX}"


def current_job_id() -> str:
    """The id the submission log knows this process's task by: SLURM's "array_task", or for submitit's
    local executor its controller's process id; "" outside a task."""
    return _slurm_task() or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")


def guard_folder(out_dir: Path, wait_s: float = 120.0, poll_s: float = 0.5) -> Lease:
    """Hold the folder's submission guard, waiting up to ``wait_s`` for another submission to finish."""
    deadline = time.time() + wait_s
    while True:
        try:
            return Lease.acquire(Path(out_dir) / FOLDER_GUARD, f"the submission guard of {out_dir}")
        except Busy:
            if time.time() >= deadline:
                raise
            time.sleep(poll_s)
