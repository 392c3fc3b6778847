"""The trial file's all-or-nothing writes (pipeline/trialfile/journal.py): a process killed half-way through applying
a commit leaves a file that the next write of its owner, or a new owner's copy, brings back to the last
commit; a write that fails leaves the last commit as it was."""

import os

import h5py
import numpy as np
import pytest

from pipeline.trialfile import copying, journal


def committed_file(path):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(0,), maxshape=(None,), chunks=(256,), dtype="f8")
        f.create_dataset("w", shape=(0, 5000), maxshape=(None, 5000), chunks=(1, 5000), dtype="f8")
    journal.start_journal(path, "token")
    return os.stat(path).st_ino


def epoch(f, e):
    for name, row in (("x", e), ("w", np.full(5000, e))):
        f[name].resize(e + 1, axis=0)
        f[name][-1] = row
    f.attrs["epochs_done"] = e
    f.attrs["status"] = "e" * (e % 5)  # text of changing length: the global heap moves


def holds_epochs(path, last):
    with h5py.File(path, "r", locking=False) as f:
        return (np.array_equal(f["x"][()], np.arange(last + 1)) and f["w"].shape[0] == last + 1
                and np.array_equal(f["w"][:, 0], np.arange(last + 1)) and f.attrs["epochs_done"] == last
                and f.attrs["status"] == "e" * (last % 5))


def reads_as(path, last) -> bool:
    try:
        return holds_epochs(path, last)
    except Exception:  # unreadable
        return False


def test_a_writer_killed_while_applying_a_commit_is_undone_by_the_next_write_and_by_a_copy(tmp_path, monkeypatch):
    path = tmp_path / "t.h5"
    inode = committed_file(path)
    for e in range(3):
        with journal.transaction(path, inode, lambda: None) as f:
            epoch(f, e)
    pid = os.fork()
    if pid == 0:  # the writer, killed half-way through the third block of its commit
        applying, written, real = [], [], journal._pwrite_all
        original_write = journal._Journal.write

        def write_header(self, header, entries=None):
            original_write(self, header, entries)
            applying.append(header.state == journal.APPLYING)

        def pwrite(fd, data, offset):
            if applying and applying[-1]:
                if len(written) == 2:
                    real(fd, bytes(data)[: len(data) // 2], offset)
                    os._exit(3)
                written.append(offset)
            real(fd, data, offset)

        journal._Journal.write, journal._pwrite_all = write_header, pwrite
        try:
            with journal.transaction(path, inode, lambda: None) as f:
                epoch(f, 3)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 3
    assert journal.read_header(journal.journal_path(path)).state == journal.APPLYING
    assert not reads_as(path, 2) and not reads_as(path, 3)  # torn: neither the last commit nor the next
    copy = tmp_path / "copy.h5"
    copying.consistent_copy(path, copy)  # a new owner's view: the last commit
    assert holds_epochs(copy, 2)
    with journal.transaction(path, inode, lambda: None) as f:  # the owner's next write undoes it first
        assert f.attrs["epochs_done"] == 2
        epoch(f, 3)
    assert holds_epochs(path, 3)


def test_a_write_that_fails_leaves_the_last_commit(tmp_path, monkeypatch):
    path = tmp_path / "t.h5"
    inode = committed_file(path)
    with journal.transaction(path, inode, lambda: None) as f:
        epoch(f, 0)
    before = path.read_bytes()
    real = journal._pwrite_all

    def full(fd, data, offset):
        if offset >= len(before):
            raise OSError(28, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(journal, "_pwrite_all", full)
    with pytest.raises(OSError) as failed:
        with journal.transaction(path, inode, lambda: None) as f:
            epoch(f, 1)
    assert failed.value.errno == 28
    assert path.read_bytes() == before and holds_epochs(path, 0)


def test_a_file_replaced_by_another_owner_is_never_written(tmp_path):
    path = tmp_path / "t.h5"
    inode = committed_file(path)
    other = tmp_path / "other.h5"
    committed_file(other)
    os.replace(other, path)  # a new owner installed its copy
    journal.start_journal(path, "other-token")
    before = path.read_bytes()
    with pytest.raises(journal.FileReplaced):
        with journal.transaction(path, inode, lambda: None) as f:
            epoch(f, 0)
    assert path.read_bytes() == before
