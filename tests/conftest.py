import os

# Tests never reach for the network: the vendored digits are the fixture.
os.environ.setdefault("PIPELINE_OFFLINE", "1")
os.environ.setdefault("PIPELINE_DATA_ROOT", "/nonexistent-pipeline-data-root")


import shutil
import signal
import subprocess

import pytest


@pytest.fixture(scope="session")
def slurm_cluster():
    """The single-node SLURM of `make slurm-up`. Optional on a laptop, mandatory in CI (CI=true)."""
    ready = shutil.which("sbatch") is not None and subprocess.run(
        ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.strip() not in ("", "down")
    if not ready:
        if os.environ.get("CI") == "true":
            pytest.fail("SLURM is required in CI: .ci/run must start it (bash slurm/cluster/slurm-local.sh up)")
        pytest.skip("no local SLURM cluster (start one with `make slurm-up`)")
    return "testcluster"


@pytest.fixture(autouse=True)
def signal_handlers_restored():
    """A command run in this process (``main(["train", ...])``) installs the pipeline's stop-request handlers
    for good, as a command's process should; here they would outlive the test, and a later test's Ctrl-C
    would be noted for a seam that never comes instead of raised. Each test gets the handlers it found."""
    from pipeline import stopping

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
    previous = {signum: signal.getsignal(signum) for signum in signals}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    stopping._requests.clear()


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Trials compared bit for bit must sum on as many threads as the runs they are compared with; a test
    that changes the process's torch thread count in-process (a task run here, a crash recovery) would make
    every later in-process reference differ. Each test gets the count it found."""
    import sys

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
