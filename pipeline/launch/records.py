"""``OUT/submissions.jsonl``: the append-only log of what was launched into a results folder.

One line per event: a submission (when, from which host, on which profile, the job id and trial indices
of each task, and for local tasks the identity of their process) or a cancellation (which jobs). The
latest submission of a trial is the one that counts. A line cut short by a crash mid-append is the only
damage an append-only log can take: it is skipped with a warning, never a reason to stop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SUBMISSIONS = "submissions.jsonl"


def append_record(out_dir: Path, record: dict) -> None:
    path = Path(out_dir) / SUBMISSIONS
    text = json.dumps(record)
    with open(path, "a+") as handle:
        # After a torn line, start on a fresh one so that this record stays readable.
        handle.seek(0, 2)
        if handle.tell() > 0:
            handle.seek(handle.tell() - 1)
            if handle.read(1) != "\n":
                text = "\n" + text
        handle.write(text + "\n")


def read_records(out_dir: Path, warn=None) -> list[dict]:
    path = Path(out_dir) / SUBMISSIONS
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            (warn or _warn)(f"warning: {path} line {number} is not a complete record (a write cut short?); "
                            "ignored")
            continue
        records.append(record)
    return records


_warned: set[str] = set()


def _warn(line: str) -> None:
    # One command reads the log several times (submissions, cancellations): say it once.
    if line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr)


def read_submissions(out_dir: Path, warn=None) -> list[dict]:
    return [r for r in read_records(out_dir, warn) if r.get("kind", "submission") == "submission"]


def cancelled_jobs(out_dir: Path, warn=None) -> dict[str, str]:
    """Job id -> when it was cancelled, for jobs cancelled after their submission."""
    cancelled, submitted_at = {}, {}
    for record in read_records(out_dir, warn):
        if record.get("kind", "submission") == "submission":
            for task in record.get("tasks", []):
                submitted_at[task["job_id"]] = record.get("submitted_at", "")
                cancelled.pop(task["job_id"], None)  # a resubmission under the same id (a recycled PID) is new
        elif record.get("kind") == "cancel":
            for job_id in record.get("job_ids", []):
                cancelled[job_id] = record.get("cancelled_at", "")
    return cancelled
