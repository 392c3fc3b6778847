"""What ``aggregate`` wrote, so that it sweeps its own stale outputs and nothing else.

``OUT/aggregate/``, its ``figures/`` and its ``provenance/`` may be links the user made (``figures`` into a
paper's repository is a natural workflow): they are followed, and the outputs are written where they point.
A link someone else made is not followed (``pipeline.links``).

Every run records, in ``aggregate/.outputs.json``, each file it wrote (by its name under ``aggregate/``) with
the identity of what it wrote there (inode, size, modification time). An output an earlier run recorded and
this run did not make is stale, and is removed only if

- it is still the file that run wrote (a file edited or replaced since is someone's own),
- it is a plain file, not a link, and
- the folder holding it is inside the results folder once every link is resolved.

A stale output outside the results folder (through a linked folder) is left where it is, and said in one
line: nothing outside the results folder is ever deleted. Nothing the record does not name is ever deleted
either, whatever its name: a paper's ``fig1.png`` beside the figures is not the pipeline's.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from analysis.atomic import write_text
from pipeline import links
from pipeline.folder import FIGURES, PROVENANCE, ResultsFolder
from pipeline.settings import quoted

# The folders under aggregate/ that outputs are written in ("" for aggregate/ itself).
OUTPUT_FOLDERS = ("", FIGURES, PROVENANCE)


def _identity(path: Path) -> list[int]:
    found = os.lstat(path)
    return [found.st_ino, found.st_size, found.st_mtime_ns]


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


class Outputs:
    """The outputs of one aggregate of ``out_dir``: the record of the previous run, the links checked."""

    def __init__(self, out_dir: Path | str):
        self.where = ResultsFolder.of(out_dir)
        self.aggregate = self.where.aggregate
        for name in OUTPUT_FOLDERS:
            folder = self.aggregate / name if name else self.aggregate
            if folder.is_symlink():
                links.check_followed(folder)
        self.previous = self._read()

    def _name(self, path: Path) -> str:
        """An output's name in the record: its path under aggregate/ (``figures/x.png``)."""
        return Path(path).relative_to(self.aggregate).as_posix()

    def _read(self) -> dict[str, list[int]]:
        """The previous record; entries that name anything but an output (a record edited by hand, or
        planted) are ignored, and so is a record that cannot be read: nothing it names is then swept."""
        try:
            recorded = json.loads(self.where.outputs_record.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(recorded, dict):
            return {}
        return {name: identity for name, identity in recorded.items()
                if self._is_output_name(name) and isinstance(identity, list) and len(identity) == 3
                and all(isinstance(value, int) for value in identity)}

    @staticmethod
    def _is_output_name(name: str) -> bool:
        parts = name.split("/")
        folder, file = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]) if len(parts) == 2 else ("?", "")
        return folder in OUTPUT_FOLDERS and file not in ("", ".", "..") and not file.startswith(".")

    def note_written(self, paths: list[Path]) -> None:
        """Add outputs just written to the record (the previous run's entries stay)."""
        self._save({**self.previous, **{self._name(p): _identity(p) for p in paths}})

    def finish(self, written: list[Path], log: Callable[[str], object], keep: tuple[str, ...] = ()) -> list[str]:
        """The run wrote ``written``: remove the previous run's stale outputs that may be removed (but none
        in the folders ``keep``, which this run did not make), record this run's, and return (and ``log``)
        a line about the stale ones left in place."""
        record = {self._name(p): _identity(p) for p in written}
        root = os.path.realpath(self.where.root)
        left = []
        for name, identity in self.previous.items():
            if name in record:
                continue
            if name.partition("/")[0] in keep and "/" in name:
                record[name] = identity
            elif self._remove_if_ours(self.aggregate / name, identity, root) == "outside":
                left.append(name)
        self._save(record)
        if not left:
            return []
        line = (f"aggregate: left {len(left)} output(s) of an earlier run that this one did not make, as they are "
                f"outside {quoted(self.where.root)} (through a link): {', '.join(left[:5])}"
                + (", ..." if len(left) > 5 else ""))
        log(line)
        return [line]

    @staticmethod
    def _remove_if_ours(path: Path, identity: list[int], root: str) -> str:
        """'removed', 'outside' (left: beyond the results folder), or 'kept' (gone, changed or not a file).
        The folder is opened first and judged by what was opened, so that a link swapped in meanwhile
        cannot redirect the removal."""
        try:
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return "kept"
        try:
            if not _inside(os.readlink(f"/proc/self/fd/{folder}"), root):
                return "outside"
            try:
                found = os.stat(path.name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                return "kept"
            if not stat.S_ISREG(found.st_mode) or [found.st_ino, found.st_size, found.st_mtime_ns] != identity:
                return "kept"
            os.unlink(path.name, dir_fd=folder)
            return "removed"
        finally:
            os.close(folder)

    def _save(self, record: dict[str, list[int]]) -> None:
        write_text(self.where.outputs_record, json.dumps(record, indent=0, sort_keys=True))
