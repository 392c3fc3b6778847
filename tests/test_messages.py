"""What a command says when the folder's bookkeeping is wrong or the disk failed: malformed but valid JSON in
``submissions.jsonl`` or ``manifest.json`` is one line naming the file, where in it and what is wrong (it
crashed status, cancel and resubmit with a bare KeyError or TypeError), and is never read as empty; an
unreadable lease is not blamed on squeue; a trial stopped by an I/O error its file could not record shows as
that error, not as "killed, timed out or its task ended"."""

from __future__ import annotations

import errno
import json

import pytest

from helpers import cli
from pipeline.launch.grid import load_grid
from pipeline.trialfile.manifest import select, write_manifest

SMALL = {"groups": "rot", "modes": "nom", "cnn.seeds": "1", "configs": "cross"}


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "out"
    grid = load_grid("smoke", SMALL)
    write_manifest(out, grid, grid.trials())
    return out


def submission(**changes) -> dict:
    record = {"kind": "submission", "submitted_at": "2026-01-01T00:00:00+00:00", "hostname": "node-9",
              "profile": "local", "executor": "local", "folder": "",
              "tasks": [{"job_id": "4242", "indices": [0, 1], "start_ticks": 1}]}
    return {**record, **changes}


RECORDS = {
    "a submission without tasks": ({k: v for k, v in submission().items() if k != "tasks"}, "tasks are None"),
    "tasks that are a text": (submission(tasks="4242"), "not a list"),
    "a task without indices": (submission(tasks=[{"job_id": "4242"}]), "indices None"),
    "indices that are a text": (submission(tasks=[{"job_id": "4242", "indices": "0,1"}]), "indices '0,1'"),
    "a job id that is not one": (submission(tasks=[{"job_id": "--user=me", "indices": [0]}]), "job id '--user=me'"),
    "a cancel of a job id that is a number": ({"kind": "cancel", "job_ids": [4242]}, "job ids are [4242]"),
    "a launch whose indices are not lists": ({"kind": "launching", "id": "x", "indices": [0, 1]}, "indices are [0, 1]"),
}


@pytest.mark.parametrize("case", list(RECORDS))
def test_a_malformed_submission_record_is_one_line_naming_the_file_and_the_line(folder, case):
    record, words = RECORDS[case]
    good = json.dumps(submission(tasks=[{"job_id": "4141", "indices": [0], "start_ticks": 1}]))
    (folder / "submissions.jsonl").write_text(good + "\n" + json.dumps(record) + "\n")
    for command in (["status"], ["cancel"], ["resubmit", "--cluster", "local"]):
        result = cli(*command, "--out", str(folder))
        assert result.returncode == 2, (case, command, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert "submissions.jsonl line 2" in result.stderr and words in result.stderr, (case, result.stderr)


MANIFESTS = {
    "an entry without its trial id": (lambda entry: entry.pop("trial_id"), "trial id None"),
    "settings that are a text": (lambda entry: entry.update(settings="lr=0.1"), "no object of settings"),
    "an index out of order": (lambda entry: entry.update(index=7), "index 7"),
    "labels that are a list": (lambda entry: entry.update(labels=["rot"]), "labels ['rot']"),
    "an unknown experiment": (lambda entry: entry.update(experiment="gans"), "experiment 'gans'"),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_a_malformed_manifest_entry_is_one_line_naming_the_file_and_the_entry(folder, case):
    change, words = MANIFESTS[case]
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest["trials"][1])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for command in (["status"], ["cancel"], ["resubmit", "--cluster", "local"]):
        result = cli(*command, "--out", str(folder))
        assert result.returncode == 2, (case, command, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert "manifest.json: trial entry 1" in result.stderr and words in result.stderr, (case, result.stderr)


def test_an_unreadable_lease_is_not_blamed_on_squeue(folder):
    (folder / "trials").mkdir()
    (folder / "trials" / "rot-nom-s000.lease").write_text("garbage")
    refused = cli("resubmit", "--out", str(folder), "--cluster", "local")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "squeue" not in refused.stderr and "an unreadable lease" in refused.stderr and "--force" in refused.stderr


def test_an_io_error_its_file_cannot_record_shows_as_what_it_was(tmp_path, monkeypatch):
    """From epoch 3 on every write to the trial file meets EIO, the one that would record the failure
    included: status must say EIO, not "killed, timed out or its task ended"."""
    from pipeline.launch.monitor import gather
    from pipeline.run.execute import execute
    from pipeline.trialfile import journal

    out = tmp_path / "out"
    grid = load_grid("smoke", {**SMALL, "groups.epochs": "6"})
    trial = select(write_manifest(out, grid, grid.trials()), 0)
    transaction = journal.transaction
    writes = []

    def failing(*args, **kwargs):
        writes.append(1)
        if len(writes) > 4:  # the file's start, epochs 0 to 2: then the disk fails
            raise OSError(errno.EIO, "Input/output error")
        return transaction(*args, **kwargs)

    monkeypatch.setattr(journal, "transaction", failing)
    with pytest.raises(OSError):
        execute(out, [trial])
    (state,) = [s for s in gather(out) if s.trial_id == trial.trial_id]
    assert state.state == "failed" and "Input/output error" in state.detail, state.detail
    assert "killed" not in state.detail
