"""``train --out FOLDER`` into a folder that has a grid: like ``run-trial``, it adds no trial to that grid
without ``--grow`` (``train --out FOLDER --seed 5`` added a trial with other settings to a foreign folder)."""

from __future__ import annotations

import json

from pipeline.cli import main
from pipeline.launch.grid import load_grid
from pipeline.trialfile.manifest import write_manifest

TINY = ["--group", "rot", "--mode", "nom", "--epochs", "1", "--n-samples", "32", "--channels", "2", "--set", "n=6",
        "--lr", "0.1"]


def trial_ids(out) -> list[str]:
    return [entry["trial_id"] for entry in json.loads((out / "manifest.json").read_text())["trials"]]


def test_train_into_a_folder_of_another_grid_is_refused_without_grow(tmp_path, capsys):
    out = tmp_path / "out"
    grid = load_grid("smoke", {"groups": "rot", "modes": "nom", "cnn.seeds": "1", "configs": "cross"})
    write_manifest(out, grid, grid.trials())
    before = (out / "manifest.json").read_bytes()
    assert main(["train", *TINY, "--seed", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--grow" in err and "rot-nom-s005" in err and "grid smoke" in err, err
    assert (out / "manifest.json").read_bytes() == before
    assert not (out / "trials").exists()
    assert main(["train", *TINY, "--seed", "5", "--out", str(out), "--grow"]) == 0
    assert trial_ids(out)[-1] == "rot-nom-s005" and (out / "trials" / "rot-nom-s005.h5").exists()


def test_train_into_a_new_folder_or_of_a_trial_the_folder_has_needs_no_grow(tmp_path):
    out = tmp_path / "out"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert main(["train", *TINY, "--out", str(out), "--force"]) == 0  # the same trial again: nothing added
    assert trial_ids(out) == ["rot-nom-s000"]
