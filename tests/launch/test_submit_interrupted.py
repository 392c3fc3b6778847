"""A submission stopped by a signal (Ctrl-C, SIGTERM, a hang-up): once its launch is recorded, nothing the
launched tasks need is undone, and the command says what it launched and that it runs on; whenever it
stops, it leaves no guard behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from helpers import ROOT, sets, wait_until
from pipeline.cli import main
from pipeline.launch.monitor import gather

SMALL = ["groups=rot", "modes=nom", "cnn.seeds=1", "configs=cross"]
HOOK = ROOT / "tests" / "signal_during_submit.py"


def submit_argv(out) -> list[str]:
    return ["submit", "--exp", "smoke", "--out", str(out), "--no-wait", "--workers", "1", *sets(SMALL)]


def launched(out) -> list[dict]:
    path = out / "submissions.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("kind") == "submission"]


def test_ctrl_c_right_after_the_launch_keeps_the_manifest_the_tasks_need(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the workers start: the interrupt waits for the record, then stops the command. The
    manifest stayed (it was deleted: the tasks failed with "no manifest.json" and the folder read as "not a
    results folder"), the workers complete their trials, and the message says what was launched, not that
    trials "saved their last epoch"."""
    from pipeline.launch.backends.local import LocalBackend

    out = tmp_path / "out"
    start = LocalBackend.launch

    def launch_then_ctrl_c(self, *args, **kwargs):
        jobs = start(self, *args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # in the main thread, as the terminal's Ctrl-C
        return jobs

    monkeypatch.setattr(LocalBackend, "launch", launch_then_ctrl_c)
    code = main(submit_argv(out))
    said = capsys.readouterr()
    assert code == 130
    assert (out / "manifest.json").exists()
    assert len(launched(out)) == 1
    assert "started 1 local worker process(es)" in said.out
    assert "saved" not in said.err and "runs on" in said.err and "pipeline status --out" in said.err
    assert not (out / ".submit.lease").exists()
    assert wait_until(lambda: all(s.state == "complete" for s in gather(out)), timeout=300), \
        [(s.trial_id, s.state, s.detail) for s in gather(out)]


@pytest.mark.parametrize("where, name", [("launch", "SIGTERM"), ("launch", "SIGHUP"), ("gather", "SIGTERM")])
def test_a_polite_kill_of_submit_releases_the_guard(tmp_path, where, name):
    """SIGTERM or a hang-up during the launch takes effect once it is recorded; one while the folder's guard
    is held (deciding what to submit) ends the command through its cleanup: no ``.submit.lease`` is left
    behind, the exit status says which signal, and a recorded launch keeps its manifest."""
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(HOOK), where, name, *submit_argv(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    signum = getattr(signal, name)
    assert result.returncode == 128 + signum, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (out / ".submit.lease").exists()
    if where == "launch":
        assert len(launched(out)) == 1 and (out / "manifest.json").exists()
        assert "runs on" in result.stderr and "started 1 local worker process(es)" in result.stdout
        assert wait_until(lambda: all(s.state == "complete" for s in gather(out)), timeout=300)
    else:
        assert launched(out) == []  # stopped before anything was launched
