"""Shared helpers for tests that run trials and read trial files."""

from __future__ import annotations

import h5py
import numpy as np

from pipeline.trialfile.files import open_h5


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


# -- running commands and watching trials, for the tests of faults -----------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
# About 0.3 s an epoch here: slow enough to act on a running trial, short enough for CI.
SLOW = ["groups=rot", "modes=aug", "seeds=1", "n=14", "channels=8", "n_samples=500", "lr=0.005",
        "augment=sampled:10", "weights_every=5", "cnn.seeds=1", "configs=cross"]
# Leases that beat every half second and go stale after four beats unseen: takeovers within seconds.
FAST_LEASES = {"PIPELINE_LEASE_HEARTBEAT_S": "0.5", "PIPELINE_LEASE_STALE_S": "2"}


def sets(values) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def pipeline_argv(*argv) -> list[str]:
    import sys

    return [sys.executable, "-m", "pipeline", *argv]


def cli(*argv, env=None, timeout=600):
    import subprocess

    return subprocess.run(pipeline_argv(*argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def wait_until(condition, timeout=120, poll=0.05) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def epochs_done(path) -> int:
    from pipeline.trialfile.files import read_status

    return read_status(path).get("epochs_done", -1) if path.exists() else -1


def reference_run(folder, values, index=0, threads=None):
    """The uninterrupted run of one trial of the smoke grid with ``values``, in this process."""
    import torch

    from pipeline.launch.grid import load_grid
    from pipeline.run.execute import execute
    from pipeline.trialfile.manifest import select, write_manifest

    grid = load_grid("smoke", dict(v.split("=", 1) for v in values))
    trial = select(write_manifest(folder, grid, grid.trials()), index)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        execute(folder, [trial])
    finally:
        torch.set_num_threads(previous)
    return folder / "trials" / f"{trial.trial_id}.h5"


def as_other_host(argv, hostname="node2") -> list[str]:
    """The command as a process of another host (its own UTS namespace and hostname) on the same file
    system: root only."""
    return ["unshare", "-u", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *argv]


def in_new_pid_namespace(argv) -> list[str]:
    """The command in a PID namespace of its own, as in a container with its own PIDs: root only."""
    return ["unshare", "-p", "-f", "--mount-proc", *argv]


def require_root_namespaces() -> None:
    """Namespaces need root (CI runs as root: there their absence is a failure, not a skip)."""
    import os
    import subprocess

    import pytest

    works = subprocess.run(["unshare", "-u", "-p", "-f", "--mount-proc", "true"], capture_output=True).returncode == 0
    if not works:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must be able to create namespaces (unshare -u -p, as root)")
        pytest.skip("unshare needs root")


def open_paths(pid: int) -> list[str]:
    import os

    paths = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return paths
    for name in names:
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
    return paths


def freeze_while_open(pid: int, path, timeout=120) -> bool:
    """SIGSTOP the process at a moment it holds ``path`` open (in the middle of writing an epoch)."""
    import os
    import random
    import signal
    import time

    def stopped() -> bool:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "T"

    deadline = time.time() + timeout
    while time.time() < deadline:
        os.kill(pid, signal.SIGSTOP)
        while not stopped():
            time.sleep(0.0005)
        if str(path) in open_paths(pid):
            return True
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.random() * 0.004)
    return False
