"""Room on the disk for a trial's next write: a check before it, and a full disk or quota told apart from other
failures however the library that hit it words it. A trial stops on either with its file whole.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import UserError
from pipeline.settings import quoted

# Free space a write must leave beyond its own size: HDF5 allocates chunks and metadata around the data.
SPACE_MARGIN_BYTES = 4 * 1024 * 1024
# "0" turns the free-space check off, as a quota that df does not show would: the tests of full disks
# use it to reach the writes themselves, which must then fail without damage.
SPACE_CHECK_VARIABLE = "PIPELINE_FREE_SPACE_CHECK"


class DiskFull(OSError, UserError):
    """No room for the next write: the trial stops before touching its file, which keeps its last epoch.
    ``before_writing``: found by the free-space check, before anything was written (the file is whole, and
    the margin the check keeps is room for the status that says why it stopped)."""

    before_writing = False


def is_disk_full(error: BaseException) -> bool:
    """Whether an error means the disk or the quota is full, however the library that hit it words it
    (h5py quotes the errno in text; torch's serializer says only that the write failed)."""
    if isinstance(error, DiskFull):
        return True
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return any(words in text for words in ("No space left", "Disk quota exceeded", "errno = 28", "errno = 122"))


def check_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFull unless ``needed`` bytes (and a margin) fit under ``folder``. A quota the file system
    does not report is caught when the write fails instead (see is_disk_full), which loses nothing either."""
    if os.environ.get(SPACE_CHECK_VARIABLE, "1") == "0":
        return
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    if free < 2 * needed + SPACE_MARGIN_BYTES:
        full = DiskFull(errno.ENOSPC, f"no space left on device for {what}: {free / 1e6:.1f} MB free under "
                                      f"{quoted(folder)}, {needed / 1e6:.1f} MB needed; free some space and resubmit")
        full.before_writing = True
        raise full


class WriteErrors:
    """A binary file for torch.save that remembers the OSError of a failed write (torch replaces it with a
    RuntimeError that has no errno), so that a full disk is reported as one."""

    def __init__(self, handle: BinaryIO):
        self.handle: BinaryIO = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()
