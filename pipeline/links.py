"""Symbolic links in a results folder: followed only where the user asked for it.

A results folder on shared storage is writable by a group, so a link in it may have been planted by anyone
in that group. A folder the user linked in (``aggregate/figures`` into a paper's repository) is what they
asked for, and is followed; a link made by another user is not, and says so in one line. The link's own
owner tells the two apart: only its maker (or root) can have made it, and it cannot be changed afterwards,
only replaced (by a link of the replacer's own).

A file is never written through a link at its own name: appends open it without following one (a log), and
outputs are written to a new file and renamed over the name, which replaces a link rather than following it.

Torch-free; it imports nothing of the project but its errors and messages.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TextIO

from pipeline.errors import ConfigError
from pipeline.settings import quoted


def made_by_this_user(path: Path) -> bool:
    """Whether the link at ``path`` was made by the user running this process (or by root)."""
    return os.lstat(path).st_uid in (os.geteuid(), 0)


def check_followed(path: Path) -> None:
    """Refuse, in one line, a folder at ``path`` that is a link the user did not make."""
    path = Path(path)
    if path.is_symlink() and not made_by_this_user(path):
        owner = os.lstat(path).st_uid
        raise ConfigError(f"{quoted(path)} is a link made by another user (uid {owner}) to "
                          f"{quoted(os.readlink(path))}: not followed; remove it (or make it yourself) and run "
                          "again")


class LinkNotFollowed(OSError):
    """A file to append to is a link: it is not written through."""


def open_for_append(path: Path) -> TextIO:
    """``path`` opened for appending text, created if absent, never through a link at its name."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LinkNotFollowed(errno.ELOOP, f"{quoted(path)} is a symbolic link, which is not written "
                                               "through") from None
        raise
    return open(fd, "a", encoding="utf-8")
