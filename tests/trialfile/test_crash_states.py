"""Every state a crash can leave, checked (tests/crash): the workloads recorded under strace, their crash
states generated under the kill, prefix and block persistence models, the next owner's recovery run on each.
CI explores a bounded sample of crash points; ``make crash-states`` explores them all."""

import os
import shutil

import pytest

from crash.explore import explore, report
from crash.model import Timeline
from crash.trace import Inode, Op, Recording

# Crash points a kind in CI (of about 440 for the Experiment G trial, 890 for Experiment S, 120 for the
# folder's files): about 75 s here, 45 s of it recording.
SAMPLE = {"groups": 12, "stability": 5, "folder": None}


@pytest.fixture(scope="module")
def strace():
    if shutil.which("strace") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the crash-state explorer needs strace (apt-get install strace)")
        pytest.skip("strace is not installed")


def test_a_sample_of_crash_states_all_recover_to_the_last_or_the_operation_in_flight(strace):
    lines: list[str] = []
    tally = explore(sample=SAMPLE, log=lines.append)
    report(tally, log=lines.append)
    summary = "\n".join(lines)
    assert tally.total("wrong") == 0 and tally.total("undetected") == 0, summary
    assert tally.total("set aside") == 0, summary  # no state of the models needs setting aside
    assert lines[-1].startswith("explored ") and lines[-1].endswith(": 0 recovered wrongly, 0 undetected")
    crashed = {name for (_, model, name), n in tally.crashed.items() if model != "kill" and n}
    assert {"trial file", "records", "directory"} <= crashed, summary  # not only states that a kill leaves
    # A lease's bytes are durable before it is named, so what a dead node leaves of it is its name or not.
    assert any(n for (label, model, name), n in tally.crashed.items()
               if label == "leases" and model != "kill" and name == "directory"), summary
    assert sum(tally.covered.values()) > 0 and not tally.havoc_failed, summary


def test_the_explorer_finds_what_a_policy_without_fsync_leaves(strace):
    """Its own test: with fsync made a no-op, names become durable without their bytes and renames are lost,
    and the explorer must say so."""
    lines: list[str] = []
    tally = explore(workloads=("folder",), no_fsync=True, log=lines.append, limit=256)
    report(tally, log=lines.append)
    assert tally.total("wrong") > 0 and tally.total("set aside") > 0, "\n".join(lines)
    assert "manifest.json + submissions.jsonl" in {label for label, _, v in tally.counts if v == "wrong"}


def recording(ops: list[Op]) -> Recording:
    inodes = {0: Inode(True), 1: Inode(False)}
    return Recording(ops, inodes, 0)


def test_the_models_give_every_prefix_and_every_block_version():
    """A file created, given two blocks in two writes, synced, then rewritten in its first block: the prefix
    model keeps 0, 1 or 2 of its un-synced writes, the block model also the second block without the first."""
    ops = [Op("add", 0, name="f", target=1), Op("fsync", 0),
           Op("write", 1, offset=0, data=b"a" * 4096), Op("write", 1, offset=4096, data=b"b" * 10)]
    timeline = Timeline(recording(ops))
    at_end = next(snapshot for k, snapshot in timeline.walk() if k == len(ops) - 1)
    prefix, _ = at_end.crash_states("prefix", lambda p: True, 1000, 0)
    assert sorted(s.file("f") for s, _ in prefix) == [b"", b"a" * 4096, b"a" * 4096 + b"b" * 10]
    blocks, _ = at_end.crash_states("blocks", lambda p: True, 1000, 0)
    contents = {s.file("f") for s, _ in blocks}
    assert bytes(4096) + b"b" * 10 in contents  # the second block durable, the first not: a hole of zeros
    # Sizes 0, 4096 and 4106, each block in either version: 1 + 2 + 4 distinct files.
    assert b"a" * 4096 in contents and b"" in contents and len(contents) == 7
    kill, _ = at_end.crash_states("kill", lambda p: True, 1000, 0)
    assert [s.file("f") for s, _ in kill] == [b"a" * 4096 + b"b" * 10]


def test_a_name_is_durable_only_once_its_directory_is_synced():
    ops = [Op("add", 0, name="f", target=1), Op("write", 1, offset=0, data=b"x"), Op("fsync", 1)]
    timeline = Timeline(recording(ops))
    for k, snapshot in timeline.walk():
        if k == 2:
            states, _ = snapshot.crash_states("prefix", lambda p: True, 1000, 0)
            assert sorted((s.file("f") for s, _ in states), key=repr) == [None, b"x"]  # synced, yet maybe unnamed


def test_a_large_file_beside_a_directory_of_many_unsynced_names_gives_block_families():
    """A policy that never syncs a directory (the pipeline before issue 24) leaves it with more un-synced
    entries than can be listed: the directory is drawn from, and only the file is filled with havoc (the
    explorer stopped with an IndexError on the first such state)."""
    ops = [Op("add", 0, name="f", target=1), Op("fsync", 0)]
    ops += [Op("write", 1, offset=i * 4096, data=bytes([65 + i]) * 4096) for i in range(9)]
    ops += [Op("add", 0, name=f"link{i}", target=1) for i in range(9)]  # 2**9 subsets: more than 256
    timeline = Timeline(recording(ops))
    at_end = next(snapshot for k, snapshot in timeline.walk() if k == len(ops) - 1)
    families, sampled = at_end.block_families(lambda p: True, limit=64, seed=0)
    assert sampled and len(families) == 64
    assert all(len(family.havoc) == 4 and family.covered > 256 for family in families)
    links = {sum(path.startswith("link") for path, _, _ in state.files) for family in families
             for state, _ in family.real}
    assert 0 in links and 9 in links and len(links) > 2  # none, all, and some of the names persisted
