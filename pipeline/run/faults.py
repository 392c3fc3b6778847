"""Test-only fault injection: ``PIPELINE_INJECT_FAULT="trial_id@epoch,..."`` makes those trials fail at the
start of that epoch, as a crash would (the file keeps the epochs before it, ``resubmit`` resumes it).

An environment variable rather than a setting, so that removing the fault does not change the grid. It is
read once, when a run starts (:func:`planned`); a run without it does nothing more per epoch than look at an
empty table.
"""

from __future__ import annotations

import os

FAULT_VARIABLE = "PIPELINE_INJECT_FAULT"


class InjectedFault(RuntimeError):
    """Raised by the test-only fault injection (PIPELINE_INJECT_FAULT)."""


def planned(trial_ids: list[str]) -> dict[str, set[int]]:
    """The epochs at which each of these trials is to fail ({} without the variable: the common case)."""
    wanted: dict[str, set[int]] = {}
    for item in os.environ.get(FAULT_VARIABLE, "").split(","):
        trial_id, _, at = item.partition("@")
        if trial_id in trial_ids and at.isdigit():
            wanted.setdefault(trial_id, set()).add(int(at))
    return wanted


def check(faults: dict[str, set[int]], trial_id: str, epoch: int) -> None:
    if epoch in faults.get(trial_id, ()):
        raise InjectedFault(f"injected fault in {trial_id} at epoch {epoch} ({FAULT_VARIABLE})")
