"""The workloads whose crash states the explorer checks, run under strace (``python -m tests.crash.workloads
NAME FOLDER MARKS``).

Each runs the pipeline's own code on a fresh results folder and writes *marks* to the file MARKS around
every operation that the pipeline promises is all-or-nothing: ``begin GROUPS LABEL`` before it, ``end`` (or
``abort``, when it raised) after it, GROUPS naming the files it changes (``trial``: the trial file and its
journal; ``checkpoint``; ``manifest``; ``records``; ``lease``). A crash inside one may leave its files as
before or as after it; a crash after it must leave them as after it.

- ``groups``: an Experiment G smoke trial with a snapshot every epoch and a checkpoint every epoch; it fails
  at the start of epoch 3 (an injected fault: its file says ``failed`` at epoch 2), then a second run takes
  it over, resumes from the checkpoint and finishes it.
- ``stability``: the same for an Experiment S smoke trial (the search's L-BFGS memory in its checkpoint, the
  measurements at A* in ``results/``).
- ``folder``: what ``submit`` and ``resubmit`` write beside the trials: the manifest (created, then grown),
  ``submissions.jsonl`` (a launch of one array, one of three arrays in one append, a cancellation, a launch
  refused and taken back), the folder's submission guard, a trial's lease (taken, renewed, released) and a
  dead owner's lease broken.

``--no-fsync`` runs a workload with ``fsync`` made a no-op: the explorer's own test, which must find the
states that a policy without it leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

GROUPS_SETTINGS = {"groups": "rot", "modes": "aug", "epochs": "4", "weights_every": "1", "cnn.seeds": "1",
                   "configs": "cross"}
STABILITY_SETTINGS = {"networks": "rot", "max_iterations": "30", "block": "10", "newton_iterations": "2"}
FAIL_AT = {"groups": 3, "stability": 2}


def groups_trial():
    from pipeline.launch.grid import load_grid

    return load_grid("smoke", GROUPS_SETTINGS).trials()[0]


def stability_trial():
    from pipeline.launch.grid import load_grid

    return load_grid("stability-smoke", STABILITY_SETTINGS).trials()[0]


class Marker:
    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, text: str) -> None:
        os.write(self.fd, f"MARK {text}\n".encode())

    def method(self, owner, name: str, groups: str) -> None:
        """Mark every call of ``owner.name`` (where the code has it) as one operation on ``groups``."""
        original = getattr(owner, name, None)
        if original is None:
            return
        mark = self

        @functools.wraps(original)
        def marked(*args, **kwargs):
            mark(f"begin {groups} {name}")
            try:
                result = original(*args, **kwargs)
            except BaseException:
                mark(f"abort {groups} {name}")
                raise
            mark(f"end {groups} {name}")
            return result

        setattr(owner, name, marked)

    def context(self, owner, name: str, groups: str) -> None:
        """The same for a context manager (the journal's transaction): the operation ends when it exits."""
        original = getattr(owner, name)
        mark = self

        @contextlib.contextmanager
        def marked(*args, **kwargs):
            mark(f"begin {groups} {name}")
            try:
                with original(*args, **kwargs) as value:
                    yield value
            except BaseException:
                mark(f"abort {groups} {name}")
                raise
            mark(f"end {groups} {name}")

        setattr(owner, name, marked)


def mark_trial_operations(mark: Marker) -> None:
    from pipeline.trialfile import journal
    from pipeline.trialfile.store import TrialFile

    mark.context(journal, "transaction", "trial")
    for name in ("_install", "release"):
        mark.method(TrialFile, name, "trial")
    for name in ("_save_state", "_remove_checkpoint"):
        mark.method(TrialFile, name, "checkpoint")
    for name in ("_discard", "_set_aside"):
        mark.method(TrialFile, name, "trial,checkpoint")


def run_trial_twice(folder: Path, mark: Marker, trial) -> None:
    """Fail at an epoch, then resume as another owner: commits, a failure, a takeover, a resume, the end."""
    from pipeline.launch.grid import load_grid  # noqa: F401 (the manifest is written as submit writes it)
    from pipeline.run.execute import execute
    from pipeline.run.faults import FAULT_VARIABLE
    from pipeline.trialfile.manifest import write_manifest

    mark_trial_operations(mark)
    experiment = trial.experiment
    grid = (load_grid("smoke", GROUPS_SETTINGS) if experiment == "groups" else
            load_grid("stability-smoke", STABILITY_SETTINGS))
    write_manifest(folder, grid, grid.trials())
    os.environ[FAULT_VARIABLE] = f"{trial.trial_id}@{FAIL_AT[experiment]}"
    try:
        execute(folder, [trial], checkpoint_every_s=0)
    except Exception as error:  # the injected fault, as planned
        print(f"first run stopped: {error}")
    else:
        raise SystemExit("the injected fault did not stop the first run")
    del os.environ[FAULT_VARIABLE]
    execute(folder, [trial], checkpoint_every_s=0)


def groups(folder: Path, mark: Marker) -> None:
    run_trial_twice(folder, mark, groups_trial())


def stability(folder: Path, mark: Marker) -> None:
    run_trial_twice(folder, mark, stability_trial())


FOLDER_SEEDS = ("0-1", "0-4")


def folder_grid(seeds: str):
    from pipeline.launch.grid import load_grid

    return load_grid("smoke", {"groups": "rot", "modes": "nom", "seeds": seeds, "cnn.seeds": "1", "configs": "cross"})


def folder_workload(folder: Path, mark: Marker) -> None:
    from pipeline.errors import ConfigError
    from pipeline.launch import records
    from pipeline.leases import ownership
    from pipeline.leases.ownership import Lease, Owner, acquire_trial, guard_folder
    from pipeline.trialfile import manifest

    mark.method(manifest, "write_manifest", "manifest")
    mark.method(records, "append_records", "records")
    for name in ("acquire", "renew", "release"):
        mark.method(Lease, name, "lease")
    mark.method(ownership, "break_lease", "lease")  # ownership calls it by this name

    def launch(indices, arrays):
        base = {"kind": "submission", "submitted_at": "now", "hostname": "here", "profile": "local",
                "executor": "local"}
        with records.launching(folder, base, indices) as recorded:
            for number, tasks in enumerate(arrays):
                recorded.append({**base, "array": number,
                                 "tasks": [{"job_id": f"{number}_{i}", "indices": t} for i, t in enumerate(tasks)]})

    guard = guard_folder(folder)
    manifest.write_manifest(folder, folder_grid(FOLDER_SEEDS[0]), folder_grid(FOLDER_SEEDS[0]).trials())
    launch([[0], [1]], [[[0], [1]]])
    guard.release()

    guard = guard_folder(folder)
    manifest.write_manifest(folder, folder_grid(FOLDER_SEEDS[1]), folder_grid(FOLDER_SEEDS[1]).trials())
    launch([[2], [3], [4]], [[[2]], [[3]], [[4]]])  # three arrays: their records in one append
    records.append_record(folder, {"kind": "cancel", "job_ids": ["1_0"], "cancelled_at": "later"})
    with contextlib.suppress(ConfigError):
        with records.launching(folder, {"kind": "submission"}, [[0]]):
            raise ConfigError("refused before anything started")  # its launching line is taken back
    guard.release()

    trial_id = folder_grid(FOLDER_SEEDS[1]).trials()[0].trial_id
    lease = acquire_trial(folder, trial_id)
    lease.renew()
    lease.release()
    # A lease left by an owner that is gone (a process of this machine that no longer runs) is broken.
    dead = Owner.this_process()
    dead.pid, dead.start_ticks, dead.token = 2 ** 22 + 17, 1, "dead-owner"
    path = ownership.trial_lease_path(folder, trial_id)
    mark("begin lease plant")
    _plant(path, json.dumps({k: v for k, v in dataclasses.asdict(dead).items() if k != "raw"}).encode())
    mark("end lease plant")
    taken = Lease.acquire(path, f"trial {trial_id}")
    taken.release()


def _plant(path: Path, data: bytes) -> None:
    """Leave a lease as its (since dead) owner would have: its bytes durable, then its name."""
    tmp = path.with_name(f".{path.name}.planted.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    tmp.unlink()


WORKLOADS = {"groups": groups, "stability": stability, "folder": folder_workload}


def main(argv: list[str]) -> int:
    name, folder, marks, *flags = argv
    if "--no-fsync" in flags:
        os.fsync = os.fdatasync = lambda fd: None  # the policy the explorer must catch
    os.environ.setdefault("PIPELINE_OFFLINE", "1")
    os.environ.setdefault("PIPELINE_DATA_ROOT", "/nonexistent-pipeline-data-root")
    WORKLOADS[name](Path(folder), Marker(Path(marks)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
