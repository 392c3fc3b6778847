"""The scheduler interface (pipeline.schedulers) and the sink protocol (pipeline.trialfile.sink): what leases,
the store and the runner rely on, checked without a cluster."""

import inspect

import pytest

from pipeline import schedulers
from pipeline.schedulers.base import QueueView, Scheduler
from pipeline.trialfile.sink import Sink

TASK_VARIABLES = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_LOCAL_JOB_ID")


@pytest.fixture
def no_task(monkeypatch):
    for name in TASK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_outside_a_task_there_is_no_task_id_and_nothing_to_record(no_task):
    assert schedulers.current_job_id() == "" and schedulers.provenance() == {}


def test_a_slurm_array_task_running_the_local_executor_is_slurms_task(no_task):
    no_task.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert schedulers.current_job_id() == "4242" and schedulers.provenance() == {"job": "4242"}
    no_task.setenv("SLURM_ARRAY_JOB_ID", "77")
    no_task.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert schedulers.current_job_id() == "77_3"
    assert schedulers.provenance() == {"slurm_job_id": "77", "slurm_array_task_id": "3", "job": "77_3"}
    assert schedulers.queued().task_id() == "77_3"  # what a lease records


class Counting(Scheduler):
    name, queued = "counting", True

    def __init__(self, states):
        self.answer, self.reads = states, 0

    def task_id(self) -> str:
        return ""

    def read_queue(self):
        self.reads += 1
        return self.answer

    def active(self, state: str) -> bool:
        return state == "RUNNING"


def test_a_view_reads_the_queue_once_and_only_when_asked():
    scheduler = Counting({"1_0": "RUNNING", "1_1": "PENDING"})
    view = QueueView(scheduler)
    assert scheduler.reads == 0
    assert [view.alive("1_0"), view.alive("1_1"), view.alive("2_0")] == [True, False, False]
    assert scheduler.reads == 1


def test_a_queue_that_cannot_be_read_is_unknown_never_empty():
    scheduler = Counting(None)
    assert scheduler.alive(["1_0"]) is None and QueueView(scheduler).alive("1_0") is None
    assert QueueView.given(scheduler, None).alive("1_0") is None
    assert QueueView.given(scheduler, {}).alive("1_0") is False
    assert scheduler.reads == 2  # one read per view; given views never read


def test_the_local_executor_has_no_queue_to_ask():
    assert schedulers.get("local").alive(["123"]) is None


def test_a_record_without_an_executor_is_the_default_schedulers_and_an_unknown_one_is_refused():
    assert schedulers.of_record({}) == schedulers.DEFAULT == "slurm"
    assert schedulers.of_record({"executor": "local"}) == "local"
    with pytest.raises(schedulers.ConfigError, match="unknown executor 'pbs'; accepted: local, slurm"):
        schedulers.get("pbs")


def test_every_sink_implements_the_whole_protocol():
    from pipeline.run.background import BackgroundSink
    from pipeline.run.curve_sinks import CurveSink
    from pipeline.run.runner import CollectingSink, ConsoleSink
    from pipeline.trialfile.store import TrialFile

    wanted = {name for name, member in inspect.getmembers(Sink) if inspect.isfunction(member)
              and not name.startswith("_")}
    assert {"resume_point", "begin", "write_epoch", "write_steps", "write_results", "save_latest_state", "finish",
            "close"} <= wanted
    for sink in (TrialFile, ConsoleSink, CollectingSink, CurveSink, BackgroundSink):
        missing = {name for name in wanted if not callable(getattr(sink, name, None))}
        assert missing == set(), f"{sink.__name__} lacks {missing}"
        assert "raise_errors" in inspect.signature(sink.close).parameters
