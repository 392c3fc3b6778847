"""`make gpu-check`: one short script for a CUDA machine.

1. The smoke grids on CUDA through the local executor (every group, mode, CNN variant and Experiment S
   network), on a profile that requests a GPU, so that the device policy is exercised for real.
2. TF32 really off: an Equi run in float32 at paper width stays at float32 round-off on the GPU
   (dist_E / ||A|| <= 1e-6), and the backend flags say so.
3. Benchmark rows 1, 1b, 3 and 4 on the GPU (bench/run.py --device cuda); row 4 decides whether seed
   packing earns its keep (per-seed throughput at k = 8 at least twice a single seed's).
4. Projected GPU-hours of paper-groups, paper-cnn and paper-stability on T4 and A40, scaling the fraction
   of float32 peak measured here by the cards' published float32 peaks.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import numerics  # noqa: E402
from pipeline.experiments import make_trial  # noqa: E402
from pipeline.grid import load_grid  # noqa: E402
from pipeline.plan import describe, measured_throughput  # noqa: E402
from pipeline.runner import CollectingSink, run_trial  # noqa: E402


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here")
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        profile = Path(folder) / "gpu-local.toml"
        profile.write_text('executor = "local"\ngpus = 1\nworkers = 2\n')
        for preset in ("smoke", "stability-smoke"):
            out = Path(folder) / preset
            subprocess.run([python, "-m", "pipeline", "submit", "--exp", preset, "--out", str(out), "--cluster",
                            str(profile), "--set", "device=cuda"], cwd=ROOT, check=True)
            subprocess.run([python, "-m", "pipeline", "aggregate", "--out", str(out)], cwd=ROOT, check=True)

    numerics.configure()
    assert numerics.tf32_disabled(), "TF32 is enabled after numerics.configure()"
    sink = CollectingSink()
    run_trial(make_trial("groups", {"group": "rot", "mode": "equi", "n_samples": "1000", "epochs": "3",
                                    "lr": "0.005", "device": "cuda", "dtype": "float32"}), sink)
    worst = max(float(r.dist_E.norm() / r.norm.norm()) for r in sink.records)
    print(f"TF32 off: Equi float32 on the GPU, max dist_E/||A|| = {worst:.2e} (must be <= 1e-6)")
    assert worst <= 1e-6

    subprocess.run([python, "bench/run.py", "--device", "cuda", "--rows", "1,1b,3,4"], cwd=ROOT, check=True)
    for preset in ("paper-groups", "paper-cnn", "paper-stability"):
        print(describe(load_grid(preset), measured_throughput()).split("\n\n")[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
