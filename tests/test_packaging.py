"""The environment: one list of versions (constraints.txt) that make env, conda and CI all install."""

import importlib.metadata
import re
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
    requirements = project()["dependencies"] + project()["optional-dependencies"]["test"]
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
    assert pip_lines == ["-c constraints.txt", "-e .[test]"]


def test_the_installed_versions_are_the_pinned_ones():
    for name, version in pins().items():
        assert importlib.metadata.version(name) == version, name
    assert sys.version_info >= (3, 11)


def test_the_torch_that_make_env_installs_is_a_cuda_build():
    import torch

    assert torch.version.cuda, f"torch {torch.__version__} is a CPU-only build; GPU nodes would train on the CPU"


def test_console_script_runs_the_command_line():
    assert project()["scripts"]["pipeline"] == "pipeline.cli:main"
