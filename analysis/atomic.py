"""Replace output files atomically, so a reader (or a crashed re-run) never sees half a file.

Each output is written to a new temporary file beside it, created exclusively under a name of its own
(``tempfile.mkstemp``: no other writer, no concurrent aggregate and no link planted in a group-writable
folder can be at that name), through the descriptor that created it, then renamed over the output's name,
which replaces whatever is there (a link included) instead of writing through it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# What a new output's mode is before the umask: readable by whoever may read the folder, as open() makes it.
_MODE = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_atomically(path: Path, write: Callable[[IO[Any]], object], text: bool = False) -> Path:
    """Call ``write(handle)`` with a new file open for writing (text in UTF-8 with ``text``, else binary),
    then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept last so that writers that infer the format from the name still do.
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    tmp = Path(name)
    try:
        os.fchmod(fd, _MODE & ~_umask())  # mkstemp's 0600 would hide the report from the group
        with (open(fd, "w", encoding="utf-8", newline="") if text else open(fd, "wb")) as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return replace_atomically(path, lambda handle: handle.write(text), text=True)
