"""Nothing launched that is not recorded, nothing signalled that is not ours, a status that says
"complete" only of complete data and "unknown" of what it cannot tell, and a run-trial that never adds
another grid's trials to a folder; sizes that plan bounds; paths that messages quote."""

import json
import os
import signal
import socket
import subprocess
import time

import h5py
import pytest

from helpers import ROOT, cli, pipeline_argv, sets, wait_until
from pipeline.launch.grid import load_grid
from pipeline.launch.monitor import gather
from pipeline.leases.ownership import process_start_ticks
from pipeline.trialfile.files import inspect, read_status
from pipeline.trialfile.manifest import write_manifest

SMALL = ["groups=rot", "modes=nom", "cnn.seeds=1", "configs=cross"]


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()]


def state_of(out, trial_id):
    return next(s for s in gather(out) if s.trial_id == trial_id)


# -- 5. nothing launched unrecorded -------------------------------------------------------------------------------

def test_a_launch_whose_reader_goes_away_is_recorded(tmp_path):
    """`submit ... | head -c 0`: the reader is gone before the launch's line is printed. The launch must be
    recorded all the same (it was printed, then recorded: workers ran that status called missing)."""
    out = tmp_path / "out"
    command = " ".join(pipeline_argv("submit", "--exp", "smoke", "--out", str(out), "--no-wait", "--workers", "1",
                                     *sets(SMALL))) + " | head -c 0"
    piped = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert piped.stderr == ""
    launched = [r for r in records(out) if r.get("kind") == "submission"]
    assert len(launched) == 1 and sorted(i for t in launched[0]["tasks"] for i in t["indices"]) == [0, 1]
    assert all(t["job_id"] and t["start_ticks"] for t in launched[0]["tasks"])
    assert wait_until(lambda: all(s.state == "complete" for s in gather(out)), timeout=300)
    assert "missing" not in {s.state for s in gather(out)}


def test_an_unwritable_submission_log_launches_nothing(tmp_path):
    out = tmp_path / "out"
    failing = {**os.environ, "PIPELINE_INJECT_FAULT": "rot-nom-s000@1"}
    cli("submit", "--exp", "smoke", "--out", str(out), *sets(SMALL), env=failing)
    assert state_of(out, "rot-nom-s000").state == "failed"
    log = out / "submissions.jsonl"
    before = log.read_bytes()
    if subprocess.run(["chattr", "+i", str(log)], capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must be able to make a file immutable (chattr +i, as root on ext4)")
        pytest.skip("chattr +i needs root and a file system that has it")
    try:
        again = cli("resubmit", "--out", str(out))
    finally:
        subprocess.run(["chattr", "-i", str(log)], check=True)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "PermissionError" in again.stderr
    assert again.stdout == ""  # nothing said before the record: nothing was launched
    assert log.read_bytes() == before
    time.sleep(2)
    assert read_status(out / "trials" / "rot-nom-s000.h5")["status"] == "failed"  # nobody resumed it
    assert state_of(out, "rot-nom-s000").state == "failed"


def test_ctrl_c_between_the_launch_and_its_record_leaves_the_record(tmp_path, monkeypatch):
    from pipeline.launch.backends.local import LocalBackend
    from pipeline.launch.profiles import load_profile
    from pipeline.launch.submission import plan_submission, submit

    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in SMALL))
    write_manifest(out, grid, grid.trials())

    def launch_then_ctrl_c(self, out_dir, plan, base, records, say, tensorboard):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C right after the workers started (here, not to another thread)
        time.sleep(0.2)
        records.append({**base, "tasks": [{"job_id": "4242", "indices": [0, 1], "start_ticks": 1}]})
        say("started 1 local worker process(es)")
        return []

    monkeypatch.setattr(LocalBackend, "launch", launch_then_ctrl_c)
    printed = []
    with pytest.raises(KeyboardInterrupt):
        submit(out, plan_submission(out, [0, 1], load_profile("local"), workers=1), log=printed.append)
    kinds = [r.get("kind") for r in records(out)]
    assert kinds == ["launching", "submission"]
    assert records(out)[1]["tasks"][0]["job_id"] == "4242"
    assert printed == []  # the interrupt took effect once the record was written, before anything was said


def test_a_launch_begun_but_never_recorded_is_unknown_never_missing(tmp_path):
    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in SMALL))
    write_manifest(out, grid, grid.trials())
    (out / "submissions.jsonl").write_text(json.dumps({"kind": "launching", "id": "x", "executor": "slurm",
                                                       "submitted_at": "2026-01-01T00:00:00+00:00",
                                                       "indices": [[0], [1]]}) + "\n")
    states = gather(out)
    assert [s.state for s in states] == ["unknown", "unknown"]
    assert "interrupted before its job ids were recorded" in states[0].detail
    refused = cli("resubmit", "--out", str(out), "--cluster", "local")
    assert refused.returncode == 2 and "--force" in refused.stderr


# -- 6. records without process identity --------------------------------------------------------------------------

def test_an_old_record_whose_pid_is_now_another_process_is_unknown_and_its_children_are_not_signalled(tmp_path):
    grid = load_grid("smoke", dict(v.split("=", 1) for v in SMALL))
    out = tmp_path / "out"
    write_manifest(out, grid, grid.trials())
    stranger = subprocess.Popen(["sh", "-c", "sleep 120 & wait"])  # someone else's process, with a child
    try:
        assert wait_until(lambda: _children(stranger.pid), timeout=10)
        child = _children(stranger.pid)[0]
        record = {"kind": "submission", "submitted_at": "2025-01-01T00:00:00+00:00", "hostname": socket.gethostname(),
                  "profile": "local", "executor": "local", "folder": "",
                  "tasks": [{"job_id": str(stranger.pid), "indices": [0, 1]}]}  # the older format: no identity
        (out / "submissions.jsonl").write_text(json.dumps(record) + "\n")
        states = gather(out)
        assert [s.state for s in states] == ["unknown", "unknown"], [s.detail for s in states]
        assert "cannot be told" in states[0].detail
        result = cli("cancel", "--out", str(out))
        assert result.returncode == 0 and "none were queued or running" in result.stdout
        time.sleep(0.5)
        assert process_start_ticks(child) is not None and stranger.poll() is None
    finally:
        stranger.kill()
        subprocess.run(["pkill", "-P", str(stranger.pid)], capture_output=True)


def _children(pid):
    from pipeline.launch.backends.local import children

    return children(pid)


# -- 7. complete means complete; resubmit reruns what is not --------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small grid of every experiment, run once: complete files to damage."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *sets(SMALL + ["cnn.phase2_epochs=3"])).returncode == 0
    stability = tmp_path_factory.mktemp("finished") / "stability"
    assert cli("submit", "--exp", "stability-smoke", "--out", str(stability), "--set", "networks=rot",
               "--set", "seeds=1").returncode == 0
    return out, stability


def _shortened(path, group, keep):
    with h5py.File(path, "a", locking=False) as f:
        for name in f[group]:
            if isinstance(f[group][name], h5py.Dataset):
                f[group][name].resize(keep(f[group][name].shape[0]), axis=0)


def test_a_file_missing_a_snapshot_a_step_or_its_results_is_not_complete(finished, tmp_path):
    import shutil

    out, stability = finished
    cases = {"last snapshot removed": (out / "trials" / "rot-nom-s000.h5", "weights", "missing"),
             "last step removed": (out / "trials" / "cnn-cross-s000.h5", "steps", "single steps recorded in epochs"),
             "results removed": (stability / "trials" / "stab-rot-s000.h5", "results", "no results/")}
    for case, (source, group, words) in cases.items():
        assert inspect(source).status == "complete", case
        damaged = tmp_path / f"{case}.h5"
        shutil.copyfile(source, damaged)
        if group == "results":
            with h5py.File(damaged, "a", locking=False) as f:
                del f["results"]
        else:
            _shortened(damaged, group, lambda n: n - 1)
        state = inspect(damaged)
        assert state.status == "inconsistent" and words in state.problem, (case, state.problem)


def test_resubmit_reruns_an_inconsistent_trial(tmp_path):
    out = tmp_path / "out"
    assert cli("submit", "--exp", "smoke", "--out", str(out), *sets(SMALL)).returncode == 0
    path = out / "trials" / "rot-nom-s000.h5"
    _shortened(path, "weights", lambda n: n - 1)  # its last snapshot gone
    assert state_of(out, "rot-nom-s000").state == "inconsistent"
    again = cli("resubmit", "--out", str(out), "--wait")
    assert again.returncode == 0, again.stderr
    said = next(line for line in again.stdout.splitlines() if line.startswith("resubmitting rot-nom-s000"))
    assert "(inconsistent: marked complete but holds weights/" in said and "snapshots" in said, said
    assert [s.state for s in gather(out)] == ["complete", "complete"]
    assert len(list((out / "trials").glob("rot-nom-s000.h5.inconsistent-*"))) == 1


# -- 8. run-trial and the folder's grid ---------------------------------------------------------------------------

def test_run_trial_takes_its_trial_from_the_folder_and_never_adds_another_grid(tmp_path):
    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in SMALL))
    write_manifest(out, grid, grid.trials())
    manifest = (out / "manifest.json").read_bytes()
    # The --sets forgotten, or another grid: refused in one line, the folder untouched.
    for argv, words in ((["--exp", "smoke", "--index", "3"], "is not the grid of"),
                        (["--exp", "smoke", "--set", "groups=trans", "--index", "0"], "is not the grid of"),
                        (["--exp", "demo", "--index", "0"], "exists in this folder with other settings")):
        refused = cli("run-trial", "--out", str(out), *argv)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert words in refused.stderr, refused.stderr
        assert (out / "manifest.json").read_bytes() == manifest and not (out / "trials").exists()
    refused = cli("run-trial", "--out", str(out), "--exp", "smoke", "--index", "3")
    assert "it would add 13 trial(s) to the 2 trial(s) of grid smoke" in refused.stderr and "--grow" in refused.stderr
    dry = cli("run-trial", "--out", str(out), "--exp", "smoke", "--index", "3", "--grow", "--dry-run")
    assert dry.returncode == 0 and "adds 13 trial(s) to the 2 trial(s) of grid smoke" in dry.stdout
    assert (out / "manifest.json").read_bytes() == manifest
    planned = cli("submit", "--exp", "smoke", "--out", str(out), "--dry-run")
    assert "adds 13 trial(s) to the 2 trial(s) of grid smoke" in planned.stdout
    # Without --exp, the trial comes from the folder: index 1 is the folder's second trial.
    ran = cli("run-trial", "--out", str(out), "--index", "1")
    assert ran.returncode == 0, ran.stderr
    assert read_status(out / "trials" / "cnn-cross-s000.h5")["status"] == "complete"
    assert json.loads(manifest)["trials"] == json.loads((out / "manifest.json").read_text())["trials"]
    # The same grid given again is the folder's own: allowed, nothing added.
    same = cli("run-trial", "--out", str(out), "--exp", "smoke", *sets(SMALL), "--index", "0")
    assert same.returncode == 0, same.stderr
    assert len(json.loads((out / "manifest.json").read_text())["trials"]) == 2
    grown = cli("run-trial", "--out", str(out), "--exp", "smoke", "--set", "groups=rot", "--set", "modes=nom",
                "--set", "cnn.seeds=1", "--set", "configs=cross", "--set", "seeds=2", "--index", "1", "--grow")
    assert grown.returncode == 0, grown.stderr
    assert len(json.loads((out / "manifest.json").read_text())["trials"]) == 4
    missing = cli("run-trial", "--out", str(tmp_path / "new"), "--index", "0")
    assert missing.returncode == 2 and "give --exp" in missing.stderr


# -- 13. bounds, and paths quoted -------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("epochs=100000000", "epochs=100000000 is too large (epochs of one trial); accepted: at most 100000"),
    ("epochs=100000000000000000000", "epochs=100000000000000000000 is too large"),
    ("n=100000", "n=100000 is too large (images are resized from the 28 x 28 MNIST digits); accepted: at most 28"),
    ("channels=1000000000", "channels=1000000000 is too large (channels of a layer); accepted: at most 4096"),
    ("cnn_channels=100000,8,8", "cnn_channels=100000,8,8 is too large (channels of a layer)"),
    ("seeds=0-100000000000", "seeds=0-100000000000 is 100000000001 seeds; accepted: at most 100000"),
    ("image_size=1024", "image_size=1024 is too large"),
    ("phase1_epochs=99999999", "phase1_epochs=99999999 and phase2_epochs=1 are too many epochs for one trial; "
                               "accepted: at most 100000 in all"),
    ("groups.channels=1024", "a model of 1.4e+09 weights (n=6, channels=1024) is too large; accepted: at most 1e+09"),
])
def test_sizes_are_bounded_in_plan_in_one_line(override, message, capsys):
    from pipeline.cli import main

    started = time.monotonic()
    assert main(["plan", "--exp", "smoke", "--set", override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert time.monotonic() - started < 60  # refused, not computed


def test_messages_quote_the_paths_they_print(tmp_path):
    odd = tmp_path / "my results; rm -rf x"
    odd.mkdir()
    status = cli("status", "--out", str(odd))
    assert status.returncode == 2 and f"no manifest.json in '{odd}'" in status.stderr
    submitted = cli("submit", "--exp", "smoke", "--out", str(odd), "--no-wait", "--workers", "1", *sets(SMALL))
    assert submitted.returncode == 0, submitted.stderr
    assert f"python -m pipeline status --out '{odd}'" in submitted.stdout
    assert cli("cancel", "--out", str(odd)).returncode == 0
