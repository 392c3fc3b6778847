"""What one array task runs: a pack of trials from the results folder's manifest, in order.

It is checkpointable in submitit's sense: on preemption or time-out, submitit calls ``checkpoint``,
which persists the running trial's last completed epoch and hands back this same task for requeueing;
the requeued task skips the trials that completed and resumes the interrupted one from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import submitit


class TrialPackTask(submitit.helpers.Checkpointable):
    def __init__(self, out_dir: Path, indices: list[int], threads: int = 0):
        self.out_dir = Path(out_dir)
        self.indices = list(indices)
        self.threads = threads
        self._store = None

    def __call__(self) -> dict[str, str]:
        import torch

        from ..trial import execute, read_manifest, trials_of_manifest

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        trials = trials_of_manifest(read_manifest(self.out_dir))
        outcomes, failures = {}, []
        for index in self.indices:
            trial = trials[index]
            try:
                outcomes[trial.trial_id] = execute(self.out_dir, index, trial, on_store=self._remember)
            except Exception as error:  # the other trials of the pack still run; the task fails at the end
                outcomes[trial.trial_id] = "failed"
                failures.append(f"{trial.trial_id}: {type(error).__name__}: {error}".splitlines()[0])
            finally:
                self._store = None
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(self.indices)} trials failed: " + "; ".join(failures))
        return outcomes

    def _remember(self, store) -> None:
        self._store = store

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        if self._store is not None:
            self._store.save_latest_state()
        self._store = None  # the requeued copy is pickled: it must not carry the live trial's state
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
