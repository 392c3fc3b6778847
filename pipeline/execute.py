"""Running trials of a results folder into their own files: what ``run-trial`` and every array task do.

A trial writes ``trials/<trial_id>.h5`` (with its rolling checkpoint ``<trial_id>.state.pt`` while it
runs) and ``logs/<trial_id>.log``, and nothing else. Complete trials are skipped; interrupted or failed
ones resume after their last checkpointed epoch.
"""

from __future__ import annotations

from pathlib import Path

from . import experiments
from .experiments import Trial
from .manifest import utc_now


class TrialLog:
    """Appends progress lines to logs/<trial_id>.log and echoes them to stdout (the job log)."""

    def __init__(self, out_dir: Path, trial_id: str):
        self.path = Path(out_dir) / "logs" / f"{trial_id}.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a") as handle:
            handle.write(f"{utc_now()} {line}\n")


def execute(out_dir: Path, trials: list[Trial], force: bool = False, checkpoint_every_s: float = 60.0,
            on_store=None) -> dict[str, str]:
    """Run (or resume, or skip) trials into their files: one trial, or several trained packed (they must
    differ only in their seed). Returns trial id -> 'complete' (already was) or 'ran'.

    ``on_store(store)`` is called with every store before training, so that a launcher can persist the
    latest state on preemption. An error stops every trial of the call; each records it in its file."""
    from .runner import run_trials
    from .store import CheckpointClock, TrialFile

    if len(trials) > 1:
        experiments.check_packable(trials)
    clock = CheckpointClock(checkpoint_every_s)  # packed trials checkpoint at the same epochs
    outcomes, pending = {}, []
    for trial in trials:
        log = TrialLog(out_dir, trial.trial_id)
        store = TrialFile(out_dir, trial, force=force, log=log, clock=clock)
        if store.prepare() == "complete":
            log(f"{trial.trial_id}: already complete; skipped (use --force to rerun)")
            outcomes[trial.trial_id] = "complete"
        else:
            pending.append((trial, log, store))
    if not pending:
        return outcomes
    for _, log, store in pending:
        store.pack_size = len(pending)  # the seeds actually trained together
        if len(pending) > 1:
            log("training packed with " + ", ".join(t.trial_id for t, _, _ in pending))
        if on_store is not None:
            on_store(store)
    try:
        run_trials([t for t, _, _ in pending], [s for _, _, s in pending])
    except Exception as error:
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        for trial, log, store in pending:
            log(f"{trial.trial_id}: FAILED: {message}")
            store.mark_failed(message)
        raise
    outcomes.update({trial.trial_id: "ran" for trial, _, _ in pending})
    return outcomes
