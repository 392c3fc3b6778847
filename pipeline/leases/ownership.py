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

This module takes, renews and releases leases; what a lease says and how its owner is judged is
``pipeline.leases.owner``, and removing a dead one is ``pipeline.leases.breaking``. "SLURM" above stands for
whichever scheduler has a queue (``pipeline.schedulers``): the lease asks it, not SLURM by name.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from pipeline import durable, schedulers
from pipeline.errors import UserError
from pipeline.folder import ResultsFolder
from pipeline.leases.breaking import break_lease
from pipeline.leases.owner import (
    DEFAULT_HEARTBEAT_S,
    STALE_VARIABLE,
    JobStates,
    Owner,
    UnreadableLease,
    heartbeat_s,
    link_exclusively,
    process_start_ticks,
    read_owner,
    stale_after_s,
    stale_limit_s,
    watch_unchanged,
    write_private,
)
from pipeline.settings import ConfigError, quoted

# What the lease's owner is and how a lease file is read are pipeline.leases.owner's; they are named here too,
# where the layers above take leases.
__all__ = ["KEEPER", "Busy", "Lease", "LostOwnership", "Owner", "UnreadableLease", "acquire_trial", "guard_folder",
           "heartbeat_s", "process_start_ticks", "read_owner", "stale_after_s", "task_lease_path", "trial_lease_path"]


class Busy(UserError, RuntimeError):
    """Someone else holds the lease; the message names them."""

    def __init__(self, what: str, owner: Owner | UnreadableLease):
        self.owner = owner
        super().__init__(f"{what} is held by {owner.describe()}")


class LostOwnership(UserError, RuntimeError):
    """This process's lease was taken over (its heartbeat lapsed): it must stop writing at once."""


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Lease:
    """A held lease; renew() keeps it alive, release() gives it up (only if it is still ours)."""

    def __init__(self, path: Path, owner: Owner, what: str):
        self.path, self.owner, self.what = Path(path), owner, what
        self.noted = False  # left with a note of why its owner stopped (note_stop), not released

    @classmethod
    def acquire(cls, path: Path, what: str, job_states: JobStates = "read",
                note: Callable[[str], None] = _note) -> Lease:
        """Take the lease at ``path`` or raise :class:`Busy` naming its live owner. An unproven lease is
        watched for the stale period first (``note`` says so, and says when it is broken)."""
        path = Path(path)
        stale = stale_after_s()  # a bad setting is refused before anything is touched
        durable.make_dirs(path.parent)
        jobs = schedulers.view(job_states)
        owner = Owner.this_process()
        tmp = write_private(path, owner)
        try:
            for _ in range(8):  # each round either takes the lease or removes a dead owner's
                if link_exclusively(tmp, path):
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
                break_lease(path, holder)
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
        tmp = write_private(self.path, self.owner)
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


class _Keeper:
    """Renews every lease this process holds from a daemon thread: an epoch can last longer than the stale
    limit (the 784-element orbit at paper size), and the owner must stay provably alive through it."""

    def __init__(self) -> None:
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
