"""Requests to stop training that are never lost: a signal handler only notes the request, and training
acts on it at its next seam (between epochs, between the chunks of a full-batch gradient, between
optimizer steps), where nothing is half-done.

An exception raised from inside a signal handler surfaces wherever the main thread happens to be: in a
weak-reference callback, a ``__del__`` or a library's cleanup it is printed as "Exception ignored" and
lost, and the trial trains on; inside a write it can leave half of it. Hence the notes.

- ``pipeline cancel`` (SIGUSR1 locally; ``scancel --signal=USR1`` on SLURM): the running trials save their
  last completed epoch, say ``cancelled`` in their files, and the process stops (:class:`Cancelled`).
- Ctrl-C in a training command: the same; a second Ctrl-C interrupts at once.
- Preemption or the time limit (submitit's signal, USR2): the task saves its trials' last epoch and is
  requeued (:class:`Requeue`; ``pipeline.launch.task`` hands it to submitit).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType

CANCEL_SIGNAL = signal.SIGUSR1

_requests: list[tuple[str, int]] = []


class Cancelled(BaseException):
    """A request to stop (``pipeline cancel``). A BaseException, like KeyboardInterrupt: no ``except
    Exception`` on the way up may swallow it."""


class Requeue(BaseException):
    """The task is preempted or reaches its time limit: save the last epoch, then requeue."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"preempted or at the time limit (signal {signal.Signals(signum).name})")


def _note(kind: str) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        _requests.append((kind, signum))
    return handler


def _note_interrupt(signum: int, frame: FrameType | None) -> None:
    if any(kind == "interrupt" for kind, _ in _requests):
        raise KeyboardInterrupt  # asked twice: now
    _requests.append(("interrupt", signum))


def install(interrupt: bool = False, requeue_signal: int | None = None) -> None:
    """Note stop requests in this (main) thread: the cancel signal always, Ctrl-C with ``interrupt``, and
    submitit's preemption signal when given."""
    signal.signal(CANCEL_SIGNAL, _note("cancel"))
    if interrupt:
        signal.signal(signal.SIGINT, _note_interrupt)
    if requeue_signal is not None:
        signal.signal(requeue_signal, _note("requeue"))


def requested() -> bool:
    return bool(_requests)


# Which request wins when several came since the last seam: a person's stop over the time limit's requeue
# (a cancel that came with the time-limit signal and lost to it was lost for good: the requeued task trained
# on), then whichever came first.
_PRECEDENCE = {"cancel": 0, "interrupt": 1, "requeue": 2}


def check() -> None:
    """At a seam of training: act on the request that wins (a stop over a requeue), if any; all are used up."""
    if not _requests:
        return
    kind, signum = min(_requests, key=lambda request: _PRECEDENCE[request[0]])
    _requests.clear()
    if kind == "requeue":
        raise Requeue(signum)
    if kind == "interrupt":
        raise KeyboardInterrupt
    raise Cancelled(f"cancelled by request (signal {signal.Signals(signum).name})")
