"""What ``aggregate`` writes and removes: nothing outside the results folder is ever deleted, a folder the
user linked in (``aggregate/figures`` into a paper's repository) keeps every file of its own, only outputs the
pipeline recorded writing are swept when stale, and two aggregates of one folder never break each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import analysis
from helpers import ROOT, wait_until
from pipeline.launch.grid import load_grid
from pipeline.run.execute import execute
from pipeline.trialfile.manifest import write_manifest

# One Experiment G trial at toy size (seconds), the rest of the smoke grid missing: a few figures to draw.
TINY = {"groups": "rot", "modes": "nom", "seeds": "1", "cnn.seeds": "1", "configs": "cross"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "out"
    grid = load_grid("smoke", TINY)
    trials = write_manifest(out, grid, grid.trials())
    execute(out, [trials[0]])
    return out


@pytest.fixture
def out(trained, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(trained, copy)
    return copy


def paper_folder(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).write_bytes(content)
    return root


PAPER_FILES = {"thesis.tex": b"\\documentclass{article}", "fig1.png": b"the paper's own figure",
               "paper.pdf": b"%PDF the paper", "notes.md": b"# notes"}


def test_a_figures_folder_linked_into_a_paper_keeps_every_file_of_the_paper(out, tmp_path):
    """The natural workflow: ``aggregate/figures`` (and ``aggregate/provenance``) a link into a paper's
    repository. The figures are written there (the user asked for it), and every file the paper had stays,
    over two runs (the second one sweeps what the first wrote and the second did not make)."""
    figures = paper_folder(tmp_path / "paper" / "figures", PAPER_FILES)
    provenance = paper_folder(tmp_path / "paper" / "provenance", PAPER_FILES)
    (out / "aggregate").mkdir()
    (out / "aggregate" / "figures").symlink_to(figures)
    (out / "aggregate" / "provenance").symlink_to(provenance)
    for _ in range(2):
        result = analysis.aggregate(out, log=lambda line: None)
        for folder in (figures, provenance):
            for name, content in PAPER_FILES.items():
                assert (folder / name).read_bytes() == content, (folder, name)
    made = {p.name for info in result.figures.values() for p in info.paths}
    assert made and made <= {p.name for p in figures.iterdir()}  # the figures went where the link points


def test_stale_outputs_outside_the_folder_are_left_and_said(out, tmp_path):
    """A figure an earlier run wrote through the link, no longer made: it is the pipeline's own, but outside
    the results folder, so it is left where it is, in one line."""
    from analysis import outputs

    figures = paper_folder(tmp_path / "paper" / "figures", {})
    (out / "aggregate").mkdir()
    (out / "aggregate" / "figures").symlink_to(figures)
    said: list[str] = []
    analysis.aggregate(out, log=lambda line: None)
    stale = figures / "groups_old_figure.png"
    stale.write_bytes(b"drawn by an earlier run")
    outputs.Outputs(out).note_written([out / "aggregate" / "figures" / stale.name])  # as that run recorded it
    analysis.aggregate(out, log=said.append)
    assert stale.read_bytes() == b"drawn by an earlier run"
    assert any("left" in line and "groups_old_figure.png" in line and "outside" in line for line in said), said


def test_only_recorded_unchanged_outputs_inside_the_folder_are_swept(out):
    """Inside the results folder a stale output of the pipeline's own goes; a file someone else put there
    under a figure's name, or an output changed since it was written, stays."""
    from analysis import outputs

    figures = out / "aggregate" / "figures"
    first = analysis.aggregate(out, log=lambda line: None)
    assert first.figures
    ours = figures / "groups_stale_figure.png"
    ours.write_bytes(b"made by an earlier grid state")
    changed = figures / "groups_changed_figure.pdf"
    changed.write_bytes(b"made by an earlier grid state")
    outputs.Outputs(out).note_written([ours, changed])
    changed.write_bytes(b"edited by hand since")
    theirs = figures / "groups_foreign_figure.png"
    theirs.write_bytes(b"put here by a person")
    analysis.aggregate(out, log=lambda line: None)
    assert not ours.exists()
    assert changed.read_bytes() == b"edited by hand since" and theirs.read_bytes() == b"put here by a person"


def test_a_link_made_by_another_user_is_not_followed(out, tmp_path):
    """In a group-writable folder a colleague (or an intruder) can plant ``aggregate/figures``; only a link the
    user made is followed."""
    target = paper_folder(tmp_path / "elsewhere", {"keep.png": b"x"})
    (out / "aggregate").mkdir()
    link = out / "aggregate" / "figures"
    link.symlink_to(target)
    os.lchown(link, 12345, 12345)
    with pytest.raises(Exception) as refused:
        analysis.aggregate(out, log=lambda line: None)
    assert "figures" in str(refused.value) and "not followed" in str(refused.value)
    assert [p.name for p in target.iterdir()] == ["keep.png"]


def test_a_linked_trial_log_is_not_written_through(tmp_path):
    """``logs/<id>.log`` a link to a file elsewhere: the trial's progress lines never reach that file."""
    out = tmp_path / "out"
    grid = load_grid("smoke", TINY)
    trials = write_manifest(out, grid, grid.trials())
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / "logs").mkdir()
    (out / "logs" / f"{trials[0].trial_id}.log").symlink_to(victim)
    execute(out, [trials[0]])
    assert victim.read_text() == "precious\n"


def test_two_aggregates_of_one_folder_do_not_break_each_other(out, tmp_path, monkeypatch):
    """A second aggregate starts while the first is saving a figure (its temporary file in ``figures/``) and
    runs to its end meanwhile if it can: the first must still finish, and both must succeed. (The sweep of
    stale figures of the second used to delete the first's temporary file: FileNotFoundError.)"""
    from analysis import style

    log = tmp_path / "second.err"
    second: list[subprocess.Popen] = []
    original = style.replace_atomically

    def save_while_another_runs(path, write):
        def write_then_wait(tmp):
            write(tmp)
            if not second:
                with open(log, "w") as err:
                    second.append(subprocess.Popen([sys.executable, "-m", "analysis", str(out)], cwd=ROOT,
                                                   stdout=err, stderr=subprocess.STDOUT))
                # Until the second is done, or says it waits for this one.
                wait_until(lambda: second[0].poll() is not None or "waiting" in log.read_text(), timeout=300)
        return original(path, write_then_wait)

    monkeypatch.setattr(style, "replace_atomically", save_while_another_runs)
    first = analysis.aggregate(out, log=lambda line: None)
    assert second and second[0].wait(timeout=300) == 0, log.read_text()
    for info in first.figures.values():
        for path in info.paths:
            assert path.exists() and path.stat().st_size > 0
    assert not [p for p in (out / "aggregate" / "figures").iterdir() if ".tmp" in p.name]
