"""Replace output files atomically, so a reader (or a crashed re-run) never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path


def replace_atomically(path: Path, write) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept last so that writers that infer the format from the name still do.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str) -> Path:
    return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
