"""Launch backends, in the style of submitit's executors: one implementation of :class:`~.base.Backend` per
scheduler (``local``: worker processes on this machine; ``slurm``: job arrays), chosen by a cluster profile's
``executor`` or, for what was launched, by a submission record's. Nothing outside this package branches on
the kind of launcher (``tests/test_structure.py`` checks it); adding a scheduler is one module here and one
line in ``BACKENDS``.

The backends are imported when first asked for: the leases and the trial store use the low-level modules
here (``identity``, ``slurm_queue``) without the launcher.
"""

from __future__ import annotations

import importlib

from pipeline.settings import ConfigError

# executor name -> module.class of its backend
BACKENDS = {"local": "local.LocalBackend", "slurm": "slurm.SlurmBackend"}


def backend_class(executor: str):
    if executor not in BACKENDS:
        raise ConfigError(f"unknown executor {executor!r}; accepted: {', '.join(BACKENDS)}")
    module, _, name = BACKENDS[executor].partition(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def backend_of(profile):
    """The backend that launches onto a cluster profile."""
    return backend_class(profile.executor)(profile)


def backend_of_record(record: dict):
    """The backend that launched a submission record (records before the field existed were SLURM's)."""
    return backend_class(record.get("executor", "slurm"))(None)
