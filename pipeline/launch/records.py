"""``OUT/submissions.jsonl``: the append-only log of what was launched into a results folder.

One line per event: a submission (when, from which host, on which profile, the job id and trial indices
of each task, and for local tasks the identity of their process) or a cancellation (which jobs). The
latest submission of a trial is the one that counts. A line cut short by a crash mid-append is the only
damage an append-only log can take: it is skipped with a warning, never a reason to stop. The lines of one
append (the records of a submission's arrays) say which of how many they are (``part``): an append a crash
cut short is dropped whole, so that a submission is never read with some of its arrays missing. Appends
are durable before they return, the log's name too when they create it.

Nothing is launched unrecorded: a submission first appends a ``launching`` line (which also proves the
log writable), then launches, then appends the submission with its job ids (:func:`launching`). A
``launching`` line without its submission (a crash or a full disk between the two) makes its trials
``unknown``, never ``missing``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline import durable
from pipeline.errors import ConfigError, SchedulerError
from pipeline.folder import ResultsFolder
from pipeline.settings import quoted
from pipeline.trialfile.wellformed import check_record

Warn = Callable[[str], None]  # where a damaged line of the submission log is reported


def append_record(out_dir: Path, record: dict) -> None:
    append_records(out_dir, [record])


def append_records(out_dir: Path, records: list[dict]) -> None:
    """Append lines, in one write made durable before returning (a launch follows, or has just happened)."""
    path = ResultsFolder.of(out_dir).submissions
    if len(records) > 1:
        records = [{**record, PART: [number, len(records)]} for number, record in enumerate(records, 1)]
    text = "".join(json.dumps(record) + "\n" for record in records)
    created = not path.exists()
    with open(path, "a+") as handle:
        # After a torn line, start on a fresh one so that these records stay readable.
        handle.seek(0, 2)
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":
                text = "\n" + text
        handle.write(text)
        handle.flush()
        durable.sync(handle.fileno())
    if created:
        durable.sync_directory(path.parent)


# The field of a line that is one of several appended together: [its number from 1, how many].
PART = "part"


@contextlib.contextmanager
def launching(out_dir: Path, base: dict, indices: list[list[int]]) -> Iterator[list[dict]]:
    """Record a submission around its launch: the ``launching`` line (the trial indices of each task)
    before, so that if it cannot be written nothing is launched; after, the submission's records (one per
    job array), which the caller appends to the list this yields, written together in one durable write.
    Every line carries the launch's ``id``. A launch refused before anything started (a ConfigError or
    SchedulerError, e.g. sbatch rejecting an array) takes its ``launching`` line back; any other failure leaves it, and the
    trials it may have launched say ``unknown``."""
    path = ResultsFolder.of(out_dir).submissions
    launch_id = uuid.uuid4().hex
    size_before = path.stat().st_size if path.exists() else None
    append_record(out_dir, {**base, "kind": "launching", "id": launch_id, "indices": indices})
    size_after = path.stat().st_size
    records: list[dict] = []
    try:
        yield records
    except (ConfigError, SchedulerError):
        if path.stat().st_size == size_after:  # nothing was appended since: take the line back
            if size_before is None:
                durable.unlink(path)
            else:
                _truncate_durably(path, size_before)
        else:
            append_record(out_dir, {"kind": "not launched", "id": launch_id})
        raise
    append_records(out_dir, [{**record, "id": launch_id} for record in records])


def _truncate_durably(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        durable.sync(fd)
    finally:
        os.close(fd)


def read_records(out_dir: Path, warn: Warn | None = None) -> list[dict]:
    path = ResultsFolder.of(out_dir).submissions
    if not path.exists():
        return []
    records: list[dict] = []
    batch: list[dict] = []  # the lines of an append of several, until its last
    first_of_batch = 0
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            (warn or _warn)(f"warning: {quoted(path)} line {number} is not a complete record (a write cut short?); "
                            "ignored")
            continue
        check_record(record, path, number)  # valid JSON that is not a record is never read as empty
        part = record.get(PART)
        if batch and not (isinstance(part, list) and part == [len(batch) + 1, batch[0][PART][1]]):
            _drop_batch(path, first_of_batch, batch, warn)
            batch = []
        if isinstance(part, list) and len(part) == 2:
            if not batch:
                first_of_batch = number
            batch.append(record)
            if part[0] == part[1]:
                records.extend(batch)
                batch = []
            continue
        records.append(record)
    if batch:
        _drop_batch(path, first_of_batch, batch, warn)
    return records


def _drop_batch(path: Path, first: int, batch: list[dict], warn: Warn | None) -> None:
    (warn or _warn)(f"warning: {quoted(path)} lines {first}-{first + len(batch) - 1} are {len(batch)} of "
                    f"{batch[0][PART][1]} records appended together (a write cut short?); ignored")


_warned: set[str] = set()


def _warn(line: str) -> None:
    # One command reads the log several times (submissions, cancellations): say it once.
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr)


def read_submissions(out_dir: Path, warn: Warn | None = None) -> list[dict]:
    """Submissions in the order they were made. A launch that was begun but never recorded with its job
    ids comes as a submission with ``unconfirmed`` set and tasks without job ids."""
    records = read_records(out_dir, warn)
    settled = {r.get("id") for r in records if r.get("kind", "submission") in ("submission", "not launched")}
    submissions = []
    for record in records:
        kind = record.get("kind", "submission")
        if kind == "submission":
            submissions.append(record)
        elif kind == "launching" and record.get("id") not in settled:
            tasks = [{"job_id": "", "indices": indices} for indices in record.get("indices", [])]
            submissions.append({**record, "kind": "submission", "unconfirmed": True, "tasks": tasks})
    return submissions


def latest_submission_of(out_dir: Path, warn: Warn | None = None) -> dict[int, dict]:
    """Trial index -> the record of the latest submission that launched it (what ``resubmit`` repeats)."""
    latest: dict[int, dict] = {}
    for record in read_submissions(out_dir, warn):
        for task in record.get("tasks", []):
            for index in task.get("indices", []):
                latest[int(index)] = record
    return latest


def cancelled_jobs(out_dir: Path, warn: Warn | None = None) -> dict[str, str]:
    """Job id -> when it was cancelled, for jobs cancelled after their submission."""
    cancelled: dict[str, str] = {}
    submitted_at: dict[str, str] = {}
    for record in read_records(out_dir, warn):
        if record.get("kind", "submission") == "submission":
            for task in record.get("tasks", []):
                submitted_at[task["job_id"]] = record.get("submitted_at", "")
                cancelled.pop(task["job_id"], None)  # a resubmission under the same id (a recycled PID) is new
        elif record.get("kind") == "cancel":
            for job_id in record.get("job_ids", []):
                cancelled[job_id] = record.get("cancelled_at", "")
    return cancelled
