"""`make gpu-check`: one short script for a CUDA machine.

1. The smoke grids on CUDA through the local executor (every group, mode, CNN variant and Experiment S
   network), on a profile that requests a GPU, so that the device policy is exercised for real.
2. TF32 really off: an Equi run in float32 at paper width stays at float32 round-off on the GPU
   (dist_E / ||A|| <= 1e-6), and the backend flags say so.
3. tests/core/test_packing.py on the GPU (PIPELINE_TEST_DEVICE=cuda: packed seeds equal their unpacked runs
   under every packing policy) and tests/core/test_groups.py (its CUDA projection test runs only there).
4. Benchmark rows 1, 1b, 3 and 4 on the GPU (bench/run.py --device cuda); row 4 decides whether seed
   packing earns its keep (per-seed throughput at k = 8 at least twice a single seed's).
5. paper-lite (jobs/paper-lite.toml): Experiment G at the paper's sizes, every group, on this GPU; seed 0 of
   every cell first, then the second seed while the time budget lasts; its aggregate (tables, figures,
   report, not the trial files) and a PROVENANCE.md go to --paper-lite-out (docs/results/paper-lite/ on
   a GPU), to be committed: the paper-scale picture without a cluster.
6. GPU-hours of paper-groups and paper-cnn measured, not estimated: one seed of every cell of each grid
   (for paper-cnn, a whole pack of seeds, as its launch section asks) trains a few epochs of each phase on
   this GPU, and the median epoch time of each phase scales to the preset's epochs and seeds. The
   analytic estimate of `pipeline plan` is printed beside it, with T4 and A40 projections.

Each section is timed and printed as it ends, so that a run cut short still says what it measured. The
whole script keeps to --deadline-minutes (a GPU is lent for 15 minutes in all, its start included): a
section starts only if its planned minutes (PLANNED_MIN) still fit, paper-lite takes what is left of its
share, and the measured rates go to results/bench/gpu_rates.csv (pipeline/launch/throughput.py reads them).
`--device cpu --quick` rehearses the whole script on a machine without a GPU (small sizes, no verdicts
about the GPU): run it before spending a GPU lease on it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import experiments  # noqa: E402
from pipeline.core import numerics  # noqa: E402
from pipeline.experiments import make_trial  # noqa: E402
from pipeline.folder import MANIFEST, TRIAL_SUFFIX, ResultsFolder  # noqa: E402
from pipeline.launch.grid import load_grid  # noqa: E402
from pipeline.launch.monitor import cancel, gather  # noqa: E402
from pipeline.launch.profiles import load_profile  # noqa: E402
from pipeline.launch.submission import plan_submission, submit  # noqa: E402
from pipeline.launch.throughput import FP32_PEAK_TFLOPS, GPU_RATES, fit_rate, speed, trial_seconds  # noqa: E402
from pipeline.run.execute import execute  # noqa: E402
from pipeline.run.runner import CollectingSink, run_trial  # noqa: E402
from pipeline.schema import ROW_PHASE, SECONDS, metric_path  # noqa: E402
from pipeline.trialfile.cost import trial_flops  # noqa: E402
from pipeline.trialfile.files import open_h5, trial_paths  # noqa: E402
from pipeline.trialfile.manifest import write_manifest  # noqa: E402

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
def section(title: str, failed: list[str]) -> Iterator[None]:
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
        report = ResultsFolder(out).report.read_text()
        devices = [line.lstrip("- ") for line in report.splitlines() if line.lstrip("- ").startswith("Devices:")]
        print(f"{preset} on profile {Path(cluster).stem}, device={chosen}: {status.strip().splitlines()[-1]}; "
              f"{devices[0] if devices else 'no device line in the report'}", flush=True)
        if device == "cuda":
            assert devices and "cuda" in devices[0] and "cpu" not in devices[0], f"{preset} did not train on CUDA"


def writer_gives_the_same_files(python: str, device: str, folder: Path) -> None:
    """The smoke grid on this device with rows written from a background thread and directly: every
    dataset of every file the same, byte for byte, but the wall times (pipeline.run.background)."""
    sys.path.insert(0, str(ROOT / "tests"))
    # deferred: the tests' helpers, importable only once tests/ is on the path (mypy reads bench/ without it)
    from helpers import read_arrays  # type: ignore[import-not-found]

    outs = {}
    for writer in ("1", "0"):
        outs[writer] = folder / f"smoke-writer-{writer}"
        subprocess.run([python, "-m", "pipeline", "submit", "--exp", "smoke", "--out", str(outs[writer]), "--workers",
                        "2", "--set", f"device={device}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PIPELINE_BACKGROUND_WRITER": writer})
    trials = {writer: ResultsFolder(out).trials for writer, out in outs.items()}
    files = sorted(p.name for p in trials["1"].glob(f"*{TRIAL_SUFFIX}"))
    different = []
    for name in files:
        a, b = read_arrays(trials["1"] / name), read_arrays(trials["0"] / name)
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key), b.get(key)
            same = x is not None and y is not None and x.shape == y.shape and x.dtype == y.dtype and (
                x.tolist() == y.tolist() if x.dtype.kind == "O" else x.tobytes() == y.tobytes())
            if not same:
                different.append(f"{name}:{key}")
    print(f"background writer on {device}: {len(files)} smoke trial files, {len(different)} dataset(s) differing "
          f"from direct writes (metrics/seconds excluded){': ' + ', '.join(different[:5]) if different else ''}",
          flush=True)
    assert files and not different, "the background writer changed the files"


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
        seconds = f[metric_path(SECONDS)][()]
        phases = f[metric_path(ROW_PHASE)][()] if metric_path(ROW_PHASE) in f else [0] * len(seconds)
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
    total_seconds, out, points = 0.0, folder / preset, []
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
        full_settings = by_id[first.trial_id].settings
        points.append((float(trial_flops(full_settings)), experiments.of(full_settings).total_epochs(full_settings),
                       per_seed))
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
    if device == "cuda" and not quick:
        write_gpu_rates(name, experiment, packed, points)
    estimated = sum(trial_seconds(t.settings, speed("H200", t.experiment, packed).rate) for t in full.trials())
    print(f"  estimated from pipeline/launch/throughput.py's table for an H200: {estimated / 3600:.2f} GPU-hours")


# Minutes each section is planned to take on an H200 (the full run; --quick is a few minutes in all).
# The default (`make gpu-check`) fits one 15-minute lease, start-up included: row 1b with and without the
# background writer, the smoke grids (and the writer's files compared with direct writes), then paper-lite
# with every minute left. The other sections fit a second lease: SECTIONS=tests,tf32,bench,hours.
PLANNED_MIN = {"1b": 1.0, "smoke": 2.5, "paper-lite": 3.0, "tests": 0.7, "tf32": 0.3, "bench": 2.0, "hours": 3.0}
DEFAULT_SECTIONS = "1b,smoke,paper-lite"
PAPER_LITE_OUT = ROOT / "docs" / "results" / "paper-lite"


def paper_lite_stages(trials: list) -> list[list[int]]:
    """The order paper-lite trains in, so that a budget that runs out still leaves verdicts: every Equi, Nom
    and exact-orbit cell with both seeds first (cheap), then the sampled-Aug cells one group at a time."""
    cheap = [t.index for t in trials if not (t.settings.mode == "aug" and t.settings.augment != "orbit")]
    stages = [cheap]
    for group in dict.fromkeys(t.settings.group for t in trials):
        stages.append([t.index for t in trials if t.index not in cheap and t.settings.group == group])
    return [stage for stage in stages if stage]


def run_paper_lite(python: str, device: str, quick: bool, folder: Path, budget_s: float, destination: Path) -> None:
    """paper-lite on this device through the local executor, stage by stage (``paper_lite_stages``) while
    the budget lasts (what is still running at its end is cancelled: the report lists what is missing);
    then its aggregate, copied to ``destination`` with a PROVENANCE.md."""
    started = time.monotonic()
    deadline = started + budget_s
    out = folder / "paper-lite"
    shrink = {"n_samples": "200", "channels": "4", "epochs": "6"} if quick else {}
    grid = load_grid("paper-lite", {**shrink, "device": device})
    trials = write_manifest(out, grid, grid.trials())  # the whole grid's ids, whatever runs
    profile = load_profile("local")
    complete_all = True
    for number, stage in enumerate(paper_lite_stages(trials), 1):
        if time.monotonic() > deadline - 20:
            complete_all = False
            print(f"paper-lite: no time left for stage {number} ({len(stage)} trials)", flush=True)
            break
        plan = plan_submission(out, stage, profile, None, 3)
        with contextlib.redirect_stdout(io.StringIO()):
            submit(out, plan, log=lambda line: None)
        while time.monotonic() < deadline and any(s.in_queue for s in gather(out) if s.index in stage):
            time.sleep(3)
        states = [s for s in gather(out) if s.index in stage]
        done = sum(s.state == "complete" for s in states)
        print(f"paper-lite stage {number}: {done}/{len(stage)} trials complete "
              f"({', '.join(dict.fromkeys(s.trial_id.rsplit('-s', 1)[0] for s in states))}) at "
              f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
        if done < len(stage):
            complete_all = False
            if any(s.in_queue for s in states):
                with contextlib.redirect_stdout(io.StringIO()):
                    cancel(out, log=lambda line: None)
                time.sleep(5)  # the workers save their last epoch and stop
                print("paper-lite: the budget ran out; the trials not complete were cancelled", flush=True)
            break
    status = subprocess.run([python, "-m", "pipeline", "status", "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True).stdout
    print("paper-lite: " + status.strip().splitlines()[-1], flush=True)
    aggregated = subprocess.run([python, "-m", "pipeline", "aggregate", "--out", str(out)], cwd=ROOT,
                                capture_output=True, text=True)
    print(aggregated.stdout.strip(), flush=True)
    if aggregated.returncode != 0:
        raise RuntimeError(f"aggregate failed: {aggregated.stderr.strip()[-300:]}")
    destination.mkdir(parents=True, exist_ok=True)
    for old in destination.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    shutil.copytree(ResultsFolder(out).aggregate, destination, dirs_exist_ok=True)
    shutil.copy(ResultsFolder(out).manifest, destination / MANIFEST)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    gpu = _device_name(device)
    shrunk = " shrunk for a CPU rehearsal: " + ", ".join(f"{k}={v}" for k, v in shrink.items()) if quick else ""
    completeness = ("every trial complete" if complete_all else "the Equi, Nom and exact-orbit cells first, then sampled "
                    "Aug group by group, until the time budget ran out: the report lists what is missing")
    lines = [
        "# paper-lite: provenance of this folder",
        "",
        f"- Made by `python bench/gpu_check.py{' --device cpu --quick' if quick else ''}` (`make gpu-check`), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, on {gpu}; commit `{commit or 'unknown'}`.",
        f"- torch {torch.__version__}, CUDA {torch.version.cuda}; Python {sys.version.split()[0]}.",
        f"- Grid: `jobs/paper-lite.toml`{shrunk}; {completeness}.",
        f"- Time budget {budget_s / 60:.1f} min; took {(time.monotonic() - started) / 60:.1f} min.",
        "- What each trial ran with (driver, packages, data checksums, diff) is in `report.md` (Provenance) and "
        "`provenance/`; the trial files themselves are not kept here.",
        "",
        "```",
        status.strip(),
        "```",
        "",
    ]
    (destination / "PROVENANCE.md").write_text("\n".join(lines))
    print(f"paper-lite aggregate written to {destination}", flush=True)


def write_gpu_rates(gpu: str, experiment: str, packed: bool, points: list[tuple[float, int, float]]) -> None:
    """This GPU's measured rate, for pipeline/launch/throughput.py (results/bench/gpu_rates.csv)."""
    gflops, overhead = fit_rate(points)
    rows = []
    if GPU_RATES.exists():
        with open(GPU_RATES) as handle:
            rows = [r for r in csv.DictReader(handle) if not (r.get("gpu") == gpu and r.get("experiment") == experiment
                                                              and r.get("packed") == str(int(packed)))]
    rows.append({"gpu": gpu, "experiment": experiment, "packed": str(int(packed)), "gflops": f"{gflops:.1f}",
                 "epoch_overhead_s": f"{overhead:.4f}", "measured_at": time.strftime("%Y-%m-%d", time.gmtime())})
    GPU_RATES.parent.mkdir(parents=True, exist_ok=True)
    with open(GPU_RATES, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"  rate for pipeline/launch/throughput.py: {gflops:,.0f} GFLOP/s + {overhead:.3f} s/epoch ({GPU_RATES})")


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


class _Run:
    """One run of the script: the sections wanted, in the order they run (``SECTION_ORDER``), each started only if
    its planned minutes still fit before the deadline."""

    def __init__(self, args: argparse.Namespace, wanted: list[str], folder: Path):
        self.args, self.wanted, self.folder = args, wanted, folder
        self.deadline = time.monotonic() + 60 * args.deadline_minutes
        self.failed: list[str] = []
        self.skipped: list[str] = []
        self.quick_flag = ["--quick"] if args.quick else []

    def fits(self, name: str) -> bool:
        left = (self.deadline - time.monotonic()) / 60
        needs = PLANNED_MIN[name] * (0.3 if self.args.quick else 1.0)
        if left < needs:
            self.skipped.append(name)
            print(f"\n== {name}: skipped, {left:.1f} min left of the deadline and it is planned at {needs:.1f}", flush=True)
            return False
        return True

    def run(self) -> None:
        for name in SECTION_ORDER:
            if name not in self.wanted:
                continue
            if name == "hours":  # one section per preset, each only if it still fits
                self.hours()
            elif self.fits(name):
                getattr(self, SECTION_METHODS[name])()

    def row_1b(self) -> None:
        with section("benchmark row 1b: a paper-size trial epoch, rows written in the background and directly",
                     self.failed):
            subprocess.run([sys.executable, "bench/run.py", "--device", self.args.device, "--rows", "1b",
                            *self.quick_flag], cwd=ROOT, check=True)

    def smoke(self) -> None:
        with section("smoke grids through the local executor on a GPU profile", self.failed):
            smoke_grids(sys.executable, self.args.device, self.folder)
        with section("the background writer's files against direct writes", self.failed):
            writer_gives_the_same_files(sys.executable, self.args.device, self.folder)

    def tf32(self) -> None:
        with section("TF32 off", self.failed):
            tf32_stays_off(self.args.device, self.args.quick)

    def tests(self) -> None:
        with section("the tests that mean most on CUDA (packing's per-input policy, projections)", self.failed):
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_packing.py",
                            "tests/core/test_groups.py"], cwd=ROOT, check=True,
                           env={**os.environ, "PIPELINE_TEST_DEVICE": self.args.device})

    def bench(self) -> None:
        with section("benchmark rows 1, 1b (background and direct writes), 3, 4", self.failed):
            subprocess.run([sys.executable, "bench/run.py", "--device", self.args.device, "--rows", "1,1b,3,4",
                            *self.quick_flag], cwd=ROOT, check=True)

    def paper_lite(self) -> None:
        wanted, quick = self.wanted, self.args.quick
        later = sum(PLANNED_MIN[n] for n in wanted[wanted.index("paper-lite") + 1:]) * (0.3 if quick else 1.0)
        budget = max(60.0, self.deadline - time.monotonic() - 60 * later - 60)  # leave the later sections theirs
        destination = self.args.paper_lite_out or (self.folder / "paper-lite-aggregate" if quick else PAPER_LITE_OUT)
        with section(f"paper-lite at the paper's sizes ({budget / 60:.1f} min budget)", self.failed):
            run_paper_lite(sys.executable, self.args.device, quick, self.folder, budget, destination)

    def hours(self) -> None:
        for preset in ("paper-groups", "paper-cnn"):
            if self.fits("hours"):
                with section(f"measured GPU-hours of {preset}", self.failed):
                    measured_hours(preset, self.args.device, self.args.quick, self.folder)


# The order the sections run in, and the method of _Run that runs each.
SECTION_ORDER = ("1b", "smoke", "tf32", "tests", "bench", "paper-lite", "hours")
SECTION_METHODS = {"1b": "row_1b", "smoke": "smoke", "tf32": "tf32", "tests": "tests", "bench": "bench",
                   "paper-lite": "paper_lite", "hours": "hours"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="small sizes: a rehearsal of the script itself")
    parser.add_argument("--sections", default=DEFAULT_SECTIONS,
                        help="which sections to run, in this order: " + ", ".join(PLANNED_MIN))
    parser.add_argument("--deadline-minutes", type=float, default=10.0,
                        help="the whole script's time; a section starts only if its planned minutes still fit")
    parser.add_argument("--paper-lite-out", type=Path, default=None,
                        help="where paper-lite's aggregate goes (default: docs/results/paper-lite on a GPU, "
                             "a temporary folder for --quick)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (rehearse with --device cpu --quick)")
        return 2
    wanted = [name for name in PLANNED_MIN if name in args.sections.split(",")]
    unknown = sorted(set(args.sections.split(",")) - set(PLANNED_MIN))
    if unknown:
        print(f"gpu-check: unknown section {unknown[0]!r}; accepted: {', '.join(PLANNED_MIN)}")
        return 2
    print(f"device: {_device_name(args.device)}, torch {torch.__version__} (CUDA {torch.version.cuda}); "
          f"sections {', '.join(wanted)} within {args.deadline_minutes:g} min", flush=True)
    with tempfile.TemporaryDirectory() as name:
        run = _Run(args, wanted, Path(name))
        run.run()
    failed, skipped = run.failed, run.skipped
    verdict = 'failed: ' + '; '.join(failed) if failed else 'every section run passed'
    print(f"\ngpu-check: {verdict}" + (f"; skipped for time: {', '.join(skipped)}" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
