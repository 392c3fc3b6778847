"""Running trials of a results folder into their own files: what ``run-trial`` and every array task do.

A trial writes ``trials/<trial_id>.h5`` (with its rolling checkpoint ``<trial_id>.state.pt`` while it
runs) and ``logs/<trial_id>.log``, and nothing else. Complete trials are skipped; interrupted or failed
ones resume after their last checkpointed epoch. Every trial is run under its lease
(``pipeline.leases.ownership``): a trial that someone else is training is refused, with a line naming them, and
the others go on.

Stopping on request (``pipeline.stopping``): ``pipeline cancel`` sends SIGUSR1 to local training processes
(and Ctrl-C interrupts a ``run-trial``); at the next seam of training the running trials save their last
completed epoch, say ``cancelled`` in their files and the process stops. On preemption or at the time
limit they save it and stay ``running`` for the requeued task to resume.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import experiments, stopping
from pipeline.core import numerics
from pipeline.errors import ConfigError
from pipeline.experiments import Trial
from pipeline.folder import ResultsFolder
from pipeline.leases.ownership import Busy, Lease, acquire_trial
from pipeline.links import LinkNotFollowed, check_followed, open_for_append
from pipeline.run import curve_sinks
from pipeline.run.background import BackgroundSink, wanted
from pipeline.run.runner import Diverged, run_trials
from pipeline.settings import CHECKPOINT_EVERY_S, quoted
from pipeline.stopping import Cancelled
from pipeline.trialfile.manifest import utc_now
from pipeline.trialfile.sink import Sink
from pipeline.trialfile.store import CheckpointClock, TrialFile


def install_cancel_handler() -> None:
    """Note stop requests (the cancel signal, Ctrl-C) in this process, for training to act on at its next
    seam (``pipeline.stopping``)."""
    stopping.install(interrupt=True)


class TrialLog:
    """Appends progress lines to logs/<trial_id>.log and echoes them to stdout (the job log)."""

    def __init__(self, out_dir: Path, trial_id: str):
        self.path = ResultsFolder.of(out_dir).trial_log(trial_id)
        self._refused = ""  # why the log is not written (said once), e.g. a link planted at its name

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self._refused:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            check_followed(self.path.parent)
            with open_for_append(self.path) as handle:
                handle.write(f"{utc_now()} {line}\n")
        except (LinkNotFollowed, ConfigError) as error:
            self._refused = str(error)
            print(f"(log not written: {error})", file=sys.stderr, flush=True)
        except OSError as error:  # a full disk must not turn a progress line into a failure of its own
            print(f"(log {quoted(self.path)} not written: {error})", file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def curve_places(out_dir: Path, trial_id: str) -> dict[str, Path]:
    """Where each curve sink (``pipeline.run.curve_sinks``) writes a trial's curves in a results folder."""
    folder = ResultsFolder.of(out_dir)
    return {"tensorboard": folder.tensorboard_run(trial_id), "wandb": folder.wandb}


def _note_curve_gaps(out_dir: Path, trial: Trial, log: TrialLog, store: TrialFile, sinks: Sequence[str]) -> None:
    """A trial resumed without a curve sink that an earlier attempt had: its curves there end at the epoch it
    resumes from. Said in its log, and kept in its file (``pipeline.trialfile.files.CURVE_GAPS_ATTR``) for status."""
    point = store.resume_point()
    if point is None:
        return
    for name in curve_sinks.SINKS:
        place = curve_places(out_dir, trial.trial_id)[name]
        if name not in sinks and curve_sinks.sink_class(name).has_run(place, trial.trial_id, out_dir):
            store.curve_gaps[name] = int(point["epoch"])
            log(f"{trial.trial_id}: resumed after epoch {point['epoch']} without --{name}, which an earlier attempt "
                f"had: its {name} curves end there (resubmit with --{name} to go on writing them)")


# A trial to train: with its log and its store.
Pending = tuple[Trial, TrialLog, TrialFile]


def _sinks(out_dir: Path, pending: list[Pending], names: Sequence[str]) -> list[Sink]:
    """The sinks the runner writes to: each trial's store, with its curves (``pipeline.run.curve_sinks``:
    TensorBoard, W&B) where asked, written from a background thread where that pays (``pipeline.run.background``:
    trials on CUDA)."""
    sinks = [curve_sinks.wrap(store, names, trial, curve_places(out_dir, trial.trial_id))
             for trial, _, store in pending]
    try:
        device = numerics.resolve_device(pending[0][0].settings.device)
    except Exception:  # an unusable device fails where the trial starts, with its own line
        return sinks
    if wanted(device):
        sinks = [BackgroundSink(s, t.trial_id) for (t, _, _), s in zip(pending, sinks)]
    return sinks


def _close_quietly(sinks: list[Sink]) -> None:
    """After a failure: apply what background writers hold (the rows before it), keep the first error."""
    for sink in sinks:
        try:
            sink.close(raise_errors=False)
        except Exception:
            pass


class _Held:
    """The leases and stores a call of :func:`execute` took, given back whatever happens."""

    def __init__(self) -> None:
        self.leases: list[Lease] = []
        self.stores: list[TrialFile] = []

    def release(self) -> None:
        for store in self.stores:
            try:
                store.release()
            except OSError:
                pass  # a journal left behind is checked, and removed, by the next owner
        for lease in self.leases:
            try:
                lease.release()
            except OSError:
                pass  # the lease of a gone owner is taken over by the next one anyway


def _prepare(out_dir: Path, trials: list[Trial], force: bool, clock: CheckpointClock, sinks: Sequence[str],
             held: _Held) -> tuple[dict[str, str], list[Pending]]:
    """Take each trial's lease and open its store: the outcomes known already (busy, complete), and the trials
    to train."""
    outcomes: dict[str, str] = {}
    pending: list[Pending] = []
    for trial in trials:
        try:
            lease = acquire_trial(out_dir, trial.trial_id)
        except Busy as busy:
            # Nothing of a trial held by someone else is written, not even its log.
            print(f"{trial.trial_id}: not started: {busy}", flush=True)
            outcomes[trial.trial_id] = f"busy: {busy}"
            continue
        held.leases.append(lease)
        log = TrialLog(out_dir, trial.trial_id)
        store = TrialFile(out_dir, trial, force=force, log=log, clock=clock, lease=lease)
        held.stores.append(store)
        if store.prepare() == "complete":
            log(f"{trial.trial_id}: already complete; skipped (use --force to rerun)")
            outcomes[trial.trial_id] = "complete"
        else:
            _note_curve_gaps(out_dir, trial, log, store, sinks)
            pending.append((trial, log, store))
    return outcomes, pending


def _requeued(pending: list[Pending]) -> None:
    """Preempted or at the time limit: the last completed epoch is kept and the file stays "running", for the
    requeued task to resume."""
    for trial, log, store in pending:
        log(f"{trial.trial_id}: preempted or at the time limit: saving the last epoch for the requeued task")
        store.save_latest_state()


def _cancelled(pending: list[Pending], error: BaseException) -> None:
    message = str(error) or "interrupted (Ctrl-C)"
    for trial, log, store in pending:
        log(f"{trial.trial_id}: CANCELLED: {message}")
        store.mark_stopped("cancelled", message, error)


def _failed(pending: list[Pending], error: Exception) -> None:
    """Each trial records the error in its file, except where recording is what failed (a full disk): its lease
    says it then."""
    for trial, log, store in pending:
        message = _one_line(error)
        if isinstance(error, Diverged) and trial.trial_id not in error.trial_ids:
            message = f"stopped with its pack: {message}"  # it did not diverge itself: a rerun goes on
        log(f"{trial.trial_id}: FAILED: {message}")
        if not store.mark_failed(message, error) and isinstance(error, OSError) and store.lease is not None:
            # A full disk or an I/O error that its file cannot record: its lease says it, for status.
            store.lease.note_stop(message)


def _train(out_dir: Path, pending: list[Pending], on_store: Callable[[Sink], None] | None,
           sinks: Sequence[str]) -> None:
    """Train the pending trials together, each into its sinks; a stop or an error is recorded in every file
    (a background writer first applies the rows it holds)."""
    wrapped = _sinks(out_dir, pending, sinks)
    for (_, log, store), sink in zip(pending, wrapped):
        store.pack_size = len(pending)  # the seeds actually trained together
        if len(pending) > 1:
            log("training packed with " + ", ".join(t.trial_id for t, _, _ in pending))
        if on_store is not None:
            on_store(sink)  # a background writer first applies the rows it holds
    try:
        run_trials([t for t, _, _ in pending], wrapped)
        for sink in wrapped:
            sink.close()
    except stopping.Requeue:
        _close_quietly(wrapped)
        _requeued(pending)
        raise
    except (Cancelled, KeyboardInterrupt) as error:
        _close_quietly(wrapped)
        _cancelled(pending, error)
        raise
    except Exception as error:
        _close_quietly(wrapped)
        _failed(pending, error)
        raise
    finally:
        _close_quietly(wrapped)


def execute(out_dir: Path, trials: list[Trial], force: bool = False, checkpoint_every_s: float = CHECKPOINT_EVERY_S,
            on_store: Callable[[Sink], None] | None = None, sinks: Sequence[str] = ()) -> dict[str, str]:
    """Run (or resume, or skip) trials into their files: one trial, or several trained packed (they must
    differ only in their seed). Returns trial id -> 'complete' (it already was), 'ran', or 'busy: <owner>'
    (someone else holds it; it was not touched).

    ``on_store(store)`` is called with every store before training, so that a launcher can persist the
    latest state on preemption. An error stops every trial of the call; each records it in its file, except
    where recording is what failed (a full disk) or the trial is no longer this process's. ``sinks``: the
    curve sinks to write each trial's curves to too (``pipeline.run.curve_sinks``: "tensorboard" into
    ``OUT/tensorboard/<trial_id>/``, "wandb" into ``OUT/wandb/``)."""
    if len(trials) > 1:
        experiments.check_packable(trials)
    stopping.check()  # a request that came between two units of a task: start no other
    held = _Held()
    try:
        # packed trials checkpoint at the same epochs
        outcomes, pending = _prepare(out_dir, trials, force, CheckpointClock(checkpoint_every_s), sinks, held)
        if not pending:
            return outcomes
        _train(out_dir, pending, on_store, sinks)
        outcomes.update({trial.trial_id: "ran" for trial, _, _ in pending})
        return outcomes
    finally:
        held.release()
