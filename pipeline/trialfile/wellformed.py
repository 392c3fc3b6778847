"""Checks that what is read back from a results folder has the shape the pipeline wrote.

``manifest.json`` and ``submissions.jsonl`` are JSON that any hand (or a group member, or a damaged copy) can
change into other valid JSON: a record without its tasks, a task whose indices are a string, an entry whose
trial id is a path. Read as written, those crashed ``status``, ``cancel`` and ``resubmit`` with a bare
``KeyError`` or ``TypeError``; taken as empty (no tasks), they would make launched trials look never
submitted. Each reader checks what it reads here first, and a bad entry is one line naming the file, where
in it (the line of the submission log, the entry of the manifest) and what is wrong: never read as empty.

Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import experiments
from pipeline.errors import ConfigError
from pipeline.names import JOB_ID_WORDS, TRIAL_ID_WORDS, is_job_id, is_trial_id
from pipeline.settings import quoted

# The key of a manifest's list of trial entries (read through ``pipeline.trialfile.manifest.entries``).
TRIALS_KEY = "trials"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(_is_int(v) and v >= 0 for v in value)


class Malformed(ConfigError):
    """A document of a results folder that is valid JSON but not what the pipeline wrote."""


# -- manifest.json -------------------------------------------------------------------------------------------

def _entry_problem(entry: object, position: int, seen: set[str], known: list[str]) -> str:
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not an object"
    if not _is_int(entry.get("index")) or entry["index"] != position:
        return f"has index {entry.get('index')!r}; the entries must be numbered 0, 1, ... in order ({position} here)"
    trial_id = entry.get("trial_id")
    if not isinstance(trial_id, str) or not is_trial_id(trial_id):
        return f"has trial id {trial_id!r}, which is not a name (accepted: {TRIAL_ID_WORDS})"
    if trial_id in seen:
        return f"repeats trial id {trial_id!r}"
    seen.add(trial_id)
    if entry.get("experiment") not in known:
        return f"has experiment {entry.get('experiment')!r}; accepted: {', '.join(known)}"
    settings = entry.get("settings", entry.get("config"))
    if not isinstance(settings, dict):
        return "has no object of settings"
    labels = entry.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(labels.get(k, ""), str) for k in ("cell_key", "cell", "mode")):
        return f"has labels {labels!r}, not an object of texts"
    if not isinstance(entry.get("swept", {}), dict):
        return "has swept settings that are not an object"
    return ""


def check_manifest(document: object, path: Path) -> None:
    """Raise :class:`Malformed`, in one line, unless ``document`` is a manifest as the pipeline writes it."""
    if not isinstance(document, dict) or not isinstance(document.get(TRIALS_KEY), list):
        raise Malformed(f"{quoted(path)} is damaged (no list of trials); restore it, or submit the grid again into a "
                        "new folder")
    if not isinstance(document.get("launch", {}), dict):
        raise Malformed(f"{quoted(path)}: its launch settings are not an object; restore it")
    seen: set[str] = set()
    for position, entry in enumerate(document[TRIALS_KEY]):
        problem = _entry_problem(entry, position, seen, list(experiments.REGISTRY))
        if problem:
            raise Malformed(f"{quoted(path)}: trial entry {position} {problem}; restore the file as the pipeline "
                            "wrote it (it is not read otherwise)")


# -- submissions.jsonl ---------------------------------------------------------------------------------------

def _task_problem(task: object) -> str:
    if not isinstance(task, dict):
        return f"a task that is {type(task).__name__}, not an object"
    if not is_job_id(task.get("job_id")):
        return f"a task with job id {task.get('job_id')!r} (accepted: {JOB_ID_WORDS})"
    if not _int_list(task.get("indices")):
        return f"task {task['job_id']} with indices {task.get('indices')!r}, not a list of trial indices"
    if task.get("start_ticks") is not None and not _is_int(task["start_ticks"]):
        return f"task {task['job_id']} with start time {task['start_ticks']!r}, not a number"
    return ""


def _record_problem(record: dict) -> str:
    kind = record.get("kind", "submission")
    if kind == "submission":
        tasks = record.get("tasks")
        if not isinstance(tasks, list):
            return f"a submission whose tasks are {tasks!r}, not a list"
        for task in tasks:
            problem = _task_problem(task)
            if problem:
                return f"a submission with {problem}"
        for key in ("executor", "hostname", "boot_id", "pid_ns", "profile", "profile_path", "folder",
                    "submitted_at"):
            if not isinstance(record.get(key, ""), str):
                return f"a submission whose {key} is {record[key]!r}, not a text"
    elif kind == "launching":
        if not isinstance(record.get("indices"), list) or not all(_int_list(i) for i in record["indices"]):
            return f"a launch whose indices are {record.get('indices')!r}, not lists of trial indices"
    elif kind == "cancel":
        job_ids = record.get("job_ids")
        if not isinstance(job_ids, list) or not all(is_job_id(j) for j in job_ids):
            return f"a cancel whose job ids are {job_ids!r} (accepted: a list of {JOB_ID_WORDS})"
    if not isinstance(record.get("id", ""), str):
        return f"a record whose id is {record['id']!r}, not a text"
    return ""


def check_record(record: dict, path: Path, number: int) -> None:
    """Raise :class:`Malformed`, in one line naming the line, unless ``record`` is as the pipeline writes it."""
    problem = _record_problem(record)
    if problem:
        raise Malformed(f"{quoted(path)} line {number} is {problem}; what it launched cannot be told, so nothing "
                        "is read as empty: restore the line as the pipeline wrote it")
