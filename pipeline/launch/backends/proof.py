"""Proof that a process of this machine runs this pipeline on this results folder, before it is signalled.

``cancel`` finds the processes to stop in the folder: the trials' and tasks' leases and the submission log
name them by host, boot, PID namespace, PID and start time. That identity proves a PID still means the
process that was recorded, but not that the record is true: a folder on shared storage is writable by a
group, and a forged lease naming any process of the user (with its start time, which anyone can read in
``/proc``) made ``cancel`` send it SIGUSR1, whose default action ends it. So a process is signalled only if,
besides its identity, its own command line (which the folder cannot change) shows it runs this pipeline on
this folder:

- ``python -m pipeline COMMAND ... --out OUT`` (or the ``pipeline`` entry point), ``OUT`` being this folder,
  relative to the process's own working directory;
- a task process of the folder: ``python -m pipeline.launch.sealed FOLDER`` (or submitit's
  ``submitit.core._submit FOLDER``, as tasks started before it was sealed ran) or the local controller
  ``python -m pipeline.launch.local_controller FOLDER``, with ``FOLDER`` inside this folder;
- any of those run by ``sh -c`` (the local controller started after a profile's setup lines).

Torch-free; Linux's ``/proc``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

# Modules whose first argument is the submitit folder (inside the results folder) of the task they run.
TASK_MODULES = ("pipeline.launch.sealed", "submitit.core._submit", "pipeline.launch.local_controller")
ENTRY_POINT = "pipeline"


def command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [word.decode(errors="replace") for word in raw.split(b"\0")[:-1]] or None


def _working_directory(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _out_option(words: list[str]) -> str | None:
    for position, word in enumerate(words):
        if word == "--out" and position + 1 < len(words):
            return words[position + 1]
        if word.startswith("--out="):
            return word.removeprefix("--out=")
    return None


def _folder_named(words: list[str], cwd: str, folder: str) -> bool:
    """Whether a command's words run this pipeline on ``folder`` (a resolved path)."""
    def resolved(path: str) -> str:
        return os.path.realpath(os.path.join(cwd, path))

    for position, word in enumerate(words):
        rest = words[position + 1:]
        if word == "-m" and rest:
            module, arguments = rest[0], rest[1:]
            if module == ENTRY_POINT:
                out = _out_option(arguments)
                if out is not None and resolved(out) == folder:
                    return True
            elif module in TASK_MODULES and arguments and _inside(resolved(arguments[0]), folder):
                return True
        elif Path(word).name == ENTRY_POINT and position <= 1:  # the entry point, run directly or by python
            out = _out_option(rest)
            if out is not None and resolved(out) == folder:
                return True
    return False


def runs_on_folder(pid: int, out_dir: Path) -> bool:
    """Whether process ``pid`` of this machine runs this pipeline on the results folder ``out_dir``."""
    words, cwd = command_line(pid), _working_directory(pid)
    if not words or cwd is None:
        return False
    folder = os.path.realpath(out_dir)
    if len(words) >= 3 and Path(words[0]).name in ("sh", "bash", "dash") and words[1] == "-c":
        try:
            words = shlex.split(words[2].replace("&&", " ; "))
        except ValueError:
            return False
    return _folder_named(words, cwd, folder)
