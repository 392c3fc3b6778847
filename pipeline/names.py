"""The names the pipeline builds paths and scripts from, checked wherever they are read.

A results folder on shared storage is writable by a group, and what is read from it (a trial id in
``manifest.json``, a job id in ``submissions.jsonl``) can have been written by anyone there. A trial id becomes
file names (``trials/<id>.h5``, ``logs/<id>.log``), so it must be a name and nothing more: a manifest saying
``../../outside/victim`` wrote files outside the folder. A job id is passed to ``scancel`` and names a lease.
Text that goes into an sbatch script (a grid's name, a folder's path) must not hold a line break, which would
turn the rest of an ``#SBATCH`` line into a shell command.

Torch-free; it imports nothing of the project but its errors and messages.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from pipeline.errors import ConfigError

# A trial id as the grids make them: labels, swept values and the seed joined by "-" (``rot-aug-s007``,
# ``rot-nom-lr0.0001-s000``): letters, digits, ".", "+", "-" and "_", starting with a letter or digit.
TRIAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
# A task as the submission log knows it: SLURM's "123" or "123_4" (an array task), or a local process id.
JOB_ID = re.compile(r"[0-9]{1,20}(_[0-9]{1,10})?")
TRIAL_ID_WORDS = "letters, digits, '.', '+', '-' and '_', starting with a letter or digit, at most 200"
JOB_ID_WORDS = "a SLURM job id (123 or 123_4) or a process id"


def is_trial_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and TRIAL_ID.fullmatch(value) is not None


def is_job_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def check_trial_id(value: object, where: str) -> str:
    if not is_trial_id(value):
        raise ConfigError(f"{where}: trial id {value!r} is not a name; accepted: {TRIAL_ID_WORDS}")
    return value


def control_characters(text: str) -> list[str]:
    """The control characters in ``text`` (line breaks, tabs, escapes), as Python writes them."""
    return sorted({repr(c) for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0})


def check_script_text(text: str, what: str) -> str:
    """Refuse text that is to go into an sbatch script if it holds control characters (a line break would
    end an ``#SBATCH`` line and start a shell command)."""
    found = control_characters(text)
    if found:
        # Written as Python writes it: quoted for a shell, a line break would split this message too.
        raise ConfigError(f"{what} {text!r} holds {', '.join(found)}, which an sbatch script cannot carry; "
                          "accepted: a name or path without line breaks or other control characters")
    return text
