"""Full provenance in every trial file and in the report: interpreter, torch/CUDA/driver, device model,
installed packages, checksums of the data read, the commit and the diff of a dirty tree."""

import hashlib
import json
import platform
import subprocess
from pathlib import Path

import pytest

from pipeline.launch.grid import load_grid
from pipeline.run.execute import execute
from pipeline.trialfile import provenance
from pipeline.trialfile.files import read_status
from pipeline.trialfile.manifest import write_manifest

ROOT = Path(__file__).resolve().parents[2]
VENDORED_SHA256 = {"t10k-images-idx3-ubyte.gz": "84163e9fdea1bfd43d10838e8e5dbf8ac19ef9b8bcd0d8e4d0d2383ef60f7a45",
                   "t10k-labels-idx1-ubyte.gz": "1713132980b419d3dd12ed1a08773601062ab806966cc2d42cb001ce3d1a3842"}


@pytest.fixture(scope="module")
def smoke_trial(tmp_path_factory):
    out = tmp_path_factory.mktemp("provenance")
    grid = load_grid("smoke", {"groups": "rot", "modes": "nom", "cnn.seeds": "1", "configs": "cross"})
    trials = write_manifest(out, grid, grid.trials())
    execute(out, [trials[0]])
    execute(out, [trials[1]])
    return out, trials


def test_a_trial_file_records_what_it_ran_with(smoke_trial):
    import torch

    out, trials = smoke_trial
    attrs = read_status(out / "trials" / f"{trials[0].trial_id}.h5")
    assert attrs["python_version"] == f"{platform.python_version()} ({platform.python_implementation()})"
    assert attrs["torch_version"] == torch.__version__ and attrs["cuda_version"] == (torch.version.cuda or "")
    assert attrs["device_model"] and attrs["device_model"] == provenance.cpu_model()
    assert "gpu_driver_version" in attrs
    installed = dict(line.split("==", 1) for line in attrs["packages"].splitlines())
    assert installed["torch"] == torch.__version__.split("+")[0] or installed["torch"] == torch.__version__
    assert installed["h5py"] == __import__("h5py").__version__ and "submitit" in installed
    # the data actually read: the vendored digits, whose checksums data/mnist/README.md publishes
    assert json.loads(attrs["data_files"]) == VENDORED_SHA256
    readme = (ROOT / "data" / "mnist" / "README.md").read_text()
    assert all(digest in readme for digest in VENDORED_SHA256.values())
    sha = attrs["git_commit"].removesuffix("-dirty")
    assert len(sha) == 40 and subprocess.run(["git", "cat-file", "-e", f"{sha}^{{commit}}"], cwd=ROOT).returncode == 0
    if attrs["git_commit"].endswith("-dirty"):
        assert attrs["git_diff_sha256"] and attrs["git_diff"].startswith("diff --git")
    else:
        assert attrs["git_diff_sha256"] == "" and attrs["git_diff"] == ""


def test_the_diff_of_a_dirty_tree_is_recorded_with_its_hash(tmp_path, monkeypatch):
    repository = tmp_path / "repo"
    repository.mkdir()
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repository, check=True)
    (repository / "code.py").write_text("rate = 1\n")
    subprocess.run([*git, "add", "code.py"], cwd=repository, check=True)
    subprocess.run([*git, "commit", "-qm", "first"], cwd=repository, check=True)
    monkeypatch.setattr(provenance, "REPOSITORY", repository)
    provenance.git_diff.cache_clear()
    assert provenance.git_diff() == ("", "")  # clean
    (repository / "code.py").write_text("rate = 2\n")
    provenance.git_diff.cache_clear()
    digest, text = provenance.git_diff()
    raw = subprocess.run(["git", "diff", "HEAD", "--no-color", "--no-ext-diff"], cwd=repository,
                         capture_output=True).stdout
    assert digest == hashlib.sha256(raw).hexdigest() and "-rate = 1" in text and "+rate = 2" in text
    provenance.git_diff.cache_clear()


def test_provenance_is_computed_once_per_process(monkeypatch):
    provenance.run_attrs("cpu")  # warm the caches
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"provenance ran {a[0]} again"))
    monkeypatch.setattr(provenance.importlib.metadata, "distributions",
                        lambda: pytest.fail("the package list was read again"))
    attrs = provenance.run_attrs("cpu", [ROOT / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"])
    assert attrs["packages"] and json.loads(attrs["data_files"]) == {
        "t10k-labels-idx1-ubyte.gz": VENDORED_SHA256["t10k-labels-idx1-ubyte.gz"]}


def test_the_report_says_what_the_trials_ran_with(smoke_trial):
    from analysis import aggregate

    out, _ = smoke_trial
    result = aggregate(out, log=lambda line: None, figures=False)
    report = result.report.read_text()
    section = report.split("## Provenance", 1)[1]
    assert f"- Python: `{platform.python_version()} ({platform.python_implementation()})` (2)" in section
    for name, digest in VENDORED_SHA256.items():
        assert f"`{name} sha256 {digest}` (2)" in section
    assert "[packages-1.txt](provenance/packages-1.txt)" in section
    packages = (out / "aggregate" / "provenance" / "packages-1.txt").read_text()
    assert "torch==" in packages and "2 trial(s)" in packages
    diffs = list((out / "aggregate" / "provenance").glob("diff-*.patch"))
    assert ("Uncommitted changes: none" in section) == (not diffs)
