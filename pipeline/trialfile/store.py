"""The HDF5 trial store: one file per trial, appended and flushed every epoch, resumable.

Layout (the public contract; README "The trial file"): the attributes below, and the series, steps and
snapshots that ``pipeline.schema`` declares.

    trials/<trial_id>.h5
      attrs    trial_id, index, experiment, cell, <cell key> (group | variant), mode, seed, swept (JSON),
               status, epochs_done, total_epochs, settings (JSON), git_commit, torch_version,
               numpy_version, h5py_version, hostname, device, data_source, slurm_job_id,
               slurm_array_task_id, started_at, finished_at, wall_seconds, attempts, weights_every
      metrics/<series>                                            (E+1,) or (E+1, L): row 0 = before training
      steps/dist_E (S, L), steps/epoch (S,)                       experiments that record single steps
      weights/epochs (K,), weights/phase (K,)                     the epoch and phase of each snapshot
      weights/<layer> (K, ...)                                    measured layers, weight space, every snapshot
      weights/phase<p>/<parameter> (K_p, ...)                     the other parameters of phase p's model, a row
                                                                  per snapshot of that phase (schema 3)
      results/                                                    what an experiment measures after training

Next to it, while the trial runs, ``<trial_id>.state.pt`` holds the latest checkpoint (model, the start
point of the current phase, the epoch), written atomically; it is removed when the trial completes.
The file is opened, appended and closed once per epoch, so readers see whole epochs. Every write is
all-or-nothing (``pipeline.trialfile.journal``) and durable when it returns (``pipeline.durable``): a full disk or
quota, a kill, a frozen process or a node that dies in the middle of one leaves the file at its last
complete epoch (or the one being written, if its commit reached the disk), and the rerun resumes from
there. Every dataset is written with checksums and the attributes with their own (``pipeline.trialfile.files``). A
run never writes a file it found in place: it works on a consistent copy and renames that into place, so
that a previous writer that wakes up later writes only into an orphaned inode. A file whose bytes are not
what was written all the same (a disk that flipped a bit) reads as damaged, is renamed
``<trial_id>.h5.damaged-<UTC time>`` and the trial restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import h5py
import numpy as np
import torch

from pipeline import durable, experiments, schedulers, schema
from pipeline.core.data import Dataset
from pipeline.experiments import Trial
from pipeline.folder import set_aside
from pipeline.leases.ownership import KEEPER, Lease, LostOwnership
from pipeline.settings import CHECKPOINT_EVERY_S, quoted
from pipeline.trialfile import copying, files, journal, provenance
from pipeline.trialfile.cost import snapshot_epochs
from pipeline.trialfile.files import (
    attrs_checksum,
    inspect,
    open_h5,
    plain,
    read_status,
    seal,
    trial_paths,
)
from pipeline.trialfile.manifest import git_commit, utc_now
from pipeline.trialfile.rows import (
    ROWS_PER_CHUNK,
    STEPS_PER_CHUNK,
    append,
    row_value,
    truncate_after,
    write_snapshot,
)
from pipeline.trialfile.sink import Checkpoint, EpochRecord, Weights
from pipeline.trialfile.space import DiskFull, WriteErrors, check_space, is_disk_full


class CheckpointClock:
    """Decides, once per epoch, whether the checkpoint is due. Trials packed into one training share a
    clock, so that they all checkpoint at the same epochs and resume together."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._last = time.time()
        self._decision: tuple[int, bool] | None = None

    def due(self, epoch: int) -> bool:
        if self._decision is None or self._decision[0] != epoch:
            now = time.time()
            due = self.every_s <= 0 or now - self._last >= self.every_s
            if due:
                self._last = now
            self._decision = (epoch, due)
        return self._decision[1]


class TrialFile:
    """A sink for :func:`pipeline.run.runner.run_trial` that streams to the trial's HDF5 file.

    ``pack_size`` > 1 marks a trial trained together with others in one process (seed packing): its
    per-epoch ``seconds`` and its ``wall_seconds`` are those of the whole pack. ``clock``: when checkpoints
    are due (shared by packed trials); by default every ``CHECKPOINT_EVERY_S``.
    """

    def __init__(self, out_dir: Path, trial: Trial, force: bool = False, log: Callable[[str], object] = print,
                 clock: CheckpointClock | None = None, lease: Lease | None = None):
        self.trial, self.force, self.log = trial, force, log
        self.lease = lease  # the caller's proof of ownership: writes stop the moment it is lost
        self.path, self.state_path = trial_paths(out_dir, trial.trial_id)
        self.pack_size = 1  # the seeds trained together with it (``pipeline.run.execute`` sets it)
        # Curve sink -> the epoch its curves end at, where this attempt resumes without that sink
        # (``pipeline.run.execute`` sets it; ``pipeline.run.curve_sinks``).
        self.curve_gaps: dict[str, int] = {}
        self.clock = clock or CheckpointClock(CHECKPOINT_EVERY_S)
        self._resume: dict | None = None
        self._latest_state: dict | None = None
        self._pending_steps: list = []
        # This writer's own names for its temporary files: two writers never share one, and nobody can foresee
        # one (the lease's token would do for the first, but the lease shows it: a link planted at a name made
        # from it would be written through).
        self.token = uuid.uuid4().hex
        self._inode: int | None = None  # the file this writer installed at self.path, the only one it writes
        # Its root attributes as committed, and those the write in progress sets: their checksum is renewed
        # by every write without reading them all back.
        self._attrs: dict = {}
        self._pending: dict = {}

    def _private(self, path: Path) -> Path:
        return path.with_name(f".{path.name}.{self.token}.tmp")

    # -- before the run --------------------------------------------------------------------------------
    def prepare(self) -> str:
        """Decide what this run does: 'fresh', 'resume' or 'complete' (nothing to do). Only the owner of
        the trial's lease calls this. The file found in place is never written: a resumed run works on a
        consistent copy (the file as of its last complete epoch) and renames it into place."""
        durable.make_dirs(self.path.parent)
        self._remove_others_temporaries()
        if self.force and self.path.exists():
            self.log(f"{self.trial.trial_id}: --force: discarding the existing file and rerunning")
            self._discard()
            return "fresh"
        if not self.path.exists():
            self._remove_checkpoint()
            return "fresh"
        if self._settled_complete():
            return "complete"
        work = self._private(self.path)
        try:
            try:
                copying.consistent_copy(self.path, work)
            except OSError as error:
                raise self._disk_full(error, f"the copy of {self.trial.trial_id} it resumes from") from error
            return self._prepare_from(work)
        finally:
            work.unlink(missing_ok=True)

    def _prepare_from(self, work: Path) -> str:
        state = inspect(work, deep=True)  # every byte the resumed run keeps is checked once
        if state.status in ("damaged", "inconsistent"):
            aside = self._set_aside(state.status)
            what = "unreadable" if state.status == "damaged" else "inconsistent"
            self.log(f"{self.trial.trial_id}: {what} file ({state.problem}) kept as {aside.name}; "
                     "restarting from scratch")
            return "fresh"
        status = state.attrs
        if status["status"] == "complete":
            return "complete"
        if int(status.get("schema_version", 1)) < schema.WHOLE_MODEL_SCHEMA:
            # Its snapshots so far hold the measured layers only; appending whole models would mix two layouts.
            self.log(f"{self.trial.trial_id}: unfinished file of schema {status.get('schema_version', 1)} (before "
                     f"whole-model snapshots); restarting from scratch")
            self._discard()
            return "fresh"
        checkpoint = self._load_state()
        if checkpoint is None or checkpoint["epoch"] > int(status.get("epochs_done", -1)):
            self.log(f"{self.trial.trial_id}: running file without a usable checkpoint; restarting from scratch")
            self._discard()
            return "fresh"
        try:
            truncate_after(work, checkpoint["epoch"])
        except OSError as error:
            raise self._disk_full(error, f"the copy of {self.trial.trial_id} it resumes from") from error
        self._install(work)
        self._resume = checkpoint
        self.log(f"{self.trial.trial_id}: resuming after epoch {checkpoint['epoch']}")
        return "resume"

    def _settled_complete(self) -> bool:
        """Whether the file in place is complete and no commit of it is half-applied (a cheap look: a
        complete trial is skipped without copying it)."""
        header = journal.read_header(journal.journal_path(self.path))
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        if header is not None and header.inode == inode and header.state != journal.IDLE:
            return False
        return inspect(self.path).status == "complete"

    def _remove_others_temporaries(self) -> None:
        """Temporary files of earlier writers of this trial (this writer holds the lease now): a writer that
        stopped before renaming its copy or checkpoint into place finds its name gone when it wakes."""
        folder = self.path.parent
        for name in (self.path.name, self.state_path.name, journal.journal_path(self.path).name):
            for leftover in folder.glob(f".{name}.*.tmp"):
                leftover.unlink(missing_ok=True)
        for old_style in (self.path.name + ".creating", self.state_path.name + ".tmp"):
            (folder / old_style).unlink(missing_ok=True)

    def _discard(self) -> None:
        self.path.unlink(missing_ok=True)
        journal.journal_path(self.path).unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)
        durable.sync_directory(self.path.parent)

    def _set_aside(self, status: str) -> Path:
        """Keep a damaged or inconsistent file under another name (never deleted), and start over."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        aside = set_aside(self.path, status, stamp)
        os.replace(self.path, aside)
        self.state_path.unlink(missing_ok=True)
        durable.sync_directory(self.path.parent)
        return aside

    def _remove_checkpoint(self) -> None:
        durable.unlink(self.state_path)

    def _install(self, work: Path) -> None:
        """Rename this writer's finished private file into place: from here on it is the trial's file. Its
        bytes are made durable before its name, and its journal's name with it."""
        self._check_owner()
        durable.sync_file(work)
        inode = os.stat(work).st_ino
        os.replace(work, self.path)
        self._inode = inode
        journal.start_journal(self.path, self.token)
        with open_h5(self.path) as f:
            self._attrs = {key: plain(value) for key, value in f.attrs.items() if key != schema.ATTRS_CHECKSUM}

    def _load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as error:  # a checkpoint is replaced atomically, so this is rare: start over
            self.log(f"{self.trial.trial_id}: checkpoint unreadable ({error}); ignoring it")
            return None

    # -- writing ---------------------------------------------------------------------------------------
    def _check_owner(self) -> None:
        if self.lease is not None and (self.lease in KEEPER.lost or not self.lease.still_ours()):
            raise LostOwnership(f"{self.trial.trial_id}: the lease was taken over by another owner; stopping "
                                "without writing")

    def _disk_full(self, error: OSError, what: str) -> OSError:
        if not is_disk_full(error):
            return error
        return DiskFull(errno.ENOSPC, f"no space left on device (or quota exceeded) for {what} under "
                                      f"{quoted(self.path.parent)}: the file keeps its last complete epoch; free "
                                      "some space and resubmit")

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[h5py.File]:
        """One all-or-nothing write to the trial file (``pipeline.trialfile.journal``); the ownership of the trial and
        the identity of the file are checked after the file is opened."""
        self._pending = {}
        try:
            with journal.transaction(self.path, self._inode, self._check_owner) as f:
                yield f
                f.attrs[schema.ATTRS_CHECKSUM] = attrs_checksum({**self._attrs, **self._pending})
            self._attrs.update(self._pending)
        except journal.FileReplaced as replaced:
            raise LostOwnership(f"{self.trial.trial_id}: {replaced}; stopping without writing") from None
        except OSError as error:
            raise self._disk_full(error, what) from error

    def _set(self, f: h5py.File, values: dict) -> None:
        """Set root attributes in the write in progress (``_writing``), which seals them."""
        f.attrs.update(values)
        self._pending.update({key: plain(value) for key, value in values.items()})

    # -- the sink protocol -----------------------------------------------------------------------------
    def resume_point(self) -> dict | None:
        return self._resume

    def begin(self, trial: Trial, layer_names: list[str], device: torch.device, data: Dataset) -> None:
        self.layer_names = layer_names
        self._guard(0, f"the start of {trial.trial_id}")
        self.session_start = time.time()
        device_name = str(device)
        if device.type == "cuda":
            device_name += f" ({torch.cuda.get_device_name(device)})"
        run_attrs = {**provenance.run_attrs(device, getattr(data, "files", ())),
                     "hostname": socket.gethostname(), "device": device_name, "git_commit": git_commit(),
                     "torch_version": str(torch.__version__), "numpy_version": np.__version__,
                     "h5py_version": h5py.__version__, "data_source": data.source, "pack_size": self.pack_size,
                     **schedulers.provenance()}  # which task of the submission log ran this attempt
        self.log(f"{trial.trial_id}: training on {device_name}; data: {data.source}")
        if self._resume is None:
            self._create(run_attrs)
        else:
            with self._writing(f"the start of {trial.trial_id}") as f:
                values = {**run_attrs, "status": "running", "attempts": int(f.attrs.get("attempts", 1)) + 1}
                if self.curve_gaps:  # the earliest end of each sink's curves is the one that stays
                    gaps = {**self.curve_gaps, **files.read_curve_gaps(f.attrs.get(files.CURVE_GAPS_ATTR, ""))}
                    values[files.CURVE_GAPS_ATTR] = json.dumps(gaps, sort_keys=True)
                self._set(f, values)
        with open_h5(self.path) as f:
            self.prior_wall = float(f.attrs.get("wall_seconds", 0.0))

    def _create(self, run_attrs: dict) -> None:
        trial, settings = self.trial, self.trial.settings
        experiment = experiments.of(trial)
        labels = experiment.labels(settings)
        tmp = self._private(self.path)
        L = len(self.layer_names)
        names = np.array(self.layer_names, dtype=h5py.string_dtype())
        try:
            with open_h5(tmp, "w") as f:
                f.attrs.update({
                    "trial_id": trial.trial_id, "index": trial.index, "experiment": trial.experiment,
                    "cell": labels.cell, labels.cell_key: labels.cell, "mode": labels.mode, "seed": settings.seed,
                    "swept": json.dumps(trial.swept, sort_keys=True), "status": "running", "epochs_done": -1,
                    "total_epochs": experiment.total_epochs(settings),
                    "settings": json.dumps(dataclasses.asdict(settings), sort_keys=True), "started_at": utc_now(),
                    "wall_seconds": 0.0, "attempts": 1, "weights_every": settings.weights_every,
                    "schema_version": schema.SCHEMA_VERSION, **run_attrs,
                })
                metrics = f.create_group(schema.METRICS)
                for series in schema.series_of(multi_phase=experiment.first_phase_mode is not None):
                    width = (L,) if series.per_layer else ()
                    ds = metrics.create_dataset(series.name, shape=(0, *width), maxshape=(None, *width),
                                                dtype=series.dtype, chunks=(ROWS_PER_CHUNK, *width), fletcher32=True)
                    if series.per_layer:
                        ds.attrs[schema.LAYER_NAMES_ATTR] = names
                seal(f)
            self._install(tmp)
        except OSError as error:
            raise self._disk_full(error, f"the start of {trial.trial_id}") from error
        finally:
            tmp.unlink(missing_ok=True)

    @functools.cached_property
    def _snapshot_epochs(self) -> frozenset[int]:
        return frozenset(snapshot_epochs(self.trial.settings))

    def _wants_weights(self, epoch: int) -> bool:
        return epoch in self._snapshot_epochs

    def _guard(self, needed: int, what: str) -> None:
        """Before any write: this process must still own the trial, and the write must fit on the disk (a
        quota that the check cannot see fails the write itself, which loses nothing either)."""
        self._check_owner()
        check_space(self.path.parent, needed, what)

    def write_epoch(self, record: EpochRecord, model: Weights, checkpoint: Checkpoint) -> None:
        # The last row always keeps its weights: a trial that ends early (converged) ends off the policy's grid.
        snapshot = model.snapshot() if record.last or self._wants_weights(record.epoch) else {}
        what = f"epoch {record.epoch} of {self.trial.trial_id}"
        self._guard(schema.row_bytes(len(self.layer_names)) + sum(t.numel() * t.element_size() for t in snapshot.values()),
                    what)
        with self._writing(what) as f:
            if self._pending_steps:
                steps = self._steps_group(f)
                for step_epoch, row in self._pending_steps:
                    append(steps[schema.STEP_DIST_E], row)
                    append(steps[schema.STEP_EPOCH], step_epoch)
            # The series this file holds (a file of schema 3, resumed, has no step_perp).
            metrics = f[schema.METRICS]
            for name in metrics:
                append(metrics[name], row_value(record, name))
            if snapshot:
                write_snapshot(f, record, snapshot, self.layer_names)
            self._set(f, {"epochs_done": record.epoch,
                          "wall_seconds": self.prior_wall + time.time() - self.session_start})
        self._pending_steps = []  # written: a failed write keeps them for the epoch's next attempt
        # Captured every epoch (a CPU copy) so that a preemption signal, which may arrive in the middle of an
        # optimizer step, persists a consistent state: the last completed epoch.
        self._latest_state = checkpoint()
        if not record.last and self.clock.due(record.epoch):
            self._save_state(self._latest_state)
        # Reported once it is in the file (and checkpointed, when due).
        total = experiments.of(self.trial).total_epochs(self.trial.settings)
        self.log(schema.console_line(record.epoch, record.phase, record.values, self.layer_names, total,
                                     prefix=f"{self.trial.trial_id} ", position=record.position))

    def _steps_group(self, f: h5py.File) -> h5py.Group:
        """``steps/``, created at the first optimizer step an experiment records (the CNN's phase 2)."""
        if schema.STEPS not in f:
            L = len(self.layer_names)
            steps = f.create_group(schema.STEPS)
            for series in schema.STEP_SERIES:
                width = (L,) if series.per_layer else ()
                ds = steps.create_dataset(series.name, shape=(0, *width), maxshape=(None, *width), dtype=series.dtype,
                                          chunks=(STEPS_PER_CHUNK, *width), fletcher32=True)
                if series.per_layer:
                    ds.attrs[schema.LAYER_NAMES_ATTR] = np.array(self.layer_names, dtype=h5py.string_dtype())
        return f[schema.STEPS]

    def _save_state(self, state: dict) -> None:
        """Write the checkpoint to this writer's own temporary name, then rename it into place (if the trial
        is still this writer's). A failed write leaves the previous checkpoint as it was."""
        size = sum(t.numel() * t.element_size() for part in ("model", "initial") for t in state.get(part, {}).values())
        what = f"the checkpoint of {self.trial.trial_id}"
        self._guard(size, what)
        tmp = self._private(self.state_path)
        try:
            with open(tmp, "wb") as handle:
                sink = WriteErrors(handle)
                try:
                    torch.save(state, cast(BinaryIO, sink))  # a file object, as torch.save takes
                except RuntimeError as error:
                    # torch's serializer reports a failed write as "unexpected pos": keep the errno it lost.
                    raise (sink.error or error) from error
                handle.flush()
                durable.sync(handle.fileno())  # its bytes before its name: a checkpoint is never half there
            self._check_owner()
            durable.replace(tmp, self.state_path)
        except FileNotFoundError:
            self._check_owner()  # a new owner removed this writer's temporary file: the trial is no longer its
            raise
        except OSError as error:
            raise self._disk_full(error, what) from error
        finally:
            tmp.unlink(missing_ok=True)

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
        # Buffered until the epoch is written: a crash mid-epoch recomputes the epoch's steps anyway.
        self._pending_steps.append((epoch, dist_E.double().numpy()))

    def write_results(self, arrays: dict, attrs: dict) -> None:
        """What an experiment measures once, after its last epoch (``results/``: its attributes and arrays,
        names with slashes making subgroups); replaced whole if a resumed run measures it again."""
        what = f"the results of {self.trial.trial_id}"
        self._guard(sum(np.asarray(a).nbytes for a in arrays.values()), what)
        with self._writing(what) as f:
            if schema.RESULTS in f:
                del f[schema.RESULTS]
            group = f.create_group(schema.RESULTS)
            group.attrs.update({k: v for k, v in attrs.items() if v is not None})
            for name, value in arrays.items():
                value = np.asarray(value)
                if value.dtype.kind == "U":  # names of parameters and the like: HDF5 keeps text as strings
                    value = value.astype(object).astype(h5py.string_dtype())
                # Checksummed like every dataset where HDF5 can (chunked storage: not a scalar, not empty).
                checked = value.ndim > 0 and value.size > 0 and value.dtype.kind != "O"
                group.create_dataset(name, data=value, fletcher32=checked)

    def finish(self) -> None:
        what = f"the end of {self.trial.trial_id}"
        self._guard(0, what)
        with self._writing(what) as f:
            # A trial that ends early (a search that converged) ran fewer epochs than it might have.
            self._set(f, {"total_epochs": min(int(f.attrs["total_epochs"]), int(f.attrs["epochs_done"])),
                          "status": "complete", "finished_at": utc_now(),
                          "wall_seconds": self.prior_wall + time.time() - self.session_start})
        self._check_owner()
        self._remove_checkpoint()

    def close(self, raise_errors: bool = True) -> None:
        """Nothing to close: every write opens and closes the file (``pipeline.trialfile.sink.Sink``)."""

    def mark_stopped(self, status: str, message: str, error: BaseException | None = None) -> bool:
        """Record why the trial stopped ('failed' or 'cancelled') and persist its last completed epoch; a
        rerun resumes from there. Nothing is written where the failure happened: not after a write met a full
        disk (the free-space check's stop, before writing, leaves room for the status), and not by a process
        that lost the trial to another owner. Returns whether the file now says why it stopped: where it
        could not (a full disk, an I/O error), the caller leaves the reason on the trial's lease."""
        if error is not None and (isinstance(error, LostOwnership) or
                                  is_disk_full(error) and not getattr(error, "before_writing", False)):
            return False
        recorded = False
        try:
            if self._inode is not None and read_status(self.path)["status"] not in ("damaged", "complete"):
                self._guard(0, f"the {status} status of {self.trial.trial_id}")
                with self._writing(f"the {status} status of {self.trial.trial_id}") as f:
                    self._set(f, {"status": status, "last_error": message})
                recorded = True
            if self._latest_state is not None:
                self._save_state(self._latest_state)
        except (OSError, LostOwnership):
            pass  # the file keeps its last epoch; why it stopped goes on the lease (``pipeline.run.execute``)
        return recorded

    def mark_failed(self, message: str, error: BaseException | None = None) -> bool:
        return self.mark_stopped("failed", message, error)

    def save_latest_state(self) -> None:
        """On preemption or time-out: persist the last completed epoch, whatever the interval."""
        if self._latest_state is not None:
            self._save_state(self._latest_state)

    def release(self) -> None:
        """The run is over (whichever way): its journal goes, unless a commit of it needs undoing. Not a sink's
        ``close`` (which wrappers pass on after a failure): the file is released last, after its status is
        recorded."""
        if self._inode is not None:
            journal.remove_journal(self.path, self._inode)
