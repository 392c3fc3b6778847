"""Following a grid while it runs: ``status --watch`` and ``logs TRIAL_ID [-f]``.

``status --watch [SECONDS]`` redraws the status table every SECONDS (10 by default) until nothing of the
grid is queued or running, or Ctrl-C; on a terminal it redraws in place, into a file or a pipe it
appends one table per round with the time. ``logs`` prints a trial's own log (``OUT/logs/<trial>.log``);
with ``-f`` it goes on printing what is appended until the trial stops (complete, failed, cancelled) or
Ctrl-C. A trial that has not written a log yet is told apart from one that does not exist.
"""

from __future__ import annotations

import difflib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from pipeline.folder import ResultsFolder
from pipeline.launch.monitor import format_status, gather
from pipeline.leases.ownership import read_owner, trial_lease_path
from pipeline.settings import ConfigError
from pipeline.trialfile.files import inspect, trial_paths
from pipeline.trialfile.manifest import read_manifest, utc_now
from pipeline.trialfile.manifest import trial_ids as manifest_trial_ids

DEFAULT_WATCH_S = 10.0
FOLLOW_POLL_S = 0.5


def watch(out_dir: Path, every_s: float, only_unfinished: bool = False, stream: TextIO | None = None,
          rounds: int | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
    """Print the status every ``every_s`` seconds until the grid has nothing queued or running."""
    stream = stream or sys.stdout
    on_terminal = stream.isatty()
    done = 0
    while True:
        states = gather(out_dir)
        table = format_status(states, only_unfinished)
        active = sum(s.in_queue or s.state == "unknown" for s in states)
        header = (f"{utc_now()}  {out_dir}: {active} trial(s) queued or running"
                  + (f"; every {every_s:g} s, Ctrl-C stops watching (not the grid)" if active else "; nothing left to run"))
        if on_terminal:
            stream.write("\x1b[H\x1b[2J")  # home and clear: the table stays in place
        stream.write(f"{header}\n{table}\n\n")
        stream.flush()
        done += 1
        if not active or (rounds is not None and done >= rounds):
            return
        sleep(every_s)


def trial_ids(out_dir: Path) -> list[str]:
    return manifest_trial_ids(read_manifest(out_dir))


def check_trial(out_dir: Path, trial_id: str) -> None:
    known = trial_ids(out_dir)
    if trial_id not in known:
        close = difflib.get_close_matches(trial_id, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f"; accepted: {known[0]} ... {known[-1]}"
        raise ConfigError(f"unknown trial {trial_id!r} in {out_dir}{hint}")


def log_path(out_dir: Path, trial_id: str) -> Path:
    return ResultsFolder.of(out_dir).trial_log(trial_id)


def _still_going(out_dir: Path, trial_id: str) -> bool:
    """Whether the trial may still write to its log: it holds a lease, or its file is not finished."""
    owner = read_owner(trial_lease_path(out_dir, trial_id))
    if owner is not None and not owner.stopped:  # a lease left to say why it stopped holds nothing
        return True
    path, _ = trial_paths(out_dir, trial_id)
    return not path.exists() or inspect(path).status == "running"


def show_log(out_dir: Path, trial_id: str, follow: bool = False, stream: TextIO | None = None,
             sleep: Callable[[float], None] = time.sleep, idle_limit_s: float | None = None) -> int:
    """Print the trial's log (and with ``follow``, what is appended to it until the trial stops)."""
    stream = stream or sys.stdout
    out_dir = Path(out_dir)
    check_trial(out_dir, trial_id)
    path = log_path(out_dir, trial_id)
    if not path.exists() and not follow:
        state = next(s for s in gather(out_dir) if s.trial_id == trial_id)
        stream.write(f"{trial_id} has no log yet ({state.state}: {state.detail})\n")
        return 0
    if not path.exists():
        stream.write(f"waiting for {trial_id} to start writing its log (Ctrl-C stops)\n")
        stream.flush()
    position, idle = 0, 0.0
    while True:
        stopping = follow and not _still_going(out_dir, trial_id)  # decided first: its last lines still print
        if path.exists():
            with open(path, "rb") as handle:
                handle.seek(position)
                chunk = handle.read()
            # Only whole lines: a writer may be in the middle of one.
            complete = chunk[: chunk.rfind(b"\n") + 1] if b"\n" in chunk else b""
            if complete:
                stream.write(complete.decode("utf-8", errors="replace"))
                stream.flush()
                position += len(complete)
                idle = 0.0
        if not follow or stopping or (idle_limit_s is not None and idle >= idle_limit_s):
            return 0
        sleep(FOLLOW_POLL_S)
        idle += FOLLOW_POLL_S
