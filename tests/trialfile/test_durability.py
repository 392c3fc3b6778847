"""Durability and checksums: what a dead node or a flipped bit leaves is recovered or seen as damaged, never
read as data (pipeline/durable.py, the journal's policy, the checksums of pipeline/trialfile/files.py); every state
a crash can leave is checked by tests/trialfile/test_crash_states.py."""

import errno
import json
import os
from pathlib import Path

import h5py
import pytest

from helpers import assert_same_results
from pipeline.launch import records
from pipeline.launch.grid import load_grid
from pipeline.launch.monitor import gather, needing_resubmission
from pipeline.run.execute import execute
from pipeline.trialfile import copying, journal
from pipeline.trialfile.files import inspect, read_status
from pipeline.trialfile.manifest import select, write_manifest

SMOKE = {"groups": "rot", "modes": "nom", "epochs": "3", "weights_every": "1", "cnn.seeds": "1", "configs": "cross"}


def smoke_trial(out: Path):
    grid = load_grid("smoke", SMOKE)
    return select(write_manifest(out, grid, grid.trials()), 0)


def trial_file(out: Path, trial) -> Path:
    return out / "trials" / f"{trial.trial_id}.h5"


def flip_bit(path: Path, dataset: str, row: int, bit: int) -> float:
    """Flip one bit of one float64 row of a dataset in the file's bytes, as a disk might; returns the value the
    row held."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        value = float(ds[row])
        offset = ds.id.get_chunk_info(0).byte_offset + 8 * row + bit // 8
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ (1 << (bit % 8))]))
    return value


def test_a_finished_file_whose_loss_has_a_flipped_bit_reads_as_damaged_and_a_rerun_sets_it_aside(tmp_path):
    """Fault 9 of issue 24: a flipped bit in metrics/loss (the lowest bit of the exponent: the loss halves,
    7.91 -> 3.95 in the issue) left the file "complete". With checksums on committed data it is damaged:
    status shows it, resubmit picks it, and the rerun keeps the file under another name and runs again."""
    out = tmp_path / "out"
    trial = smoke_trial(out)
    execute(out, [trial])
    path = trial_file(out, trial)
    reference = tmp_path / "reference.h5"
    reference.write_bytes(path.read_bytes())
    assert inspect(path).status == "complete"

    loss = flip_bit(path, "metrics/loss", row=1, bit=52)
    with h5py.File(path, "r") as f:
        # Without checksums this read 3.95 for 7.91; with them, the read itself fails.
        with pytest.raises(OSError):
            assert f["metrics/loss"][1] != loss
    state = inspect(path)
    assert state.status == "damaged" and "metrics/loss" in state.problem and "checksum" in state.problem
    shown = [s for s in gather(out) if s.trial_id == trial.trial_id]
    assert shown[0].state == "failed" and "damaged file" in shown[0].detail and "metrics/loss" in shown[0].detail
    assert trial.trial_id in [s.trial_id for s in needing_resubmission(gather(out))]

    damaged_bytes = path.read_bytes()
    execute(out, [trial])
    assert inspect(path).status == "complete"
    assert_same_results(reference, path)
    aside = [p for p in path.parent.iterdir() if ".damaged-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == damaged_bytes  # kept as it was, never deleted
    log = (out / "logs" / f"{trial.trial_id}.log").read_text()
    assert f"kept as {aside[0].name}" in log and "metrics/loss" in log


def test_attributes_read_back_other_than_written_make_a_file_damaged(tmp_path):
    out = tmp_path / "out"
    trial = smoke_trial(out)
    execute(out, [trial])
    path = trial_file(out, trial)
    with h5py.File(path, "r+") as f:  # a change that no write of the pipeline made (its checksum not renewed)
        f.attrs["epochs_done"] = 2 ** 33
    assert read_status(path) == {"status": "damaged", "error": "its attributes do not match their checksum"}
    assert inspect(path).status == "damaged"


def test_a_disk_full_on_the_idle_mark_after_a_commit_keeps_the_commit_and_reports_nothing_wrong(tmp_path, monkeypatch):
    """Fault 10 of issue 24 (its last part): an ENOSPC on the journal's last "idle" write, after the commit
    was already durable in the file, reported DiskFull on a complete file (and left the journal saying
    "applying", so that the next owner would have undone the commit). The commit stands, and nothing says
    the disk is full."""
    out = tmp_path / "out"
    trial = smoke_trial(out)
    real_write = journal._Journal.write
    failing = []

    def write(self, header, entries=None):
        if failing and header.state == journal.IDLE and entries is None:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, header, entries)

    from pipeline.trialfile.store import TrialFile

    real_finish = TrialFile.finish

    def finish(self):
        failing.append(True)
        try:
            real_finish(self)
        finally:
            failing.clear()

    monkeypatch.setattr(journal._Journal, "write", write)
    monkeypatch.setattr(TrialFile, "finish", finish)
    assert execute(out, [trial]) == {trial.trial_id: "ran"}  # before: DiskFull out of finish()
    path = trial_file(out, trial)
    assert inspect(path).status == "complete"
    assert not journal.journal_path(path).exists()  # emptied, then removed when the trial was released
    copy = tmp_path / "copy.h5"
    copying.consistent_copy(path, copy)  # what the next owner reads: the commit, not undone
    assert inspect(copy).status == "complete"
    assert execute(out, [trial]) == {trial.trial_id: "complete"}


def test_a_journal_emptied_after_a_commit_lets_its_owner_write_on(tmp_path, monkeypatch):
    """The same at the journal's level, in the middle of a trial: the commit whose idle mark failed stands,
    and the owner's next transaction writes on (it marks the journal idle again before appending)."""
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(0,), maxshape=(None,), chunks=(16,), dtype="f8")
    journal.start_journal(path, "token")
    inode = os.stat(path).st_ino
    real_write = journal._Journal.write

    def write(self, header, entries=None):
        if header.state == journal.IDLE and entries is None:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, header, entries)

    with monkeypatch.context() as patched:
        patched.setattr(journal._Journal, "write", write)
        with journal.transaction(path, inode, lambda: None) as f:
            f["x"].resize(1, axis=0)
            f["x"][0] = 1.0
    assert journal.read_header(journal.journal_path(path)) is None  # emptied: nothing to undo
    with journal.transaction(path, inode, lambda: None) as f:
        assert list(f["x"][()]) == [1.0]
        f["x"].resize(2, axis=0)
        f["x"][1] = 2.0
    header = journal.read_header(journal.journal_path(path))
    assert header is not None and header.state == journal.IDLE
    copy = tmp_path / "copy.h5"
    copying.consistent_copy(path, copy)
    with h5py.File(copy, "r") as f:
        assert list(f["x"][()]) == [1.0, 2.0]


def test_every_write_of_a_trial_is_made_durable_names_included(tmp_path, monkeypatch):
    """On ext4, xfs, Lustre and GPFS a whole trial made no fsync at all: a node that died kept whatever the
    file system had flushed, in any order. Now every commit syncs its journal and its file, and every
    rename, link or removal its directory."""
    synced: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def named(fd):
        return os.readlink(f"/proc/self/fd/{fd}")

    def fsync(fd):
        synced.append(named(fd))
        real_fsync(fd)

    def fdatasync(fd):
        synced.append(named(fd))
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    out = tmp_path / "out"
    trial = smoke_trial(out)
    execute(out, [trial])
    trials = str(out / "trials")
    path = str(trial_file(out, trial))
    assert synced.count(path) >= 4 + 1  # each of the 4 epochs' commits and the last; the file before its rename
    assert synced.count(path + ".journal") >= 2 * 5  # "applying" and "idle", every commit
    assert synced.count(trials) >= 3  # the file and its journal installed, checkpoints renamed into place
    assert str(out) in synced  # trials/ itself, and the manifest's name


def test_a_submission_whose_array_records_were_cut_short_reads_as_unconfirmed_not_as_part_of_it(tmp_path):
    """The records of a submission's arrays are appended together; a node that dies in the middle keeps any
    prefix of them. Read with one array missing, that array's trials would say "missing" (and resubmit
    launch them again while they run); a cut append is dropped whole, and the launch reads as unconfirmed:
    its trials say "unknown"."""
    out = tmp_path / "out"
    smoke_trial(out)
    base = {"kind": "submission", "submitted_at": "now", "hostname": "here", "profile": "local",
            "executor": "local"}
    with records.launching(out, base, [[0], [1], [2]]) as recorded:
        recorded.extend({**base, "tasks": [{"job_id": str(i), "indices": [i]}]} for i in range(3))
    path = out / "submissions.jsonl"
    whole = path.read_text()
    lines = whole.splitlines(keepends=True)
    assert [json.loads(line)["kind"] for line in lines] == ["launching", "submission", "submission", "submission"]
    assert [t["indices"] for s in records.read_submissions(out) for t in s["tasks"]] == [[0], [1], [2]]

    path.write_text("".join(lines[:3]) + lines[3][:20])  # the third array's line cut, as a crash may leave it
    warnings: list[str] = []
    submissions = records.read_submissions(out, warn=warnings.append)
    assert len(submissions) == 1 and submissions[0].get("unconfirmed")
    assert [t["indices"] for t in submissions[0]["tasks"]] == [[0], [1], [2]]
    assert any("2 of 3 records appended together" in w for w in warnings)

    path.write_text("".join(lines[:3]))  # the third line lost whole
    assert records.read_submissions(out, warn=warnings.append)[0].get("unconfirmed")
    records.append_record(out, {"kind": "cancel", "job_ids": ["9"], "cancelled_at": "later"})
    assert [r.get("kind") for r in records.read_records(out, warn=warnings.append)] == ["launching", "cancel"]


def test_durable_directories_are_synced_in_their_parents(tmp_path, monkeypatch):
    from pipeline import durable

    synced: list[Path] = []
    monkeypatch.setattr(durable, "sync_directory", lambda path: synced.append(Path(path)))
    durable.make_dirs(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    durable.write_atomically(tmp_path / "a" / "doc.json", b"{}", "token")
    assert (tmp_path / "a" / "doc.json").read_bytes() == b"{}"
    assert synced[-1] == tmp_path / "a" and not list((tmp_path / "a").glob(".*.tmp"))
    assert durable.unlink(tmp_path / "a" / "doc.json") is True
    assert durable.unlink(tmp_path / "a" / "doc.json") is False
