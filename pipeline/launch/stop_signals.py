"""Stop signals while ``submit`` or ``resubmit`` works: Ctrl-C, SIGTERM and a hang-up.

Each ends the command through its cleanup, so that the folder's guard (``OUT/.submit.lease``) is released
rather than left behind by a process killed holding it (:func:`raising_stop_signals`: Python raises
KeyboardInterrupt for Ctrl-C by itself; SIGTERM and SIGHUP are made to raise as well while the guard is held).

Between the start of a launch and the end of its record they wait (:func:`deferred_during_launch`): the
record is completed first, and the signal then stops the command with :class:`LaunchStopped`, which carries
what the launch said (its job ids): what was launched is recorded and runs on, and the command says so.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal turned into an exception, so that every cleanup on the way out runs."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class LaunchStopped(Stopped):
    """A stop signal that came while a launch was made and recorded: it took effect once the record was
    complete. ``said``: what the launch says of itself (its job ids); ``out_dir``: the folder it went to."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.said: list[str] = []
        self.out_dir: Path | None = None


def _raise_stopped(signum: int, frame: FrameType | None) -> NoReturn:
    raise Stopped(signum)


@contextlib.contextmanager
def raising_stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Stopped` in the main thread for the block (instead of killing the
    process on the spot), as Ctrl-C raises KeyboardInterrupt."""
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred_during_launch() -> Iterator[None]:
    """Between the launch and its record, the stop signals wait: if any came, :class:`LaunchStopped` is
    raised once the block has ended well (a block that failed raises its own error)."""
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise LaunchStopped(caught[0])
