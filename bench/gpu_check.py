"""`make gpu-check`: one short script for a CUDA machine.

1. The smoke grids on CUDA through the local executor (every group, mode, CNN variant and Experiment S
   network), on a profile that requests a GPU, so that the device policy is exercised for real.
2. TF32 really off: an Equi run in float32 at paper width stays at float32 round-off on the GPU
   (dist_E / ||A|| <= 1e-6), and the backend flags say so.
3. tests/test_packing.py on the GPU (PIPELINE_TEST_DEVICE=cuda: packed seeds equal their unpacked runs
   under every packing policy) and tests/test_groups.py (its CUDA projection test runs only there).
4. Benchmark rows 1, 1b, 3 and 4 on the GPU (bench/run.py --device cuda); row 4 decides whether seed
   packing earns its keep (per-seed throughput at k = 8 at least twice a single seed's).
5. GPU-hours of paper-groups and paper-cnn measured, not estimated: one seed of every cell of each grid
   (for paper-cnn, a whole pack of seeds, as its launch section asks) trains a few epochs of each phase on
   this GPU, and the median epoch time of each phase scales to the preset's epochs and seeds. The
   analytic estimate of `pipeline plan` is printed beside it, with T4 and A40 projections.

Each section is timed and printed as it ends, so that a run cut short still says what it measured.
`--device cpu --quick` rehearses the whole script on a machine without a GPU (small sizes, no verdicts
about the GPU): run it before spending a GPU lease on it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import experiments, numerics  # noqa: E402
from pipeline.execute import execute  # noqa: E402
from pipeline.experiments import make_trial  # noqa: E402
from pipeline.files import open_h5, trial_paths  # noqa: E402
from pipeline.grid import load_grid  # noqa: E402
from pipeline.throughput import FP32_PEAK_TFLOPS, speed, trial_seconds  # noqa: E402
from pipeline.runner import CollectingSink, run_trial  # noqa: E402

# Epochs each phase trains while measuring: the first epoch of a phase carries start-up and the last row
# an extra evaluation, so three leave at least one clean epoch per phase.
MEASURED_EPOCHS = 3
# A full-batch epoch costs in proportion to its rows once they fill the device, so a cell whose epoch has
# more rows than this (Aug over a large exact orbit) is measured on fewer samples and scaled up.
MAX_MEASURED_ROWS = 250_000
# Published float32 peaks (TFLOP/s) of the cards measured here, to scale their hours to the clusters' cards;
# small batches do not scale with peak, so the scaled figures are a lower bound on the hours there.
MEASURED_CARD_PEAKS = {"H100": 67.0, "H200": 67.0}
PHASE_EPOCHS = {"groups": {0: "epochs"}, "cnn": {1: "phase1_epochs", 2: "phase2_epochs"}}


@contextlib.contextmanager
def section(title: str, failed: list[str]):
    """A section that fails says why and lets the next one run: a lease is too short to rerun everything."""
    print(f"\n== {title}", flush=True)
    started = time.perf_counter()
    try:
        yield
    except Exception as error:  # noqa: BLE001 - reported, and the exit status says it failed
        failed.append(title)
        print(f"FAILED: {title}: {type(error).__name__}: {error}", flush=True)
    finally:
        print(f"== {title}: {time.perf_counter() - started:.0f} s", flush=True)


def smoke_grids(python: str, device: str, folder: Path) -> None:
    """The smoke grids on a profile that requests a GPU (device=cuda), then the plain local profile with
    device=auto, whose workers must find the GPU by themselves."""
    profile = folder / "gpu-local.toml"
    profile.write_text(f'executor = "local"\ngpus = {1 if device == "cuda" else 0}\nworkers = 2\n')
    for preset, cluster, chosen in (("smoke", str(profile), device), ("stability-smoke", str(profile), device),
                                    ("smoke", "local", "auto")):
        out = folder / f"{preset}-{chosen}"
        subprocess.run([python, "-m", "pipeline", "submit", "--exp", preset, "--out", str(out), "--cluster",
                        cluster, "--set", f"device={chosen}", "--workers", "2"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        status = subprocess.run([python, "-m", "pipeline", "status", "--out", str(out)], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        subprocess.run([python, "-m", "pipeline", "aggregate", "--out", str(out)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        report = (out / "aggregate" / "report.md").read_text()
        devices = [line.lstrip("- ") for line in report.splitlines() if line.lstrip("- ").startswith("Devices:")]
        print(f"{preset} on profile {Path(cluster).stem}, device={chosen}: {status.strip().splitlines()[-1]}; "
              f"{devices[0] if devices else 'no device line in the report'}", flush=True)
        if device == "cuda":
            assert devices and "cuda" in devices[0] and "cpu" not in devices[0], f"{preset} did not train on CUDA"


def tf32_stays_off(device: str, quick: bool) -> None:
    numerics.configure()
    assert numerics.tf32_disabled(), "TF32 is enabled after numerics.configure()"
    sink = CollectingSink()
    with contextlib.redirect_stdout(io.StringIO()):
        run_trial(make_trial("groups", {"group": "rot", "mode": "equi", "n_samples": "200" if quick else "1000",
                                        "channels": "8" if quick else "32", "epochs": "3", "lr": "0.005",
                                        "device": device, "dtype": "float32", "data_source": "vendored"}), sink)
    worst = max(float(r.dist_E.norm() / r.norm.norm()) for r in sink.records)
    print(f"TF32 off: Equi float32 on {device}, max dist_E/||A|| = {worst:.2e} (must be <= 1e-6)")
    assert worst <= 1e-6, f"an Equi float32 run left E by {worst:.2e} of its norm"


def _phase_epoch_seconds(folder: Path, trial_id: str) -> dict[int, float]:
    """Median seconds per epoch of each phase, leaving out each phase's first row (start-up, the phase
    transfer) and the trial's last row (an extra evaluation)."""
    with open_h5(trial_paths(folder, trial_id)[0]) as f:
        seconds = f["metrics/seconds"][()]
        phases = f["metrics/phase"][()] if "metrics/phase" in f else [0] * len(seconds)
    rows = defaultdict(list)
    for row in range(1, len(seconds) - 1):
        rows[int(phases[row])].append(float(seconds[row]))
    return {phase: statistics.median(values[1:] if len(values) > 1 else values) for phase, values in rows.items()}


def measured_hours(preset: str, device: str, quick: bool, folder: Path) -> None:
    full = load_grid(preset)
    experiment = full.trials()[0].experiment
    truncated = {key: str(MEASURED_EPOCHS) for key in PHASE_EPOCHS[experiment].values()}
    truncated.update(device=device, weights_every="0")
    if quick:
        truncated.update(n_samples="200", **({"channels": "8"} if experiment == "groups" else {"cnn_channels": "8,8,8"}))
    grid = load_grid(preset, truncated)
    by_id = {t.trial_id: t for t in full.trials()}
    pack = grid.launch.get("trials_per_task", 1) if grid.launch.get("pack_seeds") else 1
    cells = defaultdict(list)  # trials that differ in their seed alone
    for trial in grid.trials():
        cells[repr({k: v for k, v in dataclasses.asdict(trial.settings).items() if k != "seed"})].append(trial)
    total_seconds, out = 0.0, folder / preset
    for group in cells.values():
        first = group[0]
        rows = experiments.of(first).rows_per_sample(first.settings, max(PHASE_EPOCHS[experiment]))
        samples = first.settings.n_samples
        max_rows = MAX_MEASURED_ROWS // 10 if quick else MAX_MEASURED_ROWS
        if rows * samples > max_rows:
            samples = max(1, max_rows // rows)
            group = [dataclasses.replace(t, settings=dataclasses.replace(t.settings, n_samples=samples)) for t in group]
        measured = group[:pack]
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            execute(out, measured, checkpoint_every_s=60.0)
        wall = time.perf_counter() - started
        per_epoch = _phase_epoch_seconds(out, measured[0].trial_id)
        scale = first.settings.n_samples / samples
        # A packed record's seconds are the wall time of the whole pack: one pack trains len(measured) seeds.
        per_seed = scale * sum(per_epoch[phase] * getattr(by_id[first.trial_id].settings, key)
                               for phase, key in PHASE_EPOCHS[experiment].items() if phase in per_epoch) / len(measured)
        total_seconds += per_seed * len(group)
        epochs = ", ".join(f"phase {p}: {s:.3f} s/epoch" if p else f"{s:.3f} s/epoch" for p, s in sorted(per_epoch.items()))
        subset = f" on {samples} of {first.settings.n_samples} samples, scaled" if scale != 1 else ""
        print(f"  {first.trial_id} x{len(measured)} trained together: {epochs}{subset}; {per_seed / 60:.2f} min per "
              f"seed at full length, x{len(group)} seeds (measured in {wall:.0f} s)", flush=True)
    name = _device_name(device)
    print(f"{preset}: {len(grid.trials())} trials, measured {total_seconds / 3600:.2f} device-hours on {name} "
          "(one task per device; start-up not counted)")
    peak = next((p for card, p in MEASURED_CARD_PEAKS.items() if card in name), None)
    if peak is not None:
        print("  scaled by float32 peak (a lower bound there): " + ", ".join(
            f"{card} {total_seconds / 3600 * peak / FP32_PEAK_TFLOPS[card][0]:.1f} GPU-hours" for card in ("T4", "A40")))
    packed = pack > 1
    estimated = sum(trial_seconds(t.settings, speed("H200", t.experiment, packed).rate) for t in full.trials())
    print(f"  estimated from pipeline/throughput.py's table for an H200: {estimated / 3600:.2f} GPU-hours")


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="small sizes: a rehearsal of the script itself")
    parser.add_argument("--sections", default="smoke,tf32,tests,bench,hours", help="which sections to run")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (rehearse with --device cpu --quick)")
        return 2
    wanted = set(args.sections.split(","))
    failed = []
    print(f"device: {_device_name(args.device)}, torch {torch.__version__} (CUDA {torch.version.cuda})", flush=True)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        if "smoke" in wanted:
            with section("smoke grids through the local executor on a GPU profile", failed):
                smoke_grids(sys.executable, args.device, folder)
        if "tf32" in wanted:
            with section("TF32 off", failed):
                tf32_stays_off(args.device, args.quick)
        if "tests" in wanted:
            with section("the tests that mean most on CUDA (packing's per-input policy, projections)", failed):
                subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_packing.py",
                                "tests/test_groups.py"], cwd=ROOT, check=True,
                               env={**os.environ, "PIPELINE_TEST_DEVICE": args.device})
        if "bench" in wanted:
            with section("benchmark rows 1, 1b, 3, 4", failed):
                subprocess.run([sys.executable, "bench/run.py", "--device", args.device, "--rows", "1,1b,3,4",
                                *(["--quick"] if args.quick else [])], cwd=ROOT, check=True)
        if "hours" in wanted:
            for preset in ("paper-groups", "paper-cnn"):
                with section(f"measured GPU-hours of {preset}", failed):
                    measured_hours(preset, args.device, args.quick, folder)
    print(f"\ngpu-check: {'failed: ' + '; '.join(failed) if failed else 'every section passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
