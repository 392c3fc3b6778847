"""Signals that are never lost: the cancel signal at any moment of a trial stops it at the next seam of
training, having saved its last epoch; preemption and time-outs requeue a task as often as promised."""

import os
import random
import signal
import threading
from pathlib import Path

from helpers import SLOW, assert_same_results, cli, reference_run, sets, wait_until
from pipeline import stopping
from pipeline.execute import execute
from pipeline.files import inspect
from pipeline.grid import load_grid
from pipeline.manifest import select, write_manifest

TESTS = Path(__file__).resolve().parent
# About 0.05 s an epoch: many epochs, and many moments to be interrupted at, in a few seconds.
QUICK = ["groups=rot", "modes=aug", "seeds=1", "n=6", "channels=4", "n_samples=200", "lr=0.005", "augment=sampled:4",
         "weights_every=3", "epochs=40", "cnn.seeds=1", "configs=cross"]


def test_the_cancel_signal_at_random_moments_is_never_lost(tmp_path, capfd):
    """Each round trains (or resumes) the trial while a timer sends this process the cancel signal at a
    random moment, in whatever it is doing then: copying the file, writing an epoch, a checkpoint, renewing
    its lease. The round must end cancelled, with the file saying so at its last epoch, unless the signal
    came after the last seam and the trial completed; in the end the trial equals an uninterrupted run."""
    expected = reference_run(tmp_path / "reference", QUICK)
    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in QUICK))
    trial = select(write_manifest(out, grid, grid.trials()), 0)
    path = out / "trials" / f"{trial.trial_id}.h5"
    previous = signal.getsignal(stopping.CANCEL_SIGNAL)
    stopping.install()
    rng = random.Random(17)
    cancelled = 0
    try:
        for _ in range(300):
            fired = threading.Event()

            def fire():
                fired.set()
                os.kill(os.getpid(), stopping.CANCEL_SIGNAL)

            timer = threading.Timer(rng.uniform(0.0, 1.5), fire)
            timer.start()
            try:
                execute(out, [trial], checkpoint_every_s=0)
                outcome = "ran"
            except stopping.Cancelled:
                outcome = "cancelled"
            finally:
                timer.cancel()
                timer.join()
            state = inspect(path) if path.exists() else None
            if outcome == "cancelled":
                cancelled += 1
                if state is not None:
                    assert state.status in ("cancelled", "running"), state.status  # running: stopped before it began
                    assert state.rows == state.attrs["epochs_done"] + 1
            else:
                assert state is not None and state.status == "complete", "a cancel signal was lost"
                break
            stopping._requests.clear()  # one that came after the round ended belongs to no round
    finally:
        signal.signal(stopping.CANCEL_SIGNAL, previous)
        stopping._requests.clear()
    assert inspect(path).status == "complete"
    assert cancelled >= 10
    assert_same_results(expected, path)
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_local_time_out_saves_requeues_and_resumes_to_the_uninterrupted_result(tmp_path):
    """The local time limit (a minute) signals the task 45 s early, at 15 s: the task notes it, the trial
    saves its last epoch at the next seam, and submitit's local controller starts the task again, which
    resumes; the trial ends as an uninterrupted run."""
    values = SLOW + ["epochs=20"]
    expected = reference_run(tmp_path / "reference", values, threads=os.cpu_count())
    profile = tmp_path / "short.toml"
    profile.write_text('executor = "local"\nworkers = 1\nsignal_delay_s = 45\n\n[time_limit_min]\ngroups = 1\n'
                       'cnn = 1\n')
    out = tmp_path / "out"
    result = cli("submit", "--exp", "smoke", "--out", str(out), "--cluster", str(profile), "--wait", "--workers", "1",
                 *sets(values))
    assert result.returncode == 0, result.stderr
    path = out / "trials" / "rot-aug-s000.h5"
    assert inspect(path).status == "complete"
    log = (out / "logs" / "rot-aug-s000.log").read_text()
    assert "preempted or at the time limit: saving the last epoch" in log and "resuming after epoch" in log
    assert_same_results(expected, path)


def test_local_time_outs_requeue_as_often_as_promised(tmp_path, monkeypatch):
    """The README promises 20 time-outs locally as on SLURM: a task that times out every time runs 21 times
    (submitit's own local controller stopped after 6, its log saying "14 remaining timeouts")."""
    from requeue_counter import WaitsForever, runs

    from pipeline.launch.local_controller import LocalExecutor
    from pipeline.launch.layout import MAX_TIMEOUT_REQUEUES

    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    counter = str(tmp_path / "runs")
    executor = LocalExecutor(folder=tmp_path / "submitit", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=1, signal_delay_s=59)  # signalled a second after each start
    job = executor.submit(WaitsForever(counter))
    assert wait_until(lambda: job.done(), timeout=600, poll=1.0)
    assert runs(counter) == MAX_TIMEOUT_REQUEUES + 1 == 21
    assert "timed-out too many times" in job.stderr()
