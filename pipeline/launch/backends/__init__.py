"""Launch backends, in the style of submitit's executors: one implementation of :class:`~.base.Backend` per
scheduler (``local``: worker processes on this machine; ``slurm``: job arrays), chosen by a cluster profile's
``executor`` or, for what was launched, by a submission record's. Nothing outside this package branches on
the kind of launcher (``tests/test_structure.py`` checks it); adding a scheduler is one module here and one
line in ``BACKENDS``.

Each backend belongs to a scheduler of ``pipeline.schedulers`` (by the same name), which knows the task
identity and the queue that the leases and the trial store ask about, below the launcher. The backends are
imported when first asked for (the SLURM one brings submitit's executor).
"""

from __future__ import annotations

import importlib

from pipeline import schedulers
from pipeline.launch.backends.base import Backend
from pipeline.launch.profiles import Profile
from pipeline.settings import ConfigError

# executor name -> module.class of its backend
BACKENDS = {"local": "local.LocalBackend", "slurm": "slurm.SlurmBackend"}


def backend_class(executor: str) -> type[Backend]:
    if executor not in BACKENDS:
        raise ConfigError(f"unknown executor {executor!r}; accepted: {', '.join(BACKENDS)}")
    module, _, name = BACKENDS[executor].partition(".")
    found: type[Backend] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return found


def backend_of(profile: Profile) -> Backend:
    """The backend that launches onto a cluster profile."""
    return backend_class(profile.executor)(profile)


def backend_of_record(record: dict) -> Backend:
    """The backend that launched a submission record (records before the field existed: the default
    scheduler's, ``pipeline.schedulers.DEFAULT``)."""
    return backend_class(schedulers.of_record(record))(None)
