"""What one array task runs: some trials of the results folder's manifest, in order, as units of training
that the submission decided (``pipeline.launch.layout``): one trial, or seeds trained packed together.

It is checkpointable in submitit's sense: on preemption or time-out SLURM (or submitit's local
controller) sends submitit's signal. Submitit's own handler would checkpoint and requeue from inside the
signal handler, wherever training happens to be; the task instead only notes the signal
(``pipeline.stopping``), and at the next seam of training the running trials save their last completed
epoch, after which the task hands over to submitit's handler, which calls ``checkpoint`` (handing back this
same task) and requeues it. The requeued task skips the trials that completed and resumes the
interrupted one from its checkpoint.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import submitit

from pipeline import stopping
from pipeline.launch.layout import pack_units
from pipeline.launch.records import cancelled_jobs
from pipeline.leases.ownership import Lease, task_lease_path
from pipeline.schedulers import current_job_id
from pipeline.stopping import Cancelled
from pipeline.trialfile.manifest import read_manifest, trials_of_manifest
from pipeline.trialfile.sink import Sink


class ArrayTask(submitit.helpers.Checkpointable):
    """Runs units of the manifest's trials in order: each unit one trial, or seeds trained packed."""

    def __init__(self, out_dir: Path, units: list[list[int]], threads: int = 0, require_cuda: bool = False,
                 cuda_devices: str | None = None, sinks: tuple[str, ...] = ()):
        self.out_dir = Path(out_dir)
        self.sinks = tuple(sinks)  # also write each trial's curves there (pipeline.run.curve_sinks)
        self.units = [list(unit) for unit in units]
        self.threads = threads
        self.require_cuda = require_cuda  # the profile requests GPUs: never train on the node's CPU
        # Locally, the GPUs this worker may use (pipeline.launch.local_gpus); on SLURM, None: SLURM sets them.
        self.cuda_devices = cuda_devices
        self._stores: list = []

    @property
    def indices(self) -> list[int]:
        return [index for unit in self.units for index in unit]

    def __setstate__(self, state: dict) -> None:
        # A task pickled before units were decided at submission (requeued across an upgrade) packs as it did;
        # one pickled before curve sinks had a name writes TensorBoard curves as it did.
        self.__dict__.update(state)
        if "sinks" not in state:
            self.sinks = ("tensorboard",) if state.get("tensorboard") else ()
        if "units" not in state:
            self.units = [[index] for index in state.get("indices", [])]
            self._legacy_units = (state.get("indices", []), state.get("pack_seeds", False), state.get("pack_size", 1))

    def __call__(self) -> dict[str, str]:
        from pipeline.core import numerics  # deferred: torch, imported only in the task that trains

        # Submitit installed its preemption handler before calling the task: keep it to call it later,
        # outside any signal handler, once the trials have saved their last epoch.
        requeue_signal = submitit.JobEnvironment._usr_sig()
        submitit_handler = signal.getsignal(requeue_signal)
        stopping.install(requeue_signal=requeue_signal if callable(submitit_handler) else None)
        if self.cuda_devices is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.cuda_devices  # before anything initialises CUDA
        # The first line of the task's log: which GPUs it was given, where a wrong device starts.
        print(f"task of {len(self.indices)} trial(s): CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}", flush=True)
        if self.require_cuda:
            from pipeline.core.driver import check_here  # deferred: torch, as above

            os.environ[numerics.REQUIRE_CUDA_VARIABLE] = "1"  # every trial of the task checks it, too
            numerics.check_cuda(f"task of {len(self.indices)} trial(s) on a profile that requests GPUs")
            print(f"CUDA: {check_here().line}", flush=True)
        job_id = current_job_id()
        # The task's own lease tells status that this process still works through its list, even when its
        # local controller is gone.
        lease = Lease.acquire(task_lease_path(self.out_dir, job_id), f"task {job_id}") if job_id else None
        try:
            return self._run_units()
        except stopping.Requeue as request:
            print(f"{request}: the trials saved their last epoch; requeueing the task", flush=True)
            if lease is not None:
                lease.release()
                lease = None
            if callable(submitit_handler):  # it is: a Requeue is raised only where it was installed
                submitit_handler(request.signum, None)  # checkpoint() and requeue; it exits the process
            raise
        finally:
            if lease is not None:
                lease.release()

    def _run_units(self) -> dict[str, str]:
        import torch  # deferred: torch, imported only in the task that trains

        from pipeline.run.execute import execute  # deferred: torch, as above

        if self.threads > 0:
            torch.set_num_threads(self.threads)
        trials = trials_of_manifest(read_manifest(self.out_dir))
        if hasattr(self, "_legacy_units"):
            indices, pack_seeds, pack_size = self._legacy_units
            mine = [trials[index] for index in indices]
            units = pack_units(mine, pack_size) if pack_seeds else [[trial] for trial in mine]
        else:
            units = [[trials[index] for index in unit] for unit in self.units]
        outcomes, failures = {}, []
        for position, unit in enumerate(units):
            try:
                self._check_recorded_cancel()
                outcomes.update(execute(self.out_dir, unit, on_store=self._remember, sinks=self.sinks))
            except Cancelled:
                # The running trials saved their last epoch and say so; the rest of the task is not started.
                outcomes.update({t.trial_id: "cancelled" for u in units[position:] for t in u})
                print(f"cancelled: {len(units) - position} unit(s) of this task not run", flush=True)
                return outcomes
            except Exception as error:  # the other trials of the task still run; the task fails at the end
                names = ", ".join(trial.trial_id for trial in unit)
                failures.append(f"{names}: {type(error).__name__}: {error}".splitlines()[0])
            finally:
                self._stores = []
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(units)} units of trials failed: " + "; ".join(failures))
        return outcomes

    def _check_recorded_cancel(self) -> None:
        """Stop before training if ``cancel`` recorded this task cancelled: its signal can miss the task (a
        requeued task between two runs has no process to signal), the record cannot."""
        job_id = current_job_id()
        cancelled = cancelled_jobs(self.out_dir) if job_id else {}
        if job_id in cancelled:
            raise Cancelled(f"cancelled at {cancelled[job_id]} (recorded in the submission log)")

    def _remember(self, store: Sink) -> None:
        self._stores.append(store)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        for store in self._stores:
            store.save_latest_state()
        self._stores = []  # the requeued copy is pickled: it must not carry the live trials' state
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
