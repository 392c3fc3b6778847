"""The cluster profile a submission record names, taken only where it is proven the user's own.

``resubmit`` uses the profile of the grid's last submission unless ``--cluster`` says otherwise. The record
is in ``OUT/submissions.jsonl``, which anyone who can write the folder can change, and a profile is code: its
``setup`` lines run on the nodes through sbatch. So a record's profile is taken

- by name, if it is a profile installed with the pipeline (``slurm/profiles/<name>.toml``: the code's own);
- from the file the record names, only if nobody but the user (or root) can have written it: the file and
  every folder above it are owned by the user or root, and none is writable by group or others (a folder
  with the sticky bit, such as /tmp, may be: there only an entry's owner can replace it).

Anything else is refused in one line that names the file and ``--cluster``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.launch.profiles import PROFILES_DIR, Profile, available_profiles, load_profile
from pipeline.settings import quoted

_TRUSTED_OWNERS = (0,)  # root, besides the user


def written_only_by_this_user(path: Path) -> str:
    """"" if only this user (or root) can have written the file at ``path``; otherwise why not."""
    real = Path(os.path.realpath(path))
    owners = {os.geteuid(), *_TRUSTED_OWNERS}
    found = os.stat(real)
    if found.st_uid not in owners:
        return f"it belongs to uid {found.st_uid}"
    if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "others than you may write it"
    for folder in real.parents:
        found = os.stat(folder)
        if found.st_uid not in owners:
            return f"its folder {quoted(folder)} belongs to uid {found.st_uid}"
        if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not found.st_mode & stat.S_ISVTX:
            return f"others than you may write its folder {quoted(folder)}"
    return ""


def profile_of_record(record: dict) -> Profile:
    """The profile a submission record names (``profile``, ``profile_path``), where it is proven ours."""
    name, path = str(record.get("profile", "")), str(record.get("profile_path", ""))
    installed = name in available_profiles()
    if path and Path(path).exists():
        if installed and Path(path).resolve() == (PROFILES_DIR / f"{name}.toml").resolve():
            return load_profile(name)
        why = written_only_by_this_user(Path(path))
        if not why:
            return load_profile(str(Path(os.path.realpath(path))))
        raise ConfigError(f"the grid's last submission used the cluster profile {quoted(path)}, which resubmit does "
                          f"not take from the folder's records unproven ({why}; its setup lines would run on the "
                          f"nodes): pass --cluster {quoted(path)} if it is yours, or another profile")
    if installed:
        return load_profile(name)
    raise ConfigError(f"the grid's last submission used the cluster profile {name!r}"
                      + (f" ({quoted(path)})" if path else "")
                      + f", which is not installed here: pass --cluster (installed: {', '.join(available_profiles())})")
