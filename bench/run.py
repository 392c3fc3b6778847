"""`make bench`: the speed and memory of trials, every row measured beside its reference in one run.

Rows
1. roofline      a full-batch Nom epoch of the paper-width Experiment G network (C=32, n=14, 2,000
                 samples) as the runner does it (gradient pass, step, dist_E) in GFLOP/s, against a
                 4096 x 4096 float32 matmul measured in the same run. FLOPs are counted analytically
                 (pipeline.trialfile.cost): 2 per multiply-add of the three big layers and the head; a training row
                 costs 3 forwards (Nom takes its loss from the gradient pass: no evaluation forward).
1b. trial epoch  a whole Nom epoch at paper size (C=32, n=14, 10,000 samples, float32) as a trial runs it
                 into its HDF5 file (gradient pass, step, dist_E, the file's append, the checkpoint),
                 against the gradient step alone (target <= 1.15).
2. mode overhead Equi and Aug-orbit epochs of every group (C=8, 500 samples) against what Nom costs for
                 the same number of passes: a Nom epoch (step and measurement) plus (passes - 1) Nom
                 steps. 1.00 means projections and transforms cost nothing.
3. exact aug     rot: an Aug-orbit epoch (4 passes, exact gradient) against an Aug-sampled epoch with
                 the paper's 25 passes.
4. cnn packing   images/s per seed of the Experiment C CNN, k seeds trained together vs one (bench/cnn_packing.py).
5. memory        peak resident memory of one paper-width Experiment G trial on all 10,000 samples
                 (one epoch in a subprocess: every allocation of a trial happens in its first epoch).
6. durability    what making every write durable and checksummed costs, per epoch at the paper's size: the
                 commit of an epoch with a weight snapshot (C=32, n=14, float32: about 160 MB) and of a
                 metrics-only epoch, written through the trial's own store into a folder on this machine's
                 disk (pipeline.durable: four syncs a commit, the file's data among them; Fletcher-32 on
                 every chunk). Each against the same commit with fsync a no-op, against the policy before
                 (fsync a no-op and no checksums, as on ext4, xfs, Lustre and GPFS until now), and against
                 the epoch itself (row 1b's gradient step, measured here).

Writes results/bench/bench.csv (and a timestamped copy); `pipeline plan` reads the achieved throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cnn_packing  # noqa: E402
from pipeline import experiments  # noqa: E402
from pipeline.core import numerics  # noqa: E402
from pipeline.core.training import EpochHooks, SingleStepper, full_batch_epoch, seeded_generator  # noqa: E402
from pipeline.experiments import make_trial  # noqa: E402
from pipeline.run.background import VARIABLE  # noqa: E402
from pipeline.run.execute import execute  # noqa: E402
from pipeline.run.runner import EpochRecord  # noqa: E402
from pipeline.schema import LAYER_SERIES as LAYER_NAMES  # noqa: E402
from pipeline.schema import ROW_VALUES, SECONDS, metric_path  # noqa: E402
from pipeline.settings import Augmentation  # noqa: E402
from pipeline.trialfile.files import open_h5, trial_paths  # noqa: E402
from pipeline.trialfile.store import CheckpointClock, TrialFile  # noqa: E402
from timing import best_of  # noqa: E402

RESULTS = ROOT / "results" / "bench"


def matmul_gflops(device: torch.device, size: int = 4096) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = best_of(lambda: a @ b, 5, device)
    return 2 * size**3 / seconds / 1e9


GROUPS = experiments.get("groups")


class EpochTimer:
    """Times one Experiment G epoch the way the runner does it, and its gradient step alone."""

    def __init__(self, device: torch.device, **settings: object):
        self.device = device
        self.trial = GROUPS.make_settings({"device": str(device), "data_source": "vendored", "lr": "1e-6",
                                           **{k: str(v) for k, v in settings.items()}})
        self.model = GROUPS.build_model(self.trial).to(device=device, dtype=torch.float32)
        self.stepper = SingleStepper(self.model, [0])
        self.data = GROUPS.load_data(self.trial, device, torch.float32)
        self.initial = self.model.layer_snapshot()
        self.augmentation = Augmentation.parse(self.trial.augment, self.trial.aug_batch)

    def _epoch(self, hooks: EpochHooks) -> None:
        full_batch_epoch(self.stepper, self.data, self.trial.mode, self.augmentation, self.trial.lr,
                         self.trial.loss, self.trial.chunk_size, [seeded_generator(0, "bench")], hooks)

    def step(self) -> None:
        self._epoch(EpochHooks())

    def epoch(self) -> None:
        timer = self

        class Measuring(EpochHooks):
            def before_update(self, measured: list[tuple[float, float]] | None) -> None:
                if measured is None:  # rows that are not the plain data: the runner evaluates
                    timer.stepper.evaluate(timer.data, timer.trial.loss, timer.trial.chunk_size)
                timer.model.layer_measurements(timer.initial)

        self._epoch(Measuring())

    def time(self, part: str, repeats: int) -> float:
        return best_of(getattr(self, part), repeats, self.device)


def roofline(device: torch.device, samples: int) -> list[dict[str, Any]]:
    peak = matmul_gflops(device)
    timer = EpochTimer(device, group="rot", mode="nom", channels=32, n=14, n_samples=samples)
    seconds = timer.time("epoch", 2)
    achieved = GROUPS.epoch_flops(timer.trial) / seconds / 1e9
    return [{"row": "1 roofline", "case": f"Nom epoch C=32 n=14 {samples} samples", "value": round(achieved, 1),
             "unit": "GFLOP/s", "reference": round(peak, 1), "ratio": round(achieved / peak, 3), "target": ">= 0.70",
             "seconds": round(seconds, 3), "experiment": "groups", "gflops": round(achieved, 1)}]


def trial_epoch(device: torch.device, samples: int, epochs: int) -> list[dict[str, Any]]:
    """A Nom trial at paper width into its HDF5 file, against the gradient step alone, in one run."""
    settings = {"group": "rot", "mode": "nom", "channels": 32, "n": 14, "n_samples": samples, "epochs": epochs,
                "device": str(device), "data_source": "vendored", "lr": "1e-6", "weights_every": 0}
    step = EpochTimer(device, **{k: v for k, v in settings.items() if k not in ("epochs", "weights_every", "device",
                                                                            "data_source", "lr")})
    step_seconds = step.time("step", 2)
    trial = make_trial("groups", {k: str(v) for k, v in settings.items()})
    rows = []
    # On a GPU the rows are written from a background thread (pipeline.run.background); the direct writes are
    # measured beside them, so the gain is a ratio of one run.
    policies = [("", None), (" direct writes", "0")] if device.type == "cuda" else [("", None)]
    for label, forced in policies:
        previous = os.environ.pop(VARIABLE, None)
        if forced is not None:
            os.environ[VARIABLE] = forced
        try:
            with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
                execute(Path(folder), [trial], checkpoint_every_s=60.0)
                with open_h5(trial_paths(Path(folder), trial.trial_id)[0]) as f:
                    seconds = f[metric_path(SECONDS)][()]
        finally:
            os.environ.pop(VARIABLE, None)
            if previous is not None:
                os.environ[VARIABLE] = previous
        # Row e (1 <= e < epochs) is written after the gradient pass of epoch e + 1, so the time between two
        # rows is one whole epoch; row 0 adds start-up, the last row an evaluation of its own.
        epoch_seconds = float(statistics.median(seconds[2:-1]))
        target = ("<= 1.30" if device.type == "cuda" else "<= 1.15") if not label else ""
        rows.append({"row": "1b trial epoch" + label,
                     "case": f"Nom trial epoch C=32 n=14 {samples} samples (file, dist_E, checkpoint){label}",
                     "value": round(epoch_seconds, 3), "unit": "s/epoch", "reference": round(step_seconds, 3),
                     "ratio": round(epoch_seconds / step_seconds, 3), "target": target,
                     "seconds": round(epoch_seconds, 3)})
    return rows


def mode_overhead(device: torch.device, samples: int, groups: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        nom = EpochTimer(device, group=group, mode="nom", channels=8, n_samples=samples)
        # Epochs of 50-100 ms: many repeats, so that the best of them is not another process's time slice.
        # Whole epochs are compared with whole epochs: a sum of separately timed parts would be a sum of
        # minima, biased low against the mode it is compared with.
        step, nom_epoch = nom.time("step", 15), nom.time("epoch", 15)
        for mode in ("equi", "aug"):
            timer = EpochTimer(device, group=group, mode=mode, augment="orbit", channels=8, n_samples=samples)
            passes = GROUPS.rows_per_sample(timer.trial)
            seconds = timer.time("epoch", 1 if passes > 50 else 15 if passes == 1 else 3)
            expected = nom_epoch + (passes - 1) * step
            rows.append({"row": "2 mode overhead", "case": f"{group} {mode}{'-orbit' if mode == 'aug' else ''} "
                         f"({passes} passes)", "value": round(seconds, 3), "unit": "s/epoch",
                         "reference": round(expected, 3), "ratio": round(seconds / expected, 3), "target": "<= 1.10",
                         "seconds": round(seconds, 3)})
    return rows


def exact_augmentation(device: torch.device, samples: int) -> list[dict[str, Any]]:
    orbit = EpochTimer(device, group="rot", mode="aug", augment="orbit", channels=8, n_samples=samples)
    sampled = EpochTimer(device, group="rot", mode="aug", augment="sampled:25", channels=8, n_samples=samples)
    t_orbit, t_sampled = orbit.time("epoch", 3), sampled.time("epoch", 2)
    return [{"row": "3 exact aug", "case": "rot Aug-orbit (4 passes) vs Aug-sampled (25 passes)",
             "value": round(t_orbit, 3), "unit": "s/epoch", "reference": round(t_sampled, 3),
             "ratio": round(t_sampled / t_orbit, 2), "target": ">= 5 (times faster)", "seconds": round(t_orbit, 3)}]


def packing(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    k_values = (1, 4, 8) if quick else cnn_packing.K_VALUES
    cnn = experiments.get("cnn")
    cnn_forward_flops = cnn.forward_flops_per_sample(cnn.make_settings({}))
    rows = []
    for r in cnn_packing.rows(k_values, device=str(device)):
        # A training image costs 3 forwards (forward and backward) at the benchmark's paper width.
        gflops = r["images_per_s_per_seed"] * 3 * cnn_forward_flops / 1e9 if r["phase"] == 1 else None
        rows.append({"row": "4 cnn packing", "case": f"phase {r['phase']} k={r['k']}",
                     "value": round(r["images_per_s_per_seed"], 1), "unit": "images/s per seed",
                     "reference": round(r["images_per_s_per_seed"] / r["speedup_vs_unpacked"], 1),
                     "ratio": round(r["speedup_vs_unpacked"], 2), "target": ">= 2 at k=8" if r["k"] == 8 else "",
                     "seconds": "", "experiment": "cnn" if gflops is not None else "",
                     "gflops": round(gflops, 1) if gflops is not None else ""})
    return rows


def peak_memory(device: torch.device) -> list[dict[str, Any]]:
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


def durability(device: torch.device, epochs: int, quick: bool) -> list[dict[str, Any]]:
    """The commit of an epoch at paper size, durable and with fsync a no-op, in one run; against the epoch."""
    n_samples = 2000 if quick else 10000
    settings = {"group": "rot", "mode": "nom", "channels": 32, "n": 14, "n_samples": n_samples,
                "epochs": 2 * epochs + 2, "device": "cpu", "data_source": "vendored", "lr": "1e-6",
                "weights_every": 1}
    trial = make_trial("groups", {k: str(v) for k, v in settings.items()})
    model = GROUPS.build_model(trial.settings).to(dtype=numerics.resolve_dtype(trial.settings.dtype))
    data = GROUPS.load_data(trial.settings, torch.device("cpu"), torch.float32)
    layers = list(model.layer_weights())
    snapshot_mb = sum(t.numel() * t.element_size() for t in model.snapshot().values()) / 1e6
    epoch_seconds = EpochTimer(device, group="rot", mode="nom", channels=32, n=14,
                               n_samples=n_samples).time("step", 1)

    def commits(folder: Path, with_weights: bool) -> float:
        store = TrialFile(folder, trial, log=lambda line: None, clock=CheckpointClock(1e9))
        store.prepare()
        store.begin(trial, layers, torch.device("cpu"), data)
        wants = store._wants_weights
        store._wants_weights = lambda epoch: with_weights  # type: ignore[method-assign]
        values = {name: torch.full((len(layers),), 0.5, dtype=torch.float64) if name in LAYER_NAMES else 0.5
                  for name in ROW_VALUES}
        times = []
        for epoch in range(epochs):
            start = time.perf_counter()
            store.write_epoch(EpochRecord(epoch, 1, values), model, lambda: {})
            times.append(time.perf_counter() - start)
        store._wants_weights = wants  # type: ignore[method-assign]
        store.release()
        return statistics.median(times)

    measured = {}
    real_fsync, real_fdatasync, real_create = os.fsync, os.fdatasync, h5py.Group.create_dataset

    def unchecked(self: h5py.Group, *args: Any, **kwargs: Any) -> h5py.Dataset:
        kwargs.pop("fletcher32", None)
        return real_create(self, *args, **kwargs)

    RESULTS.mkdir(parents=True, exist_ok=True)
    for with_weights in (True, False):
        for policy in ("durable", "no fsync", "before"):
            if policy != "durable":
                os.fsync = os.fdatasync = lambda fd: None
            if policy == "before":
                h5py.Group.create_dataset = unchecked
            try:
                with tempfile.TemporaryDirectory(dir=RESULTS) as folder, contextlib.redirect_stdout(io.StringIO()):
                    measured[(with_weights, policy)] = commits(Path(folder), with_weights)
            finally:
                os.fsync, os.fdatasync, h5py.Group.create_dataset = real_fsync, real_fdatasync, real_create
    rows = []
    for with_weights, what in ((True, f"epoch with a {snapshot_mb:.0f} MB snapshot"), (False, "metrics-only epoch")):
        durable = measured[(with_weights, "durable")]
        for reference, words in ((measured[(with_weights, "no fsync")], "vs fsync a no-op"),
                                 (measured[(with_weights, "before")], "vs before (no fsync, no checksums)"),
                                 (epoch_seconds, "vs the epoch")):
            rows.append({"row": "6 durability", "case": f"commit, paper-size {what}, {words}",
                         "value": round(durable, 4), "unit": "s/commit", "reference": round(reference, 4),
                         "ratio": round(durable / reference, 5 if reference is epoch_seconds else 2), "target": "",
                         "seconds": round(durable, 4)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", default="1,1b,2,3,4,5,6", help="which rows to measure")
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
    if "1b" in wanted:
        rows += trial_epoch(device, 2000 if args.quick else 10000, 4 if args.quick else 5)
    if "2" in wanted:
        rows += mode_overhead(device, samples_small, groups)
    if "3" in wanted:
        rows += exact_augmentation(device, samples_small)
    if "4" in wanted:
        rows += packing(device, args.quick)
    if "5" in wanted:
        rows += peak_memory(device)
    if "6" in wanted:
        rows += durability(device, 3 if args.quick else 5, args.quick)
    for row in rows:
        row.setdefault("experiment", "")
        row.setdefault("gflops", "")
        row["device"] = _device_name(device)
        row["threads"] = torch.get_num_threads()
    print(format_table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    for path in (RESULTS / "bench.csv", RESULTS / f"bench-{stamp}.csv"):
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"\nwritten: {RESULTS / 'bench.csv'}")
    return 0


def _device_name(device: torch.device) -> str:
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
