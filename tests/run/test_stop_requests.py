"""Signals that are never lost: the cancel signal at any moment of a trial stops it at the next seam of
training, having saved its last epoch; preemption requeues a task that resumes, and time-outs requeue it as
often as promised."""

import os
import random
import re
import signal
import threading
from pathlib import Path

import h5py

from helpers import SLOW, assert_same_results, cli, epochs_done, reference_run, sets, wait_until
from pipeline import stopping
from pipeline.launch.grid import load_grid
from pipeline.run.execute import execute
from pipeline.trialfile.files import inspect
from pipeline.trialfile.manifest import select, write_manifest

TESTS = Path(__file__).resolve().parents[1]
# About 0.05 s an epoch: many epochs, and many moments to be interrupted at, in a few seconds.
QUICK = ["groups=rot", "modes=aug", "seeds=1", "n=6", "channels=4", "n_samples=200", "lr=0.005", "augment=sampled:4",
         "weights_every=3", "epochs=60", "cnn.seeds=1", "configs=cross"]


def test_the_cancel_signal_at_random_moments_is_never_lost(tmp_path, capfd):
    """Each round trains (or resumes) the trial while a thread sends this process the cancel signal at a
    random moment, in whatever it is doing then: taking the lease, copying the file, training, writing an
    epoch or a checkpoint, renewing its lease. A signal sent while a seam of training was still ahead must
    end the round cancelled, the file saying so at its last epoch; in the end the trial equals an
    uninterrupted run. (With the old handler, which raised from inside the signal, a signal that landed in
    h5py's cleanup was printed as "Exception ignored" and lost, and the trial trained on.)"""
    expected = reference_run(tmp_path / "reference", QUICK)
    with h5py.File(expected, "r", locking=False) as f:
        total = int(f.attrs["total_epochs"])
    out = tmp_path / "out"
    grid = load_grid("smoke", dict(v.split("=", 1) for v in QUICK))
    trial = select(write_manifest(out, grid, grid.trials()), 0)
    path = out / "trials" / f"{trial.trial_id}.h5"
    log = out / "logs" / f"{trial.trial_id}.log"
    previous = signal.getsignal(stopping.CANCEL_SIGNAL)
    stopping.install()
    rng = random.Random(17)
    cancelled = 0
    # A row is written during the next epoch's gradient pass: while the file shows epoch k, training may
    # be as far as the end of epoch k + 2. Up to total - 3, a seam is certainly still ahead.
    last_with_a_seam = total - 3
    try:
        for _ in range(300):
            start = logged_epoch(log)
            round_over, fired_at = threading.Event(), []

            # Progress first, then a moment within an epoch (one takes 0.01 to 0.3 s): the log's epoch lines
            # are read, not the file, which a reader may catch mid-commit.
            target, extra_s = min(start + rng.randint(0, 3), last_with_a_seam), rng.uniform(0.0, 0.03)

            def fire(target=target, extra_s=extra_s, round_over=round_over, fired_at=fired_at):
                while logged_epoch(log) < target:
                    if round_over.wait(0.002):
                        return
                if round_over.wait(extra_s):
                    return
                fired_at.append(logged_epoch(log))  # what the file held when the signal was sent
                os.kill(os.getpid(), stopping.CANCEL_SIGNAL)

            sender = threading.Thread(target=fire) if start < last_with_a_seam else None
            if sender is not None:
                sender.start()
            try:
                execute(out, [trial], checkpoint_every_s=0)
                outcome = "ran"
            except stopping.Cancelled:
                outcome = "cancelled"
            finally:
                round_over.set()
                if sender is not None:
                    sender.join()
            state = inspect(path) if path.exists() else None
            if outcome == "cancelled":
                cancelled += 1
                if state is not None:
                    assert state.status in ("cancelled", "running"), state.status  # running: stopped before it began
                    assert state.rows == state.attrs["epochs_done"] + 1
            else:
                lost = f"a cancel signal sent at epoch {fired_at[0] if fired_at else None} was lost"
                assert not fired_at or fired_at[0] > last_with_a_seam, lost
                assert state is not None and state.status == "complete"
                break
            stopping._requests.clear()  # one that came after the round ended belongs to no round
    finally:
        signal.signal(stopping.CANCEL_SIGNAL, previous)
        stopping._requests.clear()
    assert inspect(path).status == "complete"
    assert cancelled >= 10
    assert_same_results(expected, path)
    assert "Exception ignored" not in capfd.readouterr().err


def logged_epoch(log: Path) -> int:
    """The last epoch a trial's log reports written (-1 before any)."""
    if not log.exists():
        return -1
    found = re.findall(r" epoch (\d+)/\d+ ", log.read_text())
    return int(found[-1]) if found else -1


def test_a_preempted_local_task_saves_at_a_seam_requeues_and_resumes_to_the_uninterrupted_result(tmp_path):
    """Submitit's preemption signal (what SLURM sends before a time limit or a preemption) reaches the local
    task in the middle of training: the task notes it, the trial saves its last epoch at the next seam, and
    submitit's own handler then requeues the task, which resumes; the trial ends as an uninterrupted run."""
    import json

    import submitit

    from pipeline.launch.backends.local import children as _children
    from pipeline.leases.ownership import process_start_ticks

    values = SLOW + ["epochs=30"]
    expected = reference_run(tmp_path / "reference", values, threads=os.cpu_count())
    out = tmp_path / "out"
    result = cli("submit", "--exp", "smoke", "--out", str(out), "--no-wait", "--workers", "1", *sets(values))
    assert result.returncode == 0, result.stderr
    controller = int(json.loads((out / "submissions.jsonl").read_text().splitlines()[-1])["tasks"][0]["job_id"])
    path = out / "trials" / "rot-aug-s000.h5"
    assert wait_until(lambda: epochs_done(path) >= 3, timeout=300)
    (task,) = _children(controller)
    os.kill(task, submitit.JobEnvironment._usr_sig())
    assert wait_until(lambda: process_start_ticks(controller) is None, timeout=600)  # requeued, resumed, done
    assert inspect(path).status == "complete"
    log = (out / "logs" / "rot-aug-s000.log").read_text()
    assert "preempted or at the time limit: saving the last epoch" in log and "resuming after epoch" in log
    assert_same_results(expected, path)


def test_local_time_outs_requeue_as_often_as_promised(tmp_path, monkeypatch):
    """The README promises 20 time-outs locally as on SLURM: a task that times out every time runs 21 times
    (submitit's own local controller stopped after 6, its log saying "14 remaining timeouts")."""
    from pipeline.launch import sealed
    from pipeline.launch.layout import MAX_TIMEOUT_REQUEUES
    from pipeline.launch.local_controller import LocalExecutor
    from requeue_counter import WaitsForever, runs

    monkeypatch.setenv("PYTHONPATH", f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    counter = str(tmp_path / "runs")
    executor = LocalExecutor(folder=tmp_path / "submitit", max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=1, signal_delay_s=59)  # signalled a second after each start
    with sealed.sealing(sealed.new_key()):  # the executor's tasks unpickle only what their submission sealed
        job = executor.submit(WaitsForever(counter))
    assert wait_until(lambda: job.done(), timeout=600, poll=1.0)
    assert runs(counter) == MAX_TIMEOUT_REQUEUES + 1 == 21
    assert "timed-out too many times" in job.stderr()
