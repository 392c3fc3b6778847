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
