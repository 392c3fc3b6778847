"""Progress lines for the steps that take a while without an epoch line of their own: reading a grid's
trial files and drawing its figures (``aggregate``), and the measurements after training (Experiment S's
final stage).

On a terminal a tqdm bar; into a file or a pipe (a job log, CI) plain lines, ``what: done/total (pct%)
elapsed``, at most every ``every_s`` seconds and always at the end, so that a log shows how far it got
without filling with carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """Counts steps of one stage and reports them; use as a context manager, call ``advance``."""

    def __init__(self, what: str, total: int | None, stream: TextIO | None = None, every_s: float = 10.0,
                 log: Callable[[str], object] | None = None):
        self.what, self.total, self.every_s = what, total, every_s
        self.stream = stream or sys.stderr
        self.log = log  # a line printer (a trial's log); else the stream
        self.done = 0
        self.started = self._last = time.monotonic()
        self._bar = None
        if log is None and self.stream.isatty():
            from tqdm import tqdm  # deferred: tqdm, needed only on a terminal

            self._bar = tqdm(total=total, desc=what, file=self.stream, leave=False, dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _line(self) -> str:
        elapsed = time.monotonic() - self.started
        of = f"/{self.total}" if self.total else ""
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return f"{self.what}: {self.done}{of}{share} {elapsed:.1f} s"

    def _emit(self) -> None:
        self._emitted = self.done
        line = self._line()
        if self.log is not None:
            self.log(line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()
        self._last = time.monotonic()

    def advance(self, steps: int = 1, total: int | None = None) -> None:
        self.done += steps
        if total is not None:
            self.total = total
        if self._bar is not None:
            if total is not None:
                self._bar.total = total
            self._bar.update(steps)
        elif time.monotonic() - self._last >= self.every_s:
            self._emit()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self.stream.write(self._line() + "\n")
        elif (self.done or self.total) and getattr(self, "_emitted", None) != self.done:
            self._emit()


def iterate(items: Iterable[T], what: str, stream: TextIO | None = None, every_s: float = 10.0) -> Iterator[T]:
    """``items`` one by one, reporting progress as they go."""
    items = list(items)
    with Progress(what, len(items), stream, every_s) as progress:
        for item in items:
            yield item
            progress.advance()


class StageReport(Protocol):
    """How the measurements announce their stages (:class:`StageProgress` in a run)."""

    def __call__(self, stage: str, done: int, total: int | None = None) -> None: ...


class StageProgress:
    """The hook an experiment's ``finalize`` may call as it measures: ``progress(stage, done, total)``,
    e.g. ``progress("Lanczos on E", 12, 30)``. Each stage's progress goes to the trial's log as lines, at
    most every ``every_s`` seconds and at the end of the stage (``pipeline.run.runner`` passes one in)."""

    def __init__(self, log: Callable[[str], object], prefix: str, every_s: float = 10.0):
        self.log, self.prefix, self.every_s = log, prefix, every_s
        self._stage: str | None = None
        self._progress: Progress | None = None

    def __call__(self, stage: str, done: int, total: int | None = None) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._progress = Progress(f"{self.prefix}: {stage}", total, log=self.log, every_s=self.every_s)
        progress = self._progress
        assert progress is not None  # made with its stage, above
        progress.advance(max(0, done - progress.done), total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
