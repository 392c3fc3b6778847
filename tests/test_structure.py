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


MODULES = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports(path: Path, inside_functions: bool = True) -> set[str]:
    """The project's modules a file imports, read with the AST: at its top level and, by default, inside its
    functions too (an import deferred into a function is still a dependency). ``from X import m`` imports
    the module X.m where there is one, else a name of X."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    found = set()
    for node in (ast.walk(tree) if inside_functions else tree.body):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES}


def import_graph(inside_functions: bool = True) -> dict[str, set[str]]:
    # A package's __init__ importing its own modules is how packages are made, not a cycle of code.
    return {name: {m for m in imports(path, inside_functions) if m not in (name, name.rpartition(".")[0])}
            for name, path in MODULES.items()}


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state:
                found = visit(nxt, trail + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


# The house in layers. Every module of the project belongs to one layer; a layer may import its own modules and
# those of the layers it names here, and nothing else: an arrow that goes anywhere else fails the test, imports
# inside functions counted. The ground floor is the shared contracts (pipeline/*.py: schema, folder, errors,
# settings, stopping, progress, durable, names, links); `pipeline` itself is the package's front door
# (load_model, load_trial), `pipeline.cli` and `pipeline.__main__` the command line over everything.
GROUND = "ground"
LAYERING: dict[str, set[str]] = {
    GROUND: set(),
    "pipeline.core": {GROUND},
    "pipeline.schedulers": {GROUND},
    "pipeline.leases": {GROUND, "pipeline.schedulers"},
    "pipeline.experiments": {GROUND, "pipeline.core"},
    "pipeline.trialfile": {GROUND, "pipeline.core", "pipeline.schedulers", "pipeline.leases", "pipeline.experiments"},
    "pipeline.run": {GROUND, "pipeline.core", "pipeline.schedulers", "pipeline.leases", "pipeline.experiments",
                     "pipeline.trialfile"},
    "pipeline.launch": {GROUND, "pipeline.core", "pipeline.schedulers", "pipeline.leases", "pipeline.experiments",
                        "pipeline.trialfile", "pipeline.run"},
    "analysis": {GROUND, "pipeline.core", "pipeline.leases", "pipeline.experiments", "pipeline.trialfile"},
    "pipeline": {"pipeline.trialfile"},
    "pipeline.cli": {GROUND, "pipeline.core", "pipeline.schedulers", "pipeline.leases", "pipeline.experiments",
                     "pipeline.trialfile", "pipeline.run", "pipeline.launch", "analysis"},
    "pipeline.__main__": {"pipeline.cli"},
}


def layer_of(module: str) -> str:
    """The layer a module belongs to: the longest declared name it is or lies under; a module directly in
    pipeline/ that is not declared is the ground floor."""
    declared = [layer for layer in LAYERING if layer != GROUND and (module == layer or module.startswith(layer + "."))]
    if module.count(".") == 1 and module.startswith("pipeline.") and module not in LAYERING:
        return GROUND
    if not declared:
        raise AssertionError(f"{module} lies in no declared layer: add it to LAYERING")
    return max(declared, key=len)


def arrows_across_the_layering(graph: dict[str, set[str]]) -> list[str]:
    return [f"{source} -> {target}" for source, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target) != layer_of(source) and layer_of(target) not in LAYERING[layer_of(source)]]


def test_every_import_follows_the_declared_layering_counting_imports_inside_functions():
    assert arrows_across_the_layering(import_graph(inside_functions=True)) == []


def test_the_layering_check_would_see_an_arrow_upward():
    graph = import_graph()
    graph["pipeline.trialfile.store"] = graph["pipeline.trialfile.store"] | {"pipeline.run.runner"}
    graph["pipeline.schema"] = graph["pipeline.schema"] | {"pipeline.core.training"}
    assert {"pipeline.schema -> pipeline.core.training", "pipeline.trialfile.store -> pipeline.run.runner"} <= set(
        arrows_across_the_layering(graph))


def test_every_module_lies_in_a_declared_layer():
    assert {layer_of(name) for name in MODULES} <= set(LAYERING)


def imports_inside_functions_without_a_reason(source: str) -> list[int]:
    """Lines of imports made inside a function without a comment (on the line or the one above) that says
    ``deferred:`` and what: an import belongs at the top of its module unless it keeps a heavy dependency
    (torch, h5py, pandas, matplotlib, ...) out of a module that must load without it."""
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                said = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
                if "deferred:" not in said:
                    found.append(node.lineno)
    return sorted(set(found))


def test_an_import_inside_a_function_says_what_it_defers():
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in MODULES.values()
                 for line in imports_inside_functions_without_a_reason(path.read_text())]
    assert offenders == []


def test_the_deferred_import_check_would_see_one():
    source = "def f():\n    import json\n    # deferred: torch\n    import torch\n    import h5py  # deferred: h5py\n"
    assert imports_inside_functions_without_a_reason(source) == [2]


def test_no_module_imports_itself_through_others_counting_imports_inside_functions():
    cycle = cycle_in(import_graph(inside_functions=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function():
    graph = import_graph()
    graph["pipeline.schema"] = graph["pipeline.schema"] | {"pipeline.trialfile.files"}  # files imports schema
    assert cycle_in(graph) is not None


# The code that the naming checks below read: the layered packages, and the benchmarks beside them (bench/ is
# scripts over the pipeline, in no layer, but it reads the same files and folders by the same names).
NAMED_CODE = {**MODULES, **{f"bench.{p.stem}": p for p in (ROOT / "bench").glob("*.py")}}


# What a results folder holds, by name: only pipeline/folder.py builds paths from them.
FOLDER_NAMES = {"trials", "logs", "submitit", "leases", "tensorboard", "wandb", "aggregate", "figures", "provenance",
                "manifest.json", "submissions.jsonl", ".submit.lease", "report.md", "local"}


def _path_words(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants used as path components: an operand of ``/``, or an argument of Path(...),
    ``joinpath``, ``with_name`` or ``os.path.join``; and any constant that is one of the file names."""
    found = []
    for node in ast.walk(tree):
        operands = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("Path", "joinpath", "with_name", "join"):
                operands = list(node.args)
        for operand in operands:
            if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                found.append((operand.lineno, operand.value))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in (
                "manifest.json", "submissions.jsonl", ".submit.lease"):
            found.append((node.lineno, node.value))
    return found


def _folder_spellings(tree: ast.AST) -> list[tuple[int, str]]:
    return [(line, word) for line, word in _path_words(tree)
            if word.strip("/") in FOLDER_NAMES or any(part in FOLDER_NAMES for part in word.split("/"))]


def test_only_the_results_folder_module_spells_the_folders_layout():
    assert {"analysis.loading", "bench.gpu_check"} <= set(NAMED_CODE)  # pipeline/, analysis/ and bench/ are read
    offenders = [f"{path.relative_to(ROOT)}:{line}: {word!r}" for name, path in NAMED_CODE.items()
                 if name != "pipeline.folder" for line, word in _folder_spellings(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_folder_check_would_see_a_spelled_path():
    tree = ast.parse('from pathlib import Path\nPath(out) / "trials" / name\nPath("logs")\n'
                     '(out / "aggregate" / "report.md").read_text()\nshutil.copy(x, out / "manifest.json")\n'
                     'Path(out) / "figures-of-mine"\n')
    assert {word for _, word in _path_words(tree)} >= {"trials", "logs", "aggregate", "report.md"}
    assert {word for _, word in _folder_spellings(tree)} == {"trials", "logs", "aggregate", "report.md",
                                                              "manifest.json"}


@pytest.mark.parametrize("module", ["pipeline", "pipeline.launch.monitor", "pipeline.launch.submission",
                                    "pipeline.launch.plan", "pipeline.cli", "pipeline.launch.grid",
                                    "pipeline.trialfile.manifest"])
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
    from pipeline.core.pixel_groups import get_group
    from pipeline.experiments.groups import GROUP_NAMES

    for name in GROUP_NAMES:
        assert get_group(name, 4).name == name


def _executor_branches(tree: ast.AST) -> list[int]:
    """Lines that compare a launcher kind: ``x.executor == ...``, ``record.get("executor") != ...``,
    ``record["executor"] in ...``."""
    def names_executor(node) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "executor":
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "executor"
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            return node.slice.value == "executor"
        return False

    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Compare) and any(names_executor(n) for n in [node.left, *node.comparators])]


def test_no_branch_on_the_launcher_kind_outside_the_backends():
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in MODULES.items()
                 if not name.startswith("pipeline.launch.backends") and name != "pipeline.launch.profiles"
                 for line in _executor_branches(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_branch_check_would_see_one():
    tree = ast.parse('if profile.executor == "local": pass\nx = record.get("executor") != "slurm"\n')
    assert _executor_branches(tree) == [1, 2]


def _series_spellings(tree: ast.AST, names: set[str]) -> list[int]:
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]


# Modules that spell a series name for a quantity of their own: Experiment S's relative distance from E at A*
# (a results attribute ``dist_E``), which is no per-row series.
SERIES_OF_THEIR_OWN = ("pipeline.core.stationary",)


def test_the_pipeline_names_the_per_row_series_only_in_the_schema():
    """The trial file's per-row series are spelled out in pipeline/schema.py alone: whatever measures, writes
    or reads one uses its constant. (Names that are also ordinary words elsewhere, a setting ``loss``, are not
    looked for; Experiment S's results attribute ``dist_E``, the relative distance at A*, is its own.)"""
    from pipeline import schema

    names = {schema.GRAD_NORM, schema.DIST_E, schema.DIST_INIT, schema.STEP_PERP}
    assert names <= set(schema.SERIES)
    assert {"analysis.summary", "analysis.trajectories", "bench.gpu_check"} <= set(NAMED_CODE)
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in NAMED_CODE.items()
                 if name not in ("pipeline.schema", *SERIES_OF_THEIR_OWN)
                 for line in _series_spellings(ast.parse(path.read_text()), names)]
    assert offenders == []


def test_the_series_check_would_see_one():
    assert _series_spellings(ast.parse('measured = {"dist_E": [], "x": 1}\n'), {"dist_E"}) == [1]
    # as a column of a table, too
    assert sorted(_series_spellings(ast.parse('rows["dist_init"] > 0\nx = {"travelled": "dist_init"}\n'),
                                    {"dist_init"})) == [1, 2]


def test_the_total_over_layers_is_computed_in_the_schema_only():
    """The total of a per-layer series over the layers (console, live curves, the epochs table's ``total``
    rows) is ``schema.total_over_layers``: nobody else squares and sums a row of layers."""
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in NAMED_CODE.items()
                 if name != "pipeline.schema" for line in _sums_of_squares(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_total_check_would_see_one():
    tree = ast.parse('math.sqrt(sum(v * v for v in per_layer))\nnp.sqrt(np.sum(values**2, axis=1))\n'
                     'math.sqrt(x)\n')
    assert _sums_of_squares(tree) == [1, 2]


def _sums_of_squares(tree: ast.AST) -> list[int]:
    """Lines that take a square root of a sum of squares: ``sqrt(sum(...**2 ...))`` or ``sqrt(sum(v * v ...))``."""
    def called(node: ast.AST, name: str) -> bool:
        return isinstance(node, ast.Call) and (getattr(node.func, "attr", None) == name
                                               or getattr(node.func, "id", None) == name)

    def squares(node: ast.AST) -> bool:
        return any(isinstance(n, ast.BinOp) and (
            (isinstance(n.op, ast.Pow) and isinstance(n.right, ast.Constant) and n.right.value == 2)
            or (isinstance(n.op, ast.Mult) and ast.dump(n.left) == ast.dump(n.right))) for n in ast.walk(node))

    return [node.lineno for node in ast.walk(tree) if called(node, "sqrt") and node.args
            and called(node.args[0], "sum") and squares(node.args[0])]



def test_an_experiment_that_measures_after_training_names_a_registered_analysis():
    from analysis.results_analyses import REGISTRY

    named = {experiment.results_analysis for experiment in experiments.REGISTRY.values()} - {None}
    assert named and named <= set(REGISTRY)  # Experiment S names its own; the analysis hard-codes none


def _manifest_key_reads(tree: ast.AST) -> list[int]:
    """Lines that read a manifest's trial list by its key: ``manifest["trials"]``, ``document.get("trials")``,
    ``read_manifest(out)["trials"]`` (what is read is named a manifest or a document, or read by read_manifest;
    a table's column ``trials`` is another thing)."""
    def is_key(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value == "trials"

    def a_manifest(node: ast.AST) -> bool:
        return any(word in ast.unparse(node) for word in ("manifest", "document"))

    return [node.lineno for node in ast.walk(tree)
            if (isinstance(node, ast.Subscript) and is_key(node.slice) and a_manifest(node.value))
            or (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and bool(node.args) and is_key(node.args[0]) and a_manifest(node.func.value))]


def test_only_the_manifest_reads_its_list_of_trials_by_key():
    """A manifest's trials are read through ``pipeline.trialfile.manifest.entries`` (or ``trial_ids``); its key
    is the manifest's own (``wellformed.TRIALS_KEY``, which checks the document's shape)."""
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in NAMED_CODE.items()
                 if name not in ("pipeline.trialfile.manifest", "pipeline.trialfile.wellformed")
                 for line in _manifest_key_reads(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_manifest_key_check_would_see_one():
    tree = ast.parse('n = len(manifest["trials"])\nfor e in document.get("trials", []): pass\nx = row["trials"]\n'
                     'ids = read_manifest(out)["trials"]\n')
    assert sorted(_manifest_key_reads(tree)) == [1, 2, 4]


# Experiment S's own modules: the only ones that name the arrays of its results/ group.
S_MODULES = {"pipeline.experiments.stability", "pipeline.experiments.stability_settings",
             "pipeline.experiments.stability_trial", "pipeline.core.stationary", "pipeline.core.stationary_search",
             "pipeline.core.stationarity", "analysis.stationary_points", "analysis.stationary_point_tables"}
S_ARRAY_PREFIXES = ("spectrum/", "perturbation/")


def _s_array_names(tree: ast.AST) -> list[int]:
    """Lines that spell a path of Experiment S's results/ arrays (a string, or the start of an f-string)."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(S_ARRAY_PREFIXES)]


def test_only_experiment_s_names_its_arrays():
    assert S_MODULES <= set(NAMED_CODE)
    offenders = [f"{path.relative_to(ROOT)}:{line}" for name, path in NAMED_CODE.items() if name not in S_MODULES
                 for line in _s_array_names(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_s_array_check_would_see_one():
    tree = ast.parse('a = arrays.get(f"spectrum/{block}/lowest")\nb = name.startswith("perturbation/")\n')
    assert sorted(_s_array_names(tree)) == [1, 2]


def test_the_analysis_reaches_an_experiments_own_analysis_through_the_registries():
    """Only the registries (``analysis.results_analyses``, ``analysis.result_tables``) import the modules of an
    experiment's own analysis; the loading, the aggregation and the report ask them."""
    from analysis import result_tables, results_analyses

    own = {function.__module__ for analysis in results_analyses.REGISTRY.values()
           for function in (analysis.figures, analysis.section, analysis.trial_table, analysis.reasons_in_words,
                            analysis.summary_lines, *analysis.tables.values())}
    own |= {reader.__module__ for reader in result_tables.READERS.values()}
    assert "analysis.stationary_points" in own and "analysis.stationary_point_tables" in own
    registries = {"analysis.results_analyses", "analysis.result_tables"}
    offenders = sorted(f"{name} -> {', '.join(sorted(own & targets))}" for name, targets in import_graph().items()
                       if name not in own | registries and own & targets)
    assert offenders == []
