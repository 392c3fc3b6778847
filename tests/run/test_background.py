"""Rows written from a background thread (pipeline.run.background): the same files, bitwise, in every series
but `seconds`; errors on the writer stop the trial as they would have; checkpoints never behind the rows."""

import threading
import time

import pytest

from helpers import assert_same_results
from pipeline.cli import main
from pipeline.experiments import make_trial
from pipeline.launch.grid import load_grid
from pipeline.leases.ownership import LostOwnership
from pipeline.run import background
from pipeline.run.background import BackgroundSink
from pipeline.run.execute import execute
from pipeline.run.runner import CollectingSink, run_trial
from pipeline.trialfile import store
from pipeline.trialfile.files import read_status
from pipeline.trialfile.manifest import write_manifest
from pipeline.trialfile.store import DiskFull


def run_grid(out, monkeypatch, writer: str, preset: str, indices):
    monkeypatch.setenv(background.VARIABLE, writer)
    grid = load_grid(preset)
    trials = write_manifest(out, grid, grid.trials())
    for index in indices:
        execute(out, [trials[index]], checkpoint_every_s=0)
    return [trials[i].trial_id for i in indices]


@pytest.mark.parametrize("preset,indices", [("smoke", range(15)), ("stability-smoke", [0, 4])])
def test_the_background_writer_writes_the_same_files_bitwise(tmp_path, monkeypatch, preset, indices):
    """Every group and mode, every CNN variant (phase 2 records single steps), Experiment S (results/ after
    the final stage): each file with the writer equals the file without it, in every series but seconds."""
    direct = run_grid(tmp_path / "direct", monkeypatch, "0", preset, indices)
    threaded = run_grid(tmp_path / "threaded", monkeypatch, "1", preset, indices)
    assert direct == threaded
    for trial_id in direct:
        a, b = (tmp_path / folder / "trials" / f"{trial_id}.h5" for folder in ("direct", "threaded"))
        assert read_status(b)["status"] == "complete"
        assert_same_results(a, b)


class Recording(CollectingSink):
    """A sink that records the calls it got, fails where told, and is slow to write."""

    def __init__(self, fail_at=None, error=None, delay=0.0):
        super().__init__()
        self.fail_at, self.error, self.delay = fail_at, error, delay
        self.calls, self.saved_after = [], None
        self.thread_names = set()

    def write_epoch(self, record, model, checkpoint):
        time.sleep(self.delay)
        self.thread_names.add(threading.current_thread().name)
        if record.epoch == self.fail_at:
            raise self.error
        self.calls.append(("write_epoch", record.epoch))
        super().write_epoch(record, model, checkpoint)

    def save_latest_state(self):
        self.saved_after = len(self.calls)


TRIAL = {"group": "rot", "mode": "nom", "n": "6", "channels": "2", "n_samples": "32", "epochs": "6", "lr": "0.1",
         "device": "cpu"}


@pytest.mark.parametrize("error", [DiskFull(28, "no space left on device for epoch 3"),
                                   LostOwnership("rot-nom-s000: the lease was taken over by another owner")])
def test_an_error_on_the_writer_stops_the_trial_as_the_same_error_and_nothing_is_written_after_it(error):
    inner = Recording(fail_at=3, error=error)
    with pytest.raises(type(error)) as raised:
        run_trial(make_trial("groups", TRIAL), BackgroundSink(inner, "t"))
    assert raised.value is error
    assert [epoch for _, epoch in inner.calls] == [0, 1, 2]  # rows after the failure are never applied
    assert inner.thread_names == {"writer t"}  # the rows were written on the writer's thread


def test_the_rows_match_a_direct_run_and_a_checkpoint_waits_for_pending_rows():
    direct, inner = CollectingSink(), Recording(delay=0.05)
    run_trial(make_trial("groups", TRIAL), direct)
    sink = BackgroundSink(inner, "t")
    run_trial(make_trial("groups", TRIAL), sink)
    sink.close()
    assert [r.epoch for r in inner.records] == [r.epoch for r in direct.records]
    for a, b in zip(direct.records, inner.records):
        assert (a.loss, a.accuracy) == (b.loss, b.accuracy) and repr(a.grad_norm) == repr(b.grad_norm)
        assert a.dist_E.equal(b.dist_E) and a.dist_init.equal(b.dist_init) and a.norm.equal(b.norm)
    for a, b in zip(direct.weights, inner.weights):
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    slow = Recording(delay=0.05)
    sink = BackgroundSink(slow, "t")

    class Model:
        def snapshot(self):
            return {}

    import torch

    from pipeline.core.data import load_mnist
    from pipeline.run.runner import EpochRecord

    sink.begin(make_trial("groups", TRIAL), ["A0"], torch.device("cpu"), load_mnist(8, size=6))
    for epoch in range(3):
        zero = torch.zeros(1)
        sink.write_epoch(EpochRecord(epoch, 1, {"loss": 0.0, "accuracy": 0.0, "seconds": 0.0, "grad_norm": 0.0,
                                                "dist_E": zero, "dist_init": zero, "norm": zero, "step_perp": zero}),
                         Model(), lambda: {})
    sink.save_latest_state()  # as on preemption: after the pending rows, never before them
    assert slow.saved_after == 3
    sink.close()


def test_a_full_disk_met_by_the_writer_is_one_line_and_the_file_keeps_its_last_good_epoch(tmp_path, monkeypatch,
                                                                                         capsys):
    monkeypatch.setenv(background.VARIABLE, "1")
    real, calls = store.check_space, []

    def filling_up(folder, needed, what):
        calls.append(what)
        if what.startswith("epoch 4 "):
            raise DiskFull(28, f"no space left on device for {what}: 0.0 MB free under {folder}")
        return real(folder, needed, what)

    monkeypatch.setattr(store, "check_space", filling_up)
    out = tmp_path / "out"
    code = main(["run-trial", "--exp", "smoke", "--trial", "rot-nom-s000", "--out", str(out), "--set", "epochs=8",
                 "--checkpoint-every", "0"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: DiskFull:") and "no space left on device for epoch 4" in err
    assert err.count("\n") == 1
    attrs = read_status(out / "trials" / "rot-nom-s000.h5")
    assert attrs["epochs_done"] == 3 and attrs["status"] == "running"  # nothing written after the failure
    monkeypatch.setattr(store, "check_space", real)
    assert main(["run-trial", "--exp", "smoke", "--trial", "rot-nom-s000", "--out", str(out), "--set",
                 "epochs=8"]) == 0
    assert read_status(out / "trials" / "rot-nom-s000.h5")["status"] == "complete"
