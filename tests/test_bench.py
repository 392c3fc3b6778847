"""The benchmark and GPU-check scripts run: they are only used now and then (and the GPU check only where a
GPU is lent), so a refactoring that breaks them must fail here, not in a scarce GPU session."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def test_packing_rows_compare_packed_seeds_with_one_seed_in_both_phases():
    import cnn_packing

    rows = cnn_packing.rows(k_values=(1, 2), n_samples=100, channels="2,2,2", repeats=1, phase1_steps=1)
    assert [(r["phase"], r["k"]) for r in rows] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for row in rows:
        assert row["images_per_s_per_seed"] > 0 and row["unpacked_images_per_s"] > 0
        assert abs(row["speedup_vs_unpacked"] - row["images_per_s_per_seed"] / row["unpacked_images_per_s"]) < 1e-9


def test_gpu_check_says_plainly_that_there_is_no_gpu_and_profiling_runs(tmp_path):
    import torch

    if not torch.cuda.is_available():
        check = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, capture_output=True, text=True)
        assert check.returncode == 2 and "no CUDA device here" in check.stdout
    profile = subprocess.run([sys.executable, "bench/profile_trial.py", "--epochs", "2", "--samples", "50",
                              "--top", "5"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert profile.returncode == 0, profile.stderr
    assert "Ordered by: internal time" in profile.stdout


def test_gpu_check_rehearses_on_the_cpu():
    check = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--sections", "tf32"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "TF32 off: Equi float32 on cpu" in check.stdout and "every section run passed" in check.stdout


def test_gpu_check_rehearses_paper_lite_on_the_cpu_and_writes_a_committable_aggregate(tmp_path):
    out = tmp_path / "paper-lite"
    check = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--quick", "--sections",
                            "paper-lite", "--paper-lite-out", str(out)], cwd=ROOT, capture_output=True, text=True,
                           timeout=1500)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    assert "every section run passed" in check.stdout
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "summary.md", "summary.csv", "trials.csv", "PROVENANCE.md", "manifest.json", "figures"} <= names
    assert not list(out.rglob("*.h5"))  # the aggregate, never the trial files
    report = (out / "report.md").read_text()
    assert "grid `paper-lite`" in report and "Aug (orbit) stays in E" in report
    provenance = (out / "PROVENANCE.md").read_text()
    assert "shrunk for a CPU rehearsal" in provenance and "every trial complete" in provenance

