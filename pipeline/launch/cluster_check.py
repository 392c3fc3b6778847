"""``make smoke``: does this cluster run the pipeline? The verdict on one screen, read from the trial files of
the ``cluster-smoke`` grid once it has run on a profile's nodes.

It says: how many trials completed (and why the others did not); where they trained (on a profile that
requests GPUs, CUDA in every trial, or the verdict fails); the GPU model, the NVIDIA driver and the CUDA level
it serves against torch's build (``pipeline.core.driver``); and the speed of one epoch of the probe (Experiment G
at the paper's width, C = 32, n = 14) against the estimate that ``plan`` and the time limits rest on
(``pipeline.launch.throughput``). An epoch slower than the estimate by more than the time limits' margin means the
time limits would be too short: ``make gpu-check`` measures this GPU's own rates.

Torch-free: it reads the files (``pipeline.trialfile.files``) and the manifest.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.driver import check as driver_check
from pipeline.core.driver import parse_version
from pipeline.experiments import Trial, of
from pipeline.launch import throughput
from pipeline.launch.layout import Costing
from pipeline.launch.profiles import Profile
from pipeline.schema import METRICS, SECONDS
from pipeline.trialfile.cost import trial_flops
from pipeline.trialfile.files import open_h5, read_status, trial_paths
from pipeline.trialfile.manifest import read_manifest, trials_of_manifest

GRID = "cluster-smoke"  # the preset ``make smoke`` runs


@dataclass
class Verdict:
    lines: list[str] = field(default_factory=list)
    ok: bool = True

    def fail(self, line: str) -> None:
        self.ok = False
        self.lines.append(line)


def probe_of(trials: list[Trial]) -> Trial | None:
    """The trial whose epochs are timed: the one of most compute per epoch (the grid's probe, whose epochs
    the arithmetic fills, so that they measure the device rather than the per-epoch bookkeeping)."""
    if not trials:
        return None
    return max(trials, key=lambda t: trial_flops(t.settings) / max(1, of(t).total_epochs(t.settings)))


def epoch_seconds(path: Path) -> float | None:
    """The median wall time of a trial's epochs after the first row (row 0 also builds the model and data)."""
    try:
        with open_h5(path) as f:
            seconds = np.asarray(f[METRICS][SECONDS][()], dtype=float)
    except (OSError, KeyError):
        return None
    later = seconds[1:][np.isfinite(seconds[1:])]
    return float(statistics.median(later)) if len(later) else None


def verdict(out_dir: Path, profile: Profile) -> Verdict:
    """What the smoke grid in ``out_dir`` says of ``profile``'s nodes."""
    out_dir = Path(out_dir)
    trials = trials_of_manifest(read_manifest(out_dir))
    found = Verdict()
    attrs = {t.trial_id: read_status(trial_paths(out_dir, t.trial_id)[0])
             if trial_paths(out_dir, t.trial_id)[0].exists() else {"status": "missing"} for t in trials}
    complete = [t for t in trials if attrs[t.trial_id]["status"] == "complete"]
    head = f"smoke on profile {profile.name}: {len(complete)} of {len(trials)} trials complete"
    if len(complete) == len(trials):
        found.lines.append(head)
    else:
        others = [t for t in trials if t not in complete]
        why = "; ".join(f"{t.trial_id}: {attrs[t.trial_id]['status']}"
                        + (f" ({attrs[t.trial_id].get('last_error')})" if attrs[t.trial_id].get("last_error") else "")
                        for t in others[:3])
        found.fail(f"{head}; not: {why}" + (f"; and {len(others) - 3} more" if len(others) > 3 else ""))
    ran = [attrs[t.trial_id] for t in trials if attrs[t.trial_id].get("device")]
    devices = sorted({str(a["device"]).split(" (")[0] for a in ran})
    on_cuda = [a for a in ran if str(a["device"]).startswith("cuda")]
    if profile.gpus > 0:
        if ran and len(on_cuda) == len(ran):
            found.lines.append(f"CUDA: seen, every trial trained on it ({', '.join(devices)})")
        else:
            found.fail(f"CUDA: not seen: {len(on_cuda)} of {len(ran)} trials trained on it ({', '.join(devices) or 'none'})")
    else:
        found.lines.append(f"device: {', '.join(devices) or 'none'} (profile {profile.name} requests no GPU)")
    if on_cuda:
        first = on_cuda[0]
        models = sorted({str(a.get("device_model", "?")) for a in on_cuda})
        found.lines.append(f"GPU: {', '.join(models)}")
        level = parse_version(str(first.get("driver_cuda_version", "")))
        check = driver_check(str(first.get("cuda_version", "")), level, str(first.get("gpu_driver_version", "")))
        found.lines.append(f"driver: {check.line} (torch {first.get('torch_version', '?')})")
    elif ran:
        first = ran[0]
        found.lines.append(f"host: {first.get('hostname', '?')}, {first.get('device_model', '?')}; torch "
                           f"{first.get('torch_version', '?')}, CUDA {first.get('cuda_version') or 'none'}")
    _speed(out_dir, trials, profile, found)
    found.lines.append("verdict: " + (f"profile {profile.name} runs the pipeline"
                                      + (" on its GPUs" if profile.gpus > 0 else "") if found.ok else
                                      f"profile {profile.name} does not run the pipeline yet (above)"))
    return found


def _speed(out_dir: Path, trials: list[Trial], profile: Profile, found: Verdict) -> None:
    probe = probe_of(trials)
    if probe is None:
        return
    measured = epoch_seconds(trial_paths(out_dir, probe.trial_id)[0])
    if measured is None:
        found.lines.append(f"speed: no epoch of {probe.trial_id} to time")
        return
    costing = Costing.of(profile)
    speed = costing.speed(probe.experiment, False)
    estimate = throughput.trial_seconds(probe.settings, speed.rate) / max(1, of(probe).total_epochs(probe.settings))
    ratio = measured / estimate if estimate > 0 else float("inf")
    words = (f"speed: one epoch of {probe.trial_id} took {measured:.3g} s; pipeline/launch/throughput.py estimates "
             f"{estimate:.3g} s on {costing.device} ({speed.basis}): {ratio:.2f}x the estimate")
    measure = "`make gpu-check` measures this GPU's" if profile.gpus > 0 else "`make bench` measures this machine's"
    if speed.basis == "assumed":
        found.lines.append(f"{words}; that estimate is assumed, not measured: {measure} own rates, which plan and "
                           "submit then use")
    elif ratio > speed.margin:
        found.fail(f"{words}, beyond the time limits' margin (x{speed.margin:g}): tasks may run out of time; "
                   f"{measure} own rates, which plan and submit then use")
    else:
        found.lines.append(f"{words}, within the time limits' margin (x{speed.margin:g})")
