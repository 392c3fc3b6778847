"""Where the numbers come from: the data each trial trained on, the devices, commits and hours, and what
each trial ran with (interpreter, torch, CUDA and driver, device model, packages, data checksums, the
diff of a dirty tree; ``pipeline.trialfile.provenance`` records them in every trial file).

Trial files record their data source with the path it was read from on the machine that ran them; a
report names the source in words instead (the official MNIST test split, or the digits vendored in the
repository), so that it never points at a path outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePath

import pandas as pd

from analysis.loading import Results

OFFICIAL = "official MNIST test split"
VENDORED = "vendored MNIST digits"
DATA_SOURCE_WORDS = {
    OFFICIAL: "the official MNIST test split (10,000 digits), as in the paper",
    VENDORED: "the 10,000 MNIST digits vendored in the repository's `data/mnist/`, which are real MNIST digits but "
              "not the official test split (provenance and class counts in `data/mnist/README.md`; "
              "docs/science.md §3)",
}
UNREADABLE = ("missing", "damaged")
LOCAL_PATH = re.compile(r"\s*\((?:/|[A-Za-z]:\\)[^)]*\)")


def data_source_words(source: str) -> str:
    for prefix, words in DATA_SOURCE_WORDS.items():
        if str(source).startswith(prefix):
            return words
    if not source:
        return "not recorded (trial files written before the data source was stored)"
    # An unfamiliar source is quoted, less the machine-local path in parentheses that sources carry.
    return f"`{LOCAL_PATH.sub('', str(source)).strip()}`"


def grid_source_words(source: str) -> str:
    """A grid file as the repository knows it: a preset under ``jobs/``, or a file of the user's."""
    name = PurePath(str(source)).name
    if not name:
        return "not recorded"
    if PurePath(str(source)).parent.name == "jobs":
        return f"the preset `jobs/{name}`"
    return f"the grid file `{name}` (not part of the repository)"


def device_kind(device: str) -> str:
    """'cuda:0 (NVIDIA A40)' -> 'NVIDIA A40'; 'cpu' -> 'cpu'."""
    if "(" in device:
        return device[device.index("(") + 1:device.rindex(")")]
    return device.split(":")[0] or "unknown"


def readable(results: Results) -> pd.DataFrame:
    return results.trials[~results.trials["status"].isin(UNREADABLE)]


def data_sources(results: Results) -> pd.DataFrame:
    """Trials per data source in words (readable trials only)."""
    trials = readable(results)
    words = trials["data_source"].map(data_source_words)
    return trials.assign(source=words).groupby("source", sort=False).agg(
        trials=("trial_id", "size"), experiments=("experiment", lambda s: ", ".join(dict.fromkeys(s)))).reset_index()


def devices(results: Results) -> pd.DataFrame:
    """Per device kind: trials, complete trials, and wall-clock hours. Seeds trained together in one packed
    process share its wall time, so each counts its share."""
    trials = readable(results)
    table = trials.assign(kind=trials["device"].map(device_kind),
                          hours=trials["wall_seconds"] / trials["pack_size"] / 3600,
                          complete=trials["status"] == "complete")
    return table.groupby("kind", sort=False).agg(trials=("trial_id", "size"), complete=("complete", "sum"),
                                                 hours=("hours", "sum")).reset_index()


def provenance(results: Results) -> dict:
    trials = readable(results)
    hours = devices(results).set_index("kind")["hours"].to_dict()
    return {
        "grid": results.manifest.get("grid", ""), "source": grid_source_words(results.manifest.get("source", "")),
        "description": results.manifest.get("description", ""),
        "overrides": results.manifest.get("overrides", {}), "created_at": results.manifest.get("created_at", ""),
        "grown": len(results.manifest.get("grown", [])),
        "manifest_git_commit": results.manifest.get("git_commit", ""),
        "num_trials": int(results.manifest.get("num_trials", len(results.trials))),
        "git_commits": trials["git_commit"].value_counts().to_dict(),
        "devices": trials["device"].value_counts().to_dict(),
        "hostnames": trials["hostname"].value_counts().to_dict(),
        "hours_by_device": hours,
        "gpu_hours": float(sum(h for kind, h in hours.items() if kind != "cpu")),
        "cpu_hours": float(hours.get("cpu", 0.0)),
    }


def _counted_column(trials: pd.DataFrame, column: str) -> dict:
    if column not in trials:
        return {}
    values = trials[column].fillna("").astype(str)
    return values[values != ""].value_counts().to_dict()


def software(results: Results) -> dict:
    """What the readable trials ran with, each value with the number of trials that recorded it."""
    trials = readable(results)
    builds = (trials["torch_version"].fillna("").astype(str) + " / CUDA " + trials["cuda_version"].fillna("").astype(str)
              .replace("", "none") + " / cuDNN " + trials["cudnn_version"].fillna("").astype(str).replace("", "none")
              if "torch_version" in trials else pd.Series(dtype=str))
    data: dict[str, int] = {}
    for text, count in _counted_column(trials, "data_files").items():
        try:
            for name, digest in json.loads(text).items():
                data.setdefault(f"{name} sha256 {digest}", 0)
                data[f"{name} sha256 {digest}"] += count
        except ValueError:
            continue
    return {"python": _counted_column(trials, "python_version"),
            "torch": builds[builds.str.len() > len(" / CUDA none / cuDNN none")].value_counts().to_dict(),
            "drivers": _counted_column(trials, "gpu_driver_version"),
            "models": _counted_column(trials, "device_model"),
            "data_files": data,
            "diffs": _counted_column(trials, "git_diff_sha256"),
            "unrecorded": int((trials.get("python_version", pd.Series("", index=trials.index)).fillna("") == "").sum())}


def provenance_files(results: Results) -> dict[str, str]:
    """Files for ``aggregate/provenance/``: each distinct package list and each diff of a dirty tree, with
    the trials that recorded it (name -> text)."""
    files = {}
    for number, (text, trial_ids) in enumerate(results.texts.get("packages", {}).items(), 1):
        files[f"packages-{number}.txt"] = f"# installed packages of {len(trial_ids)} trial(s): {', '.join(trial_ids[:5])}" \
            + (" ..." if len(trial_ids) > 5 else "") + "\n" + text + "\n"
    for text in results.texts.get("git_diff", {}):
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        files[f"diff-{digest}.patch"] = text if text.endswith("\n") else text + "\n"
    return files
