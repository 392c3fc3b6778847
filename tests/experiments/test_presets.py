"""Presets that build on one another, "did you mean" for misspelt names, and help that shows real defaults."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.launch.grid import load_grid
from pipeline.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def described(grid):
    return [(t.trial_id, dataclasses.asdict(t.settings), t.swept) for t in grid.trials()]


def test_a_preset_extends_another_and_its_own_keys_win(tmp_path):
    (tmp_path / "base.toml").write_text(
        'description = "base"\n[groups]\ngroups = ["rot", "trans"]\nmodes = ["nom"]\nn = 6\nchannels = 2\n'
        'n_samples = 32\nepochs = 2\nlr = 0.1\n\n[launch]\ntrials_per_task = 4\npack_seeds = true\n')
    (tmp_path / "child.toml").write_text(
        'extends = "base.toml"\n[groups]\nepochs = 3\nmodes = ["equi", "nom"]\n\n[launch]\ntrials_per_task = 2\n'
        '\n[cnn]\nconfigs = ["cross"]\nn_samples = 32\ncnn_channels = "2,3,3"\nphase1_epochs = 1\nphase2_epochs = 1\n')
    (tmp_path / "grandchild.toml").write_text('extends = "child.toml"\ndescription = "grandchild"\n[groups]\nlr = 0.2\n')
    child = load_grid(str(tmp_path / "child.toml"))
    assert child.description == "base" and child.launch == {"trials_per_task": 2, "pack_seeds": True}
    groups = [t for t in child.trials() if t.experiment == "groups"]
    assert [t.trial_id for t in groups] == ["rot-equi-s000", "rot-nom-s000", "trans-equi-s000", "trans-nom-s000"]
    assert {t.settings.epochs for t in groups} == {3} and {t.settings.channels for t in groups} == {2}
    assert any(t.experiment == "cnn" for t in child.trials())
    grandchild = load_grid(str(tmp_path / "grandchild.toml"))
    assert grandchild.description == "grandchild"
    assert {t.settings.lr for t in grandchild.trials() if t.experiment == "groups"} == {0.2}
    assert {t.settings.epochs for t in grandchild.trials() if t.experiment == "groups"} == {3}


def test_a_preset_that_extends_itself_is_one_line(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n[groups]\nepochs = 1\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n[groups]\nepochs = 2\n')
    with pytest.raises(ConfigError) as error:
        load_grid(str(tmp_path / "a.toml"))
    assert "extends itself: a -> b -> a" in str(error.value)
    (tmp_path / "c.toml").write_text('extends = "no-such-preset"\n[groups]\nepochs = 1\n')
    with pytest.raises(ConfigError, match="unknown grid 'no-such-preset'"):
        load_grid(str(tmp_path / "c.toml"))


def test_the_stability_preset_judges_every_network_over_three_seeds_and_the_demo_a_converging_case():
    from pipeline.experiments.stability import CONTROLS, NETWORKS

    stability = load_grid("stability")
    trials = stability.trials()
    seeds: dict[str, set] = {}
    for trial in trials:
        seeds.setdefault(trial.settings.network, set()).add(trial.settings.seed)
    assert set(seeds) == set(NETWORKS) and all(len(s) >= 3 for s in seeds.values())
    # Budgets and sizes are set per network, and ids name the network and the seed only.
    assert {t.trial_id for t in trials} == {f"stab-{t.settings.network}-s{t.settings.seed:03d}" for t in trials}
    assert len({t.settings.hessian_budget for t in trials}) > 1 and all(not t.swept for t in trials)
    demo = load_grid("demo")
    assert "extends" not in (ROOT / "jobs" / "demo.toml").read_text()
    networks = {t.settings.network for t in demo.trials() if t.experiment == "stability"}
    assert networks == {"rototrans", *CONTROLS}
    assert len(demo.trials()) == 68 and demo.launch == {"trials_per_task": 2, "pack_seeds": True}


@pytest.mark.parametrize("argv,message", [
    (["plan", "--exp", "paper-grups"], "unknown grid 'paper-grups' (did you mean 'paper-groups'"),
    (["plan", "--exp", "smoke", "--set", "chanels=3"], "unknown key 'chanels' for grid smoke (did you mean 'channels'?)"),
    (["train", "--set", "epoch=3"], "unknown setting 'epoch' for groups (did you mean 'epochs'?)"),
    (["train", "--group", "rototrns"], "unknown group 'rototrns' (did you mean 'rototrans'?); accepted:"),
    (["plan", "--exp", "smoke", "--cluster", "testclustr"],
     "unknown cluster profile 'testclustr' (did you mean 'testcluster'?)"),
])
def test_a_misspelt_name_gets_a_suggestion_in_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_help_shows_real_defaults_and_the_registered_experiments():
    from pipeline import experiments

    for command in ("train", "plan", "submit", "status", "resubmit", "run-trial", "logs", "cancel", "aggregate"):
        text = subprocess.run([sys.executable, "-m", "pipeline", command, "--help"], cwd=ROOT, capture_output=True,
                              text=True).stdout
        assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    train = subprocess.run([sys.executable, "-m", "pipeline", "train", "--help"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    assert f"one of {', '.join(experiments.REGISTRY)}" in " ".join(train.split())
    assert "default rot (groups)" in " ".join(train.split()) and "default 5e-05 (groups)" in " ".join(train.split())
    status = " ".join(subprocess.run([sys.executable, "-m", "pipeline", "status", "--help"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.split())
    assert "--watch [SECONDS]" in status
