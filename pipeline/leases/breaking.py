"""Removing the lease of a dead or stale owner, one breaker at a time, so that exactly one taker wins the
name afterwards (``pipeline.leases.ownership`` decides that the owner is dead; this module only removes
what was judged).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline import durable
from pipeline.leases.owner import (
    BREAK_GUARD_WAIT_S,
    Owner,
    UnreadableLease,
    link_exclusively,
    process_start_ticks,
    read_owner,
    read_raw,
    watch_unchanged,
    write_private,
)


def remove_if_same(path: Path, raw: str, token: str) -> bool:
    """Remove the file at ``path`` if it still holds ``raw``; True if it did. The file is first moved
    aside under a private name, so that a file someone put there meanwhile is put back, not deleted.

    A file that already differs is left where it is: moving a live lease aside, even for an instant, frees
    its name, and a taker that links in that instant would win a lease that is then put back under it, or
    not put back at all (two owners). Callers hold the breaker's guard, and a dead owner writes nothing, so
    the file cannot change between this look and the move."""
    if read_raw(path) != raw:
        return False
    aside = path.with_name(f".{path.name}.{token}.removed")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if read_raw(aside) == raw:
            return True
        try:
            os.link(aside, path)  # not the one judged: put it back (unless the name is taken again)
        except FileExistsError:
            pass
        return False
    finally:
        aside.unlink(missing_ok=True)


def break_lease(path: Path, holder: Owner | UnreadableLease) -> None:
    """Remove the lease of a dead or stale owner, one breaker at a time.

    Breakers take a guard beside the lease (the same exclusive link) and, holding it, remove the lease only
    if it is still the one they judged dead. Without the guard, a breaker that read the dead lease could
    remove the fresh lease another taker had just made, and two takers would both believe they own it. A
    guard left by a breaker that was killed holding it is removed after a short wait."""
    guard = path.with_name(path.name + ".breaking")
    me = Owner.this_process()
    tmp = write_private(guard, me)
    try:
        if not link_exclusively(tmp, guard):
            _clear_leftover_guard(guard, me)
            return  # the caller's next round tries again
        try:
            if remove_if_same(path, holder.raw, me.token):
                durable.sync_directory(path.parent)
        finally:
            if read_raw(guard) == read_raw(tmp):
                guard.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)


def _clear_leftover_guard(guard: Path, me: Owner) -> None:
    """Wait for another breaker's guard to go; one that stays (its breaker was killed) is removed."""
    raw = read_raw(guard)
    if raw is None:
        return
    breaker = read_owner(guard)
    if breaker is not None and not isinstance(breaker, UnreadableLease) and breaker.same_processes(me) \
            and process_start_ticks(breaker.pid) != breaker.start_ticks:
        seen = "unchanged"  # its breaker is provably gone
    else:
        seen = watch_unchanged(guard, raw, BREAK_GUARD_WAIT_S)
    if seen == "unchanged":
        remove_if_same(guard, raw, me.token)
