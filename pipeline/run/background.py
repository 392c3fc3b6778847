"""Writing a trial's rows from a background thread, so that measuring and writing overlap the GPU's work.

On a GPU a paper-size epoch of Experiment G takes 0.06 s, and the work around it (the HDF5 append, the
log line, a host copy of the whole model for the rolling checkpoint) took twice that again (bench row 1b,
`make gpu-check` on an H200). :class:`BackgroundSink` wraps a trial's sink (``pipeline.trialfile.store.TrialFile``)
and applies its calls, in order, on one writer thread:

- What a call needs from the device is captured when the call is made, before the next step changes it:
  the row's layer measurements, the weights a snapshot keeps and the checkpoint's state, each copied to
  pinned host memory with ``non_blocking=True``; a CUDA event recorded after the copies is what the writer
  waits for before it hands them to the sink. The training thread never waits for a copy.
- The writer applies the sink's own ``write_epoch`` etc., unchanged: the file is the same, byte for byte
  in every series but ``seconds`` (tests/run/test_background.py compares the smoke grids' files).
- At most ``MAX_PENDING`` calls wait (the training thread blocks beyond that), which bounds the memory of
  captured rows and how far the file can lag.
- An error on the writer (a full disk, a lost lease) is raised, as the same exception, in the training
  thread at its next call to the sink, and the writer applies nothing after it: the trial stops in one
  line exactly as it would have. ``close`` drains what is pending; ``save_latest_state`` (preemption) first
  waits for the pending rows, so the checkpoint is never behind the file.

Used by ``pipeline.run.execute`` for trials on CUDA (``PIPELINE_BACKGROUND_WRITER=1`` or ``0`` forces it on or
off anywhere): on a CPU the copies are the work itself, and a thread only competes for the cores.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

import torch

from pipeline.core.data import Dataset
from pipeline.experiments import Trial
from pipeline.trialfile.cost import snapshot_epochs
from pipeline.trialfile.sink import Checkpoint, EpochRecord, Sink, Weights

MAX_PENDING = 2
VARIABLE = "PIPELINE_BACKGROUND_WRITER"


def wanted(device: torch.device) -> bool:
    """Whether trials on ``device`` write from a background thread: on CUDA, unless the variable says."""
    forced = os.environ.get(VARIABLE, "")
    if forced in ("0", "1"):
        return forced == "1"
    return device.type == "cuda"


def host_copy(value: Any) -> Any:  # a tensor, or tensors nested in dicts, lists and tuples
    """A host copy of a tensor (or of the tensors in a nested dict/list): for a CUDA tensor, into pinned
    memory without waiting; the caller records an event after it and waits on that before reading."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.is_cuda:
            copy = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            return copy.copy_(tensor, non_blocking=True)
        return tensor.to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(host_copy(v) for v in value)
    return value


class _Captured:
    """What the sink may ask of the model at a row, taken when the row was recorded."""

    def __init__(self, snapshot: dict | None, epoch: int):
        self._snapshot, self._epoch = snapshot, epoch

    def snapshot(self) -> dict[str, torch.Tensor]:
        if self._snapshot is None:
            raise RuntimeError(f"the weights of epoch {self._epoch} were asked for but not captured "
                               "(pipeline.run.background follows pipeline.trialfile.cost.snapshot_epochs)")
        return self._snapshot


class BackgroundSink:
    """A sink that applies another sink's calls in order on a writer thread (see the module docstring)."""

    defers_host_copies = True  # pipeline.run.runner then hands over device tensors and non-blocking copies

    def __init__(self, inner: Sink, name: str = "trial"):
        self.inner = inner
        self.device: torch.device | None = None
        self._calls: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self._failure: BaseException | None = None  # the writer's error; nothing is applied after it
        self._reported = False  # whether the training thread has been handed it
        self._closed = False
        self._keep: set[int] = set()
        self._thread = threading.Thread(target=self._work, name=f"writer {name}", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Any:  # what the runner or a caller asks of the inner sink
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- the writer thread -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._calls.get()
            try:
                if item is None:
                    return
                if self._failure is None:  # after a failure nothing more is applied: the file stays as it was
                    event, method, args = item
                    if event is not None:
                        event.synchronize()
                    getattr(self.inner, method)(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the training thread as it is
                self._failure = error
            finally:
                self._calls.task_done()

    def _raise_failure(self) -> None:
        if self._failure is not None and not self._reported:
            self._reported = True
            raise self._failure

    def _submit(self, method: str, *args: Any, event: torch.cuda.Event | None = None) -> None:
        self._raise_failure()
        if self._failure is None:
            self._calls.put((event, method, args))

    def drain(self) -> None:
        """Wait until every call so far is applied; raise the writer's error, if any."""
        self._calls.join()
        self._raise_failure()

    @staticmethod
    def _event(device: torch.device | None) -> torch.cuda.Event | None:
        if device is not None and device.type == "cuda":
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))  # the stream the copies were queued on
            return event
        return None

    # -- the sink protocol -------------------------------------------------------------------------------
    def resume_point(self) -> dict | None:
        return self.inner.resume_point()

    def begin(self, trial: Trial, layer_names: list[str], device: torch.device, data: Dataset) -> None:
        self.device = torch.device(device)
        self._keep = set(snapshot_epochs(trial.settings))
        self.inner.begin(trial, layer_names, device, data)  # the file exists before the first row is queued

    def write_epoch(self, record: EpochRecord, model: Weights, checkpoint: Checkpoint) -> None:
        row = record.with_values({name: host_copy(value) for name, value in record.values.items()
                                  if isinstance(value, torch.Tensor)})
        keep = record.last or record.epoch in self._keep
        captured = _Captured(host_copy(model.snapshot()) if keep else None, record.epoch)
        state = checkpoint()  # the runner's copies: non-blocking for a sink that defers them
        self._submit("write_epoch", row, captured, lambda: state, event=self._event(self.device))

    def write_steps(self, epoch: int, dist_E: torch.Tensor) -> None:
        self._submit("write_steps", epoch, host_copy(dist_E), event=self._event(self.device))

    def write_results(self, arrays: dict, attrs: dict) -> None:
        self._submit("write_results", arrays, attrs)

    def save_latest_state(self) -> None:
        # The checkpoint must not be behind the rows: wait for them, then save where this thread is.
        self.drain()
        self.inner.save_latest_state()

    def finish(self) -> None:
        self._submit("finish")
        self.drain()

    def close(self, raise_errors: bool = True) -> None:
        """Apply what is pending and stop the writer (after a failure elsewhere: ``raise_errors=False``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._calls.join()
        finally:
            self._calls.put(None)
            self._thread.join()
            self.inner.close(raise_errors=False)  # e.g. TensorBoard curves written on this sink's thread
        if raise_errors:
            self._raise_failure()
