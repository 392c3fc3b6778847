"""The shape of the code: experiments are named in one place, the launch layer needs no torch, no cycles."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import experiments

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "analysis")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not the ones imported inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {name: {m for m in top_level_imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            # A package's __init__ importing its own modules is how packages are made, not a cycle of code.
            if nxt == node.rpartition(".")[0]:
                continue
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize("module", ["pipeline", "pipeline.launch.monitor", "pipeline.launch.submission", "pipeline.plan",
                                    "pipeline.cli", "pipeline.grid", "pipeline.manifest"])
def test_the_configuration_and_launch_layer_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_only_the_experiment_modules_name_an_experiment():
    pattern = re.compile(r'CNNTrial|GroupsTrial|CNNSettings|GroupsSettings|== "cnn"|== "groups"|'
                         r'== "stability"|isinstance\([^)]*Settings\)')
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.parent.name == "experiments":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_every_registered_experiment_implements_the_interface():
    for name, experiment in experiments.REGISTRY.items():
        assert experiment.name == name and experiment.settings_type.experiment == name
        settings = experiment.make_settings({})
        labels = experiment.labels(settings)
        assert labels.cell_key == experiment.cell_key and labels.cell and labels.mode
        assert experiment.total_epochs(settings) >= 1
        assert experiment.trial_flops(settings) > 0 and experiment.snapshot_values(settings) > 0
        assert experiments.default_trial_id(settings).endswith("-s000")


def test_every_configured_group_is_implemented():
    from pipeline.experiments.groups import GROUP_NAMES
    from pipeline.groups import get_group

    for name in GROUP_NAMES:
        assert get_group(name, 4).name == name
