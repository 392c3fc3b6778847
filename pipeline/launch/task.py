"""What one array task runs: a pack of trials from the results folder's manifest, in order.

It is checkpointable in submitit's sense: on preemption or time-out, submitit calls ``checkpoint``,
which persists the running trial's last completed epoch and hands back this same task for requeueing;
the requeued task skips the trials that completed and resumes the interrupted one from its checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import submitit


class TrialPackTask(submitit.helpers.Checkpointable):
    """Runs the manifest's trials ``indices`` in order; with ``pack_seeds``, CNN trials that differ only in
    their seed are trained together (pipeline.packing), at most ``pack_size`` at a time."""

    def __init__(self, out_dir: Path, indices: list[int], threads: int = 0, pack_seeds: bool = False,
                 pack_size: int = 1):
        self.out_dir = Path(out_dir)
        self.indices = list(indices)
        self.threads = threads
        self.pack_seeds, self.pack_size = pack_seeds, pack_size
        self._stores: list = []

    def __call__(self) -> dict[str, str]:
        import torch

        from ..packing import packs
        from ..trial import execute, execute_packed, read_manifest, trials_of_manifest

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        trials = trials_of_manifest(read_manifest(self.out_dir))
        items = [(index, trials[index]) for index in self.indices]
        units = packs(items, self.pack_size) if self.pack_seeds else [[item] for item in items]
        outcomes, failures = {}, []
        for unit in units:
            try:
                if len(unit) > 1:
                    outcomes.update(execute_packed(self.out_dir, unit, on_store=self._remember))
                else:
                    index, trial = unit[0]
                    outcomes[trial.trial_id] = execute(self.out_dir, index, trial, on_store=self._remember)
            except Exception as error:  # the other trials of the task still run; the task fails at the end
                names = ", ".join(trial.trial_id for _, trial in unit)
                failures.append(f"{names}: {type(error).__name__}: {error}".splitlines()[0])
            finally:
                self._stores = []
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(units)} units of trials failed: " + "; ".join(failures))
        return outcomes

    def _remember(self, store) -> None:
        self._stores.append(store)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        for store in self._stores:
            store.save_latest_state()
        self._stores = []  # the requeued copy is pickled: it must not carry the live trials' state
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
