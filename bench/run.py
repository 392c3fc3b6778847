"""`make bench`: the speed and memory of trials, every row measured beside its reference in one run.

Rows
1. roofline      a full-batch Nom epoch of the paper-width Experiment G network (C=32, n=14, 2,000
                 samples) in GFLOP/s, against a 4096 x 4096 float32 matmul measured in the same run.
                 FLOPs are counted analytically (pipeline.cost): 2 per multiply-add of the three big
                 layers and the head; a training row costs 3 forwards, the epoch's evaluation 1.
2. mode overhead Equi and Aug-orbit epochs of every group (C=8, 500 samples) against what Nom costs for
                 the same number of passes: a Nom epoch (step, evaluation, measurement) plus (passes - 1)
                 Nom steps. 1.00 means projections and transforms cost nothing.
3. exact aug     rot: an Aug-orbit epoch (4 passes, exact gradient) against an Aug-sampled epoch with
                 the paper's 25 passes.
4. cnn packing   images/s per seed of the Experiment C CNN, k seeds trained together vs one (bench/cnn_packing.py).
5. memory        peak resident memory of one paper-width Experiment G trial on all 10,000 samples
                 (one epoch in a subprocess: every allocation of a trial happens in its first epoch).

Writes results/bench/bench.csv (and a timestamped copy); `pipeline plan` reads the achieved throughput.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import numerics  # noqa: E402
from timing import best_of  # noqa: E402
from pipeline.config import make_trial  # noqa: E402
from pipeline.cost import epoch_flops, passes_per_epoch  # noqa: E402
from pipeline.runner import build_model, load_trial_data  # noqa: E402
from pipeline.training import Augmentation, evaluate, full_batch_epoch, seeded_generator  # noqa: E402

RESULTS = ROOT / "results" / "bench"


def matmul_gflops(device: torch.device, size: int = 4096) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = best_of(lambda: a @ b, 5, device)
    return 2 * size**3 / seconds / 1e9


class EpochTimer:
    """Times the parts of one runner epoch: the step, the evaluation, the layer measurements."""

    def __init__(self, device, **settings):
        self.device = device
        self.trial = make_trial("groups", {"device": str(device), "data_source": "vendored", "lr": "1e-6",
                                           **{k: str(v) for k, v in settings.items()}})
        self.model = build_model(self.trial).to(device=device, dtype=torch.float32)
        self.data = load_trial_data(self.trial, device, torch.float32)
        self.initial = self.model.snapshot()
        self.augmentation = Augmentation.parse(self.trial.augment, self.trial.aug_batch)

    def step(self):
        full_batch_epoch(self.model, self.data, self.trial.mode, self.augmentation, self.trial.lr,
                         self.trial.loss, self.trial.chunk_size, seeded_generator(0, "bench"))

    def overhead(self):
        evaluate(self.model, self.data, self.trial.loss, self.trial.chunk_size)
        self.model.layer_measurements(self.initial)

    def epoch(self):
        self.step()
        self.overhead()

    def time(self, part: str, repeats: int) -> float:
        return best_of(getattr(self, part), repeats, self.device)


def roofline(device, samples: int) -> list[dict]:
    peak = matmul_gflops(device)
    timer = EpochTimer(device, group="rot", mode="nom", channels=32, n=14, n_samples=samples)
    seconds = timer.time("epoch", 2)
    achieved = epoch_flops(timer.trial) / seconds / 1e9
    return [{"row": "1 roofline", "case": f"Nom epoch C=32 n=14 {samples} samples", "value": round(achieved, 1),
             "unit": "GFLOP/s", "reference": round(peak, 1), "ratio": round(achieved / peak, 3), "target": ">= 0.70",
             "seconds": round(seconds, 3)}]


def mode_overhead(device, samples: int, groups) -> list[dict]:
    rows = []
    for group in groups:
        nom = EpochTimer(device, group=group, mode="nom", channels=8, n_samples=samples)
        # Epochs of 50-100 ms: many repeats, so that the best of them is not another process's time slice.
        # Whole epochs are compared with whole epochs: a sum of separately timed parts would be a sum of
        # minima, biased low against the mode it is compared with.
        step, nom_epoch = nom.time("step", 15), nom.time("epoch", 15)
        for mode in ("equi", "aug"):
            timer = EpochTimer(device, group=group, mode=mode, augment="orbit", channels=8, n_samples=samples)
            passes = passes_per_epoch(timer.trial)
            seconds = timer.time("epoch", 1 if passes > 50 else 15 if passes == 1 else 3)
            expected = nom_epoch + (passes - 1) * step
            rows.append({"row": "2 mode overhead", "case": f"{group} {mode}{'-orbit' if mode == 'aug' else ''} "
                         f"({passes} passes)", "value": round(seconds, 3), "unit": "s/epoch",
                         "reference": round(expected, 3), "ratio": round(seconds / expected, 3), "target": "<= 1.10",
                         "seconds": round(seconds, 3)})
    return rows


def exact_augmentation(device, samples: int) -> list[dict]:
    orbit = EpochTimer(device, group="rot", mode="aug", augment="orbit", channels=8, n_samples=samples)
    sampled = EpochTimer(device, group="rot", mode="aug", augment="sampled:25", channels=8, n_samples=samples)
    t_orbit, t_sampled = orbit.time("epoch", 3), sampled.time("epoch", 2)
    return [{"row": "3 exact aug", "case": "rot Aug-orbit (4 passes) vs Aug-sampled (25 passes)",
             "value": round(t_orbit, 3), "unit": "s/epoch", "reference": round(t_sampled, 3),
             "ratio": round(t_sampled / t_orbit, 2), "target": ">= 5 (times faster)", "seconds": round(t_orbit, 3)}]


def packing(device, quick: bool) -> list[dict]:
    import cnn_packing

    kwargs = {"k_values": (1, 4, 8)} if quick else {}
    rows = []
    for r in cnn_packing.rows(device=str(device), **kwargs):
        rows.append({"row": "4 cnn packing", "case": f"phase {r['phase']} k={r['k']}",
                     "value": round(r["images_per_s_per_seed"], 1), "unit": "images/s per seed",
                     "reference": round(r["images_per_s_per_seed"] / r["speedup_vs_unpacked"], 1),
                     "ratio": round(r["speedup_vs_unpacked"], 2), "target": ">= 2 at k=8" if r["k"] == 8 else "",
                     "seconds": ""})
    return rows


def peak_memory(device) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        argv = [sys.executable, "-m", "pipeline", "run-trial", "--exp", "paper-groups", "--index", "0", "--out",
                folder, "--set", "epochs=1", "--set", f"device={device}", "--set", "weights_every=0"]
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    return [{"row": "5 memory", "case": "paper-width Experiment G trial, 10,000 samples (Equi, 1 epoch)",
             "value": round(peak_gb, 2), "unit": "GB peak RSS", "reference": 3.0, "ratio": round(peak_gb / 3.0, 2),
             "target": "<= 1.00 (3 GB)", "seconds": round(seconds, 1)}]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", default="1,2,3,4,5", help="which rows to measure")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run of the benchmark itself)")
    args = parser.parse_args(argv)
    numerics.configure()
    device = numerics.resolve_device(args.device)
    wanted = set(args.rows.split(","))
    rows = []
    samples_g, samples_small = (500, 200) if args.quick else (2000, 500)
    groups = ("rot", "trans1d") if args.quick else ("rot", "trans", "trans1d", "rototrans")
    if "1" in wanted:
        rows += roofline(device, samples_g)
    if "2" in wanted:
        rows += mode_overhead(device, samples_small, groups)
    if "3" in wanted:
        rows += exact_augmentation(device, samples_small)
    if "4" in wanted:
        rows += packing(device, args.quick)
    if "5" in wanted:
        rows += peak_memory(device)
    for row in rows:
        row["device"] = _device_name(device)
        row["threads"] = torch.get_num_threads()
    print(format_table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    for path in (RESULTS / "bench.csv", RESULTS / f"bench-{stamp}.csv"):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"\nwritten: {RESULTS / 'bench.csv'}")
    return 0


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def format_table(rows: list[dict]) -> str:
    columns = ("row", "case", "value", "unit", "reference", "ratio", "target")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
