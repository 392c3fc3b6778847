"""Failing safely: a full disk, a diverging loss, bad values and damaged bookkeeping each give one line,
and lose nothing that was done."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_same_results
from pipeline.launch.grid import load_grid
from pipeline.launch.monitor import gather
from pipeline.leases.ownership import read_owner
from pipeline.run.execute import execute
from pipeline.trialfile.files import inspect, read_status
from pipeline.trialfile.manifest import select, write_manifest

ROOT = Path(__file__).resolve().parents[2]
# About 11 MB of weights a snapshot, one every epoch: a small disk fills within a few epochs.
HEAVY = ["groups=rot", "modes=nom", "seeds=1", "n=14", "channels=8", "n_samples=200", "epochs=10", "lr=0.005",
         "weights_every=1", "cnn.seeds=1", "configs=cross"]


def sets(values):
    return [a for v in values for a in ("--set", v)]


def cli(*argv, timeout=300, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs (root only; mandatory in CI, which runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to mount a tmpfs (runs as root): {result.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("space_check", ["on", "off"])
def test_a_full_disk_stops_the_trial_in_one_line_and_its_file_keeps_its_last_good_epoch(small_disk, tmp_path,
                                                                                         space_check):
    """With the free-space check off (as a quota that df does not show), the write itself meets ENOSPC: the
    file must still keep its last good epoch, and the rerun resume from it."""
    out = small_disk / "out"
    argv = ["run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), "--checkpoint-every", "0", *sets(HEAVY)]
    env = {**os.environ, "PIPELINE_FREE_SPACE_CHECK": "1" if space_check == "on" else "0"}
    full = cli(*argv, env=env)
    assert full.returncode == 1, full.stderr  # not a crash (139 was a segfault)
    errors = [line for line in full.stderr.splitlines() if not line.startswith("(log ")]  # the log is on that disk too
    assert len(errors) == 1 and "no space left on device" in errors[0], full.stderr
    assert "Traceback" not in full.stderr
    path = out / "trials" / "rot-nom-s000.h5"
    state = inspect(path)
    # Readable, not damaged, and not pretending to be complete. The free-space check stops the trial before
    # it writes, leaving room to record why; a write that met the full disk leaves the file as it was, and
    # the reason on the trial's lease (written in place: no new space), which says its owner is gone.
    assert state.status == ("failed" if space_check == "on" else "running")
    done = state.attrs["epochs_done"]
    assert 1 <= done < 10 and state.rows == done + 1
    lease = read_owner(out / "trials" / "rot-nom-s000.lease")
    assert lease is None if space_check == "on" else "no space left on device" in lease.stopped
    (status,) = [s for s in gather(out) if s.trial_id == "rot-nom-s000"]
    assert status.state == "failed" and "no space left on device" in status.detail, status.detail

    reported = max(int(line.split(" epoch ")[1].split("/")[0])
                   for line in full.stdout.splitlines() if re.search(r" epoch \d+/10 ", line))
    assert done - 1 <= reported <= done  # every epoch reported written is in the file and checkpointed

    subprocess.run(["mount", "-o", "remount,size=512m", str(small_disk)], check=True)
    assert cli(*argv, env=env).returncode == 0
    assert f"resuming after epoch {reported}" in (out / "logs" / "rot-nom-s000.log").read_text()
    grid = load_grid("smoke", dict(v.split("=", 1) for v in HEAVY))
    reference = tmp_path / "reference"
    execute(reference, [select(write_manifest(reference, grid, grid.trials()), 0)])
    assert_same_results(reference / "trials" / "rot-nom-s000.h5", path)


def test_a_disk_that_fills_in_any_write_leaves_the_last_epoch_readable_and_resumable(small_disk, tmp_path,
                                                                                     monkeypatch):
    """The free-space check off, the disk is filled to leave less and less room, so that the first write to
    fail is in turn an epoch's HDF5 append (data or metadata), its commit, or the checkpoint (torch's
    serializer, which reports "unexpected pos"): every time the trial stops with DiskFull, its file is
    readable at its last epoch, and with room again it resumes and ends as an uninterrupted run."""
    from pipeline.trialfile.store import DiskFull

    monkeypatch.setenv("PIPELINE_FREE_SPACE_CHECK", "0")
    grid = load_grid("smoke", dict(v.split("=", 1) for v in HEAVY))
    reference = tmp_path / "reference"
    execute(reference, [select(write_manifest(reference, grid, grid.trials()), 0)])
    subprocess.run(["mount", "-o", "remount,size=512m", str(small_disk)], check=True)
    failed_in = set()
    # An epoch adds 11 MB to the file and a checkpoint (model and start point) is 22 MB, written beside the
    # previous one: these leave room for epoch 1 or 2 but not for its append, or not for its checkpoint.
    for room_mb in (36, 40, 47, 53, 58, 62, 70, 75):
        out = small_disk / f"out-{room_mb}"
        trial = select(write_manifest(out, grid, grid.trials()), 0)
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler = small_disk / "filler"
        with open(filler, "wb") as handle:
            handle.truncate(0)
            handle.write(b"\0" * max(0, free - room_mb * 1_000_000))
        with pytest.raises(DiskFull) as stopped:
            execute(out, [trial], checkpoint_every_s=0)
        failed_in.add("checkpoint" if "for the checkpoint of" in str(stopped.value) else
                      "epoch" if " for epoch " in str(stopped.value) else str(stopped.value))
        path = out / "trials" / "rot-nom-s000.h5"
        state = inspect(path)
        assert state.status == "running", (room_mb, state.problem)
        assert state.rows == state.attrs["epochs_done"] + 1
        filler.unlink()
        execute(out, [trial], checkpoint_every_s=0)
        assert "resuming after epoch" in (out / "logs" / "rot-nom-s000.log").read_text()
        assert_same_results(reference / "trials" / "rot-nom-s000.h5", path)
        shutil.rmtree(out)
    assert failed_in == {"epoch", "checkpoint"}, failed_in  # epochs' appends and checkpoints both met it


def test_a_read_only_results_folder_is_one_line(small_disk, tmp_path):
    written = small_disk / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(written), *sets(["groups=rot", "modes=nom", "cnn.seeds=1",
                                                                          "configs=cross"])).returncode == 0
    out = tmp_path / "read-only"  # the same folder seen through a read-only bind mount (root ignores modes)
    out.mkdir()
    subprocess.run(["mount", "--bind", str(written), str(out)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(out)], check=True)
        _check_read_only(out)
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


def _check_read_only(out):
    status = cli("status", "--out", str(out))
    assert status.returncode == 0 and "complete" in status.stdout
    again = cli("run-trial", "--exp", "smoke", "--index", "0", "--out", str(out), "--force",
                *sets(["groups=rot", "modes=nom", "cnn.seeds=1", "configs=cross"]))
    assert again.returncode != 0 and again.stderr.startswith("error: ") and again.stderr.count("\n") == 1
    assert "Read-only file system" in again.stderr


def test_a_loss_that_diverges_stops_the_trial_as_failed_and_is_listed(tmp_path):
    out = tmp_path / "out"
    values = ["groups=rot", "modes=nom", "cnn.seeds=1", "configs=cross", "groups.lr=1e6", "epochs=4"]
    result = cli("submit", "--exp", "smoke", "--out", str(out), *sets(values))
    assert result.returncode == 1  # not every trial completed
    status = read_status(out / "trials" / "rot-nom-s000.h5")
    assert status["status"] == "failed" and status["last_error"].startswith("Diverged: diverged at epoch 1")
    state = next(s for s in gather(out) if s.trial_id == "rot-nom-s000")
    assert state.state == "failed"
    resubmit = cli("resubmit", "--out", str(out))
    assert "not resubmitted: rot-nom-s000" in resubmit.stdout and "nothing to resubmit" in resubmit.stdout
    aggregate = cli("aggregate", "--out", str(out))
    assert aggregate.returncode == 0
    report = (out / "aggregate" / "report.md").read_text()
    assert "rot-nom-s000" in report and "diverged at epoch 1" in report


@pytest.mark.parametrize("override,message", [
    ("lr=nan", "lr must be a finite number > 0, got nan"),
    ("lr=inf", "lr must be a finite number > 0, got inf"),
    ("lr=-1", "lr must be a finite number > 0, got -1.0"),
    ("lr=0", "lr must be a finite number > 0, got 0.0"),
    ("phase1_lr=nan", "phase1_lr must be a finite number > 0, got nan"),
    ("phase1_lr=-1", "phase1_lr must be a finite number > 0, got -1.0"),
    ("phase2_lr=0", "phase2_lr must be a finite number > 0, got 0.0"),
    ("image_size=0", "image_size must be a positive integer, got 0"),
    ("image_size=30", "image_size must be a positive multiple of 4"),
    ("n=1", "n must be an integer >= 2"),
    ("augment=5", "unknown augment '5'; accepted: orbit, sampled:P"),
    ("device=5", "unknown device '5'; accepted: auto, cpu, cuda, cuda:N"),
    ("n_samples=20000", "n_samples=20000 is more than the data holds; accepted: 1..10000"),
    ("data_source=bogus", "unknown data_source 'bogus'; accepted: auto, official, vendored"),
    ("reg=-1", "reg must be a finite number >= 0, got -1.0"),
    ("chunk_size=0", "chunk_size must be a positive integer, got 0"),
])
def test_bad_values_fail_in_plan_in_one_line(override, message, capsys):
    from pipeline.cli import main

    assert main(["plan", "--exp", "smoke", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_bad_worker_counts_fail_before_anything_runs(tmp_path, capsys):
    from pipeline.cli import main

    for option in (["--workers", "-1"], ["--workers", "0"], ["--trials-per-task", "0"]):
        assert main(["submit", "--exp", "smoke", "--out", str(tmp_path / "never"), *option]) == 2
        err = capsys.readouterr().err
        assert "must be at least 1" in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_a_torn_submission_line_is_skipped_with_a_warning_and_a_damaged_manifest_is_one_line(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *sets(["groups=rot", "modes=nom", "cnn.seeds=1",
                                                                      "configs=cross"])).returncode == 0
    log = out / "submissions.jsonl"
    log.write_text(log.read_text() + '{"kind": "submission", "tasks": [{"job_')  # a crash mid-append
    status = cli("status", "--out", str(out))
    assert status.returncode == 0 and "all 2 trials complete" not in status.stdout
    assert "line 3 is not a complete record" in status.stderr and "complete" in status.stdout
    again = cli("submit", "--exp", "smoke", "--out", str(out), *sets(["groups=rot", "modes=nom", "cnn.seeds=1",
                                                                      "configs=cross"]))
    assert again.returncode == 0 and "nothing to submit" in again.stdout
    from pipeline.launch.records import append_record, read_records

    append_record(out, {"kind": "cancel", "job_ids": []})  # a later record starts on a line of its own
    assert json.loads(log.read_text().splitlines()[-1])["kind"] == "cancel"
    assert [r.get("kind") for r in read_records(out, warn=lambda line: None)] == ["launching", "submission", "cancel"]

    log.write_text("\n".join(log.read_text().splitlines()[:2]) + "\n")  # only the damaged manifest from here on
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text()[:100])
    for command in (["status"], ["resubmit"], ["cancel"], ["aggregate"],
                    ["submit", "--exp", "smoke", "--set", "groups=rot", "--set", "modes=nom"]):
        result = cli(*command, "--out", str(out))
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.startswith(f"error: {manifest} is damaged") and result.stderr.count("\n") == 1


def test_cancel_and_status_on_a_folder_without_a_grid_are_errors(tmp_path):
    for command in ("status", "cancel", "resubmit"):
        result = cli(command, "--out", str(tmp_path))
        assert result.returncode == 2 and "no manifest.json" in result.stderr or "no submission" in result.stderr
