"""The environment: one list of versions (constraints.txt) that make env, conda and CI all install."""

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def pins() -> dict[str, str]:
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            pinned[name.strip().lower()] = version.strip()
    return pinned


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_dependency_is_pinned_once_and_satisfies_the_projects_bounds():
    requirements = project()["dependencies"] + [r for extra in project()["optional-dependencies"].values() for r in extra]
    pinned = pins()
    assert {_name(r) for r in requirements} == set(pinned)
    for requirement in requirements:
        lower = re.search(r">=\s*([0-9][0-9.]*)", requirement)
        if lower:
            have = tuple(int(p) for p in pinned[_name(requirement)].split(".")[:2])
            want = tuple(int(p) for p in lower.group(1).split(".")[:2])
            assert have >= want, requirement


def test_the_conda_environment_installs_the_same_pins_with_the_same_python():
    text = (ROOT / "environment.yml").read_text()
    channels = re.search(r"channels:\n((?:  - .*\n)+)", text).group(1)
    assert [c.strip("- \n") for c in channels.splitlines()] == ["conda-forge"]  # no stale pytorch channel
    dependencies = text.split("\ndependencies:\n", 1)[1]
    conda = [m.group(1) for m in re.finditer(r"^  - ([^\s:]+)\s*$", dependencies, re.M)]
    python = [d for d in conda if d.startswith("python=")]
    assert python == ["python=3.11"] and set(conda) == {"python=3.11", "pip"}  # every package comes from pip
    assert project()["requires-python"] == ">=3.11"
    pip_lines = [m.group(1).strip() for m in re.finditer(r"^      - (.+)$", dependencies, re.M)]
    extras = ",".join(project()["optional-dependencies"])
    assert pip_lines == ["-c constraints.txt", f"-e .[{extras}]"]


def test_the_installed_versions_are_the_pinned_ones():
    for name, version in pins().items():
        assert importlib.metadata.version(name) == version, name
    assert sys.version_info >= (3, 11)


def test_the_torch_that_make_env_installs_is_a_cuda_build():
    import torch

    assert torch.version.cuda, f"torch {torch.__version__} is a CPU-only build; GPU nodes would train on the CPU"


def test_console_script_runs_the_command_line():
    assert project()["scripts"]["pipeline"] == "pipeline.cli:main"


# -- which interpreter `make` uses -------------------------------------------------------------------------

def make_dry_run(*targets, **environment):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PY")}
    env.update(environment)
    result = subprocess.run(["make", "-n", *targets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_uses_an_activated_environment_that_has_the_project_and_builds_no_venv():
    active = Path(sys.prefix)  # the environment running the tests has the project installed
    printed = make_dry_run("env", "submit", "EXP=smoke", VIRTUAL_ENV=str(active))
    assert f"{active}/bin/python -m pipeline submit --exp smoke" in printed
    assert "-m venv" not in printed and "pip install --quiet" not in printed
    assert f"interpreter: {active}/bin/python (the virtualenv {active}, which has the project installed)" in printed
    conda = make_dry_run("status", "OUT=x", CONDA_PREFIX=str(active), CONDA_DEFAULT_ENV="eqdyn")
    assert f"{active}/bin/python -m pipeline status --out x" in conda


def test_make_builds_its_own_venv_when_no_environment_is_active(tmp_path):
    venv = tmp_path / "v"
    printed = make_dry_run("env", "test", f"VENV={venv}")
    assert f"python3 -m venv {venv}" in printed and f"{venv}/bin/python -m pip install" in printed
    assert f"{venv}/bin/python -m pytest" in printed
    assert "note:" not in printed


def test_make_falls_back_to_its_venv_beside_an_environment_without_the_project(tmp_path):
    bare = tmp_path / "bare"
    (bare / "bin").mkdir(parents=True)
    (bare / "bin" / "python").symlink_to("/usr/bin/python3")  # a Python without the project
    printed = make_dry_run("env", "plan", VIRTUAL_ENV=str(bare))
    assert ".venv/bin/python -m pipeline plan" in printed
    assert f"note: the virtualenv {bare} is active but does not have the project installed" in printed
    # conda's base environment is active for many users: falling back beside it is not worth a note.
    quiet = make_dry_run("plan", CONDA_PREFIX=str(bare), CONDA_DEFAULT_ENV="base")
    assert ".venv/bin/python -m pipeline plan" in quiet and "note:" not in quiet


def test_py_overrides_every_environment():
    printed = make_dry_run("env", "status", "OUT=x", "PY=/opt/other/python", VIRTUAL_ENV=str(Path(sys.prefix)))
    assert "/opt/other/python -m pipeline status --out x" in printed and "-m venv" not in printed
    assert "interpreter: /opt/other/python (PY=/opt/other/python, as given)" in printed


def test_make_env_installs_every_extra_of_the_project():
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS := (.+)$", makefile, re.M).group(1).split(",")
    assert extras == list(project()["optional-dependencies"])


# -- the CUDA 12 build, for clusters whose drivers serve CUDA 12 only -------------------------------------------

def test_the_cuda12_constraints_pin_the_same_versions_with_the_cu126_build_of_torch():
    from packaging.specifiers import SpecifierSet
    from pip._internal.network.session import PipSession
    from pip._internal.req.req_file import parse_requirements

    text = (ROOT / "constraints-cuda12.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cu126" in text.splitlines()
    parsed = [str(r.requirement) for r in parse_requirements(str(ROOT / "constraints-cuda12.txt"), PipSession(),
                                                              constraint=True)]
    own = {_name(r): r.split("==")[1] for r in parsed if "+cu126" in r}
    assert own == {"torch": pins()["torch"] + "+cu126", "torchvision": pins()["torchvision"] + "+cu126"}
    assert sorted(f"{name}=={version}" for name, version in pins().items()) == sorted(r for r in parsed if "+" not in r)
    for name, version in own.items():  # both files apply: constraints.txt's pin admits the local build
        assert version in SpecifierSet(f"=={pins()[name]}")


def test_the_cuda12_conda_environment_is_the_default_one_with_its_constraints():
    default = (ROOT / "environment.yml").read_text()
    cuda12 = (ROOT / "environment-cuda12.yml").read_text()
    body = lambda text: text[text.index("name:"):]  # noqa: E731 (the files' comments differ, their body must not)
    assert body(cuda12) == body(default).replace("-c constraints.txt", "-c constraints-cuda12.txt")


def test_make_env_takes_the_cuda_build_it_is_asked_for(tmp_path):
    venv = tmp_path / "v"
    default = make_dry_run("env", f"VENV={venv}")
    assert "pip install --quiet -c constraints.txt -e '.[test,tensorboard,wandb]'" in default
    cuda12 = make_dry_run("env", f"VENV={venv}", "CUDA=12")
    assert "pip install --quiet -c constraints-cuda12.txt -e '.[test,tensorboard,wandb]'" in cuda12
    assert f"touch {venv}/.installed-cuda12" in cuda12  # a venv of the other build is reinstalled
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "PY")}
    wrong = subprocess.run(["make", "-n", "env", "CUDA=11"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert wrong.returncode != 0 and "CUDA=11 is not a build this project offers; accepted: 13" in wrong.stderr
