"""``OUT/submissions.jsonl``: the append-only log of a results folder's submissions.

Every submission appends one line: when, from which host, on which profile, and the job id and trial
indices of each task. ``status``, ``resubmit`` and ``cancel`` find the grid's tasks in the queue through
it; the latest submission of a trial is the one that counts.
"""

from __future__ import annotations

import json
from pathlib import Path

SUBMISSIONS = "submissions.jsonl"


def append_record(out_dir: Path, record: dict) -> None:
    with open(Path(out_dir) / SUBMISSIONS, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_submissions(out_dir: Path) -> list[dict]:
    path = Path(out_dir) / SUBMISSIONS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
