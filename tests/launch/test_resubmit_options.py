"""resubmit remembers how each trial was submitted (its sinks, packing and overrides, from submissions.jsonl),
says what it would do with --dry-run, and reruns only the trials or states chosen."""

import json
import subprocess
import sys

from helpers import ROOT
from pipeline.cli import main
from pipeline.run.faults import FAULT_VARIABLE


def cli(*argv, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def sets(values):
    return [a for v in values for a in ("--set", v)]


def submissions(out):
    return [json.loads(line) for line in (out / "submissions.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "submission"]


def test_resubmit_takes_each_trials_options_from_its_submission_and_chooses_trials_or_states(tmp_path, capsys):
    out = tmp_path / "out"
    grid = sets(["groups=rot,trans", "modes=nom", "cnn.seeds=1", "configs=cross", "epochs=3"])
    env = {**__import__("os").environ, FAULT_VARIABLE: "rot-nom-s000@2,trans-nom-s000@2"}
    failed = cli("submit", "--exp", "smoke", "--out", str(out), "--tensorboard", "--trials-per-task", "2", *grid,
                 env=env)
    assert failed.returncode == 1  # the two faults
    assert main(["resubmit", "--out", str(out), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "resubmitting rot-nom-s000 (failed" in dry and "resubmitting trans-nom-s000 (failed" in dry
    assert "2 trial(s) with --tensorboard --trials-per-task 2" in dry and "(as submitted at" in dry
    assert dry.rstrip().endswith("dry run: nothing was resubmitted") and len(submissions(out)) == 1
    # Only the chosen trial, with its options; a complete one named is said, not rerun.
    assert main(["resubmit", "--out", str(out), "--trials", "trans-nom-s000,cnn-cross-s000"]) == 0
    said = capsys.readouterr().out
    assert "not resubmitted: cnn-cross-s000 is complete" in said and "resubmitting trans-nom-s000" in said
    assert "rot-nom-s000" not in said.split("not resubmitted")[0]
    record = submissions(out)[-1]
    assert [task["indices"] for task in record["tasks"]] == [[1]]
    assert record["options"]["sinks"] == ["tensorboard"] and record["options"]["trials_per_task"] == 2
    assert (out / "tensorboard" / "trans-nom-s000").is_dir()
    # States: nothing cancelled here, so nothing to do; then the failed one, without its curves on request.
    assert main(["resubmit", "--out", str(out), "--states", "cancelled"]) == 0
    assert "nothing to resubmit of those chosen" in capsys.readouterr().out
    assert main(["resubmit", "--out", str(out), "--states", "failed", "--no-tensorboard"]) == 0
    assert "1 trial(s) with --trials-per-task 2" in capsys.readouterr().out
    assert submissions(out)[-1]["options"]["sinks"] == []
    status = cli("status", "--out", str(out)).stdout
    assert "TensorBoard curves end at epoch 1 (an attempt ran without --tensorboard)" in status


def test_bad_choices_are_one_line_naming_the_accepted_ones(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["submit", "--exp", "smoke", "--out", str(out), *sets(["groups=rot", "modes=nom", "configs=cross"])]) == 0
    capsys.readouterr()
    assert main(["resubmit", "--out", str(out), "--trials", "rot-nom-s00"]) == 2
    err = capsys.readouterr().err
    assert "unknown trial 'rot-nom-s00' in --trials (did you mean 'rot-nom-s000'?)" in err and err.count("\n") == 1
    assert main(["resubmit", "--out", str(out), "--states", "faild"]) == 2
    err = capsys.readouterr().err
    assert "unknown state 'faild' in --states (did you mean 'failed'?); accepted: failed, missing" in err
