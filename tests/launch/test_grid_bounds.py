"""Grids that cannot hang a command or smuggle a line into an sbatch script: expansion linear in the
number of trials, a bound on the total, bounded sampled passes, and names and paths that an sbatch script
can carry."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT
from pipeline.launch import grid as grid_module
from pipeline.launch.grid import load_grid
from pipeline.settings import ConfigError


class CountedId(str):
    """A trial id that counts how often it is compared: the duplicate check must not compare every id with
    every other (``ids.count`` in a loop: 100,000 trials took over 300 s)."""

    comparisons = 0

    def __eq__(self, other):
        CountedId.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_checking_ids_for_duplicates_is_linear(monkeypatch):
    name_trials = grid_module.name_trials

    def counted(*args, **kwargs):
        trials = name_trials(*args, **kwargs)
        for trial in trials:
            object.__setattr__(trial, "trial_id", CountedId(trial.trial_id))  # a frozen dataclass
        return trials

    monkeypatch.setattr(grid_module, "name_trials", counted)
    grid = load_grid("smoke", {"groups.seeds": "0-999", "cnn.seeds": "1"})
    CountedId.comparisons = 0
    trials = grid.trials()
    assert len(trials) >= 12_000
    assert CountedId.comparisons < 10 * len(trials), CountedId.comparisons


def test_a_grid_beyond_the_bound_on_trials_is_refused_before_it_is_expanded():
    """100,000 seeds (each section's bound) times two learning rates: refused in one line, at once."""
    from pipeline.settings import MAX_TRIALS

    result = subprocess.run([sys.executable, "-m", "pipeline", "plan", "--exp", "smoke", "--set", "groups=rot",
                             "--set", "modes=nom", "--set", "seeds=0-99999", "--set", "groups.lr=0.1,0.2",
                             "--set", "cnn.seeds=1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"at most {MAX_TRIALS:,}" in result.stderr and "200,003 combinations" in result.stderr


def test_a_list_of_seeds_is_bounded_as_a_range_is():
    with pytest.raises(ConfigError, match="at most 100000"):
        load_grid("smoke", {"groups.seeds": ",".join(map(str, range(100_001)))})


@pytest.mark.parametrize("augment", ["sampled:99999999999", "sampled:²"])
def test_sampled_passes_are_bounded(augment):
    with pytest.raises(ConfigError, match="augment"):
        load_grid("smoke", {"augment": augment})


def test_a_line_break_in_a_grid_files_name_is_refused(tmp_path):
    evil = tmp_path / "grid\ntouch pwned-by-a-grid-name.toml"
    evil.write_text('[groups]\ngroups = "rot"\nmodes = "nom"\nn = 6\nchannels = 2\nn_samples = 32\nepochs = 1\n')
    result = subprocess.run([sys.executable, "-m", "pipeline", "submit", "--exp", str(evil), "--out",
                             str(tmp_path / "out"), "--cluster", "t4", "--dry-run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert "\ntouch pwned" not in result.stdout
    assert result.returncode == 2 and "'\\n'" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_line_break_in_the_results_folder_is_refused_on_slurm(tmp_path):
    out = tmp_path / "out\ntouch pwned-by-a-folder-name"
    result = subprocess.run([sys.executable, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(out),
                             "--cluster", "t4", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert not [line for line in result.stdout.splitlines() if line.startswith("touch pwned")], result.stdout
    assert result.returncode == 2 and "'\\n'" in result.stderr and result.stderr.count("\n") == 1, result.stderr
