"""Shared helpers for tests that run trials and read trial files."""

from __future__ import annotations

import h5py
import numpy as np

from pipeline.files import open_h5


def read_arrays(path) -> dict[str, np.ndarray]:
    """Every dataset of a trial file, except wall times (they differ between runs)."""
    arrays = {}
    with open_h5(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name != "metrics/seconds":
                arrays[name] = obj[()]
        f.visititems(visit)
    return arrays


def assert_same_results(path_a, path_b) -> None:
    a, b = read_arrays(path_a), read_arrays(path_b)
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        floats = x.dtype.kind in "fc" and y.dtype.kind in "fc"  # NaN is only a float's (strings have none)
        assert np.array_equal(x, y, equal_nan=floats), name


def run_at_once(argv: list[str], cwd, times: int = 2, timeout: float = 300) -> list[tuple[int, str, str]]:
    """Start one command ``times`` times at the same moment (two users, two terminals); each one's
    (return code, stdout, stderr) once all have ended."""
    import subprocess

    started = [subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(times)]
    outputs = [p.communicate(timeout=timeout) for p in started]
    return [(p.returncode, out, err) for p, (out, err) in zip(started, outputs)]


def launched_indices(out_dir) -> list[int]:
    """Every trial index launched into a results folder, once per task of every submission."""
    import json
    from pathlib import Path

    lines = (Path(out_dir) / "submissions.jsonl").read_text().splitlines()
    return [i for line in lines for task in json.loads(line).get("tasks", []) for i in task["indices"]]
