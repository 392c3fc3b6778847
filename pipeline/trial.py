"""What one array task executes: pick a trial of an expanded grid, run it into its own file.

The output folder holds ``manifest.json`` (the expanded grid with every trial's resolved configuration),
``trials/<trial_id>.h5`` and ``logs/<trial_id>.log``. A trial writes nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .config import ConfigError, TrialConfig, make_trial
from .grid import Grid
from .store import CheckpointClock, TrialFile, git_commit, utc_now

MANIFEST = "manifest.json"


def manifest_entries(trials: list[TrialConfig]) -> list[dict]:
    entries = []
    for index, trial in enumerate(trials):
        settings = dataclasses.asdict(trial)
        entries.append({"index": index, "trial_id": trial.trial_id, "experiment": settings.pop("experiment"),
                        "config": settings})
    return entries


def write_manifest(out_dir: Path, grid: Grid, trials: list[TrialConfig]) -> Path:
    """Write the manifest, or check that the one already there describes the same trials."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST
    entries = manifest_entries(trials)
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("trials") != entries:
            raise ConfigError(
                f"{path} describes a different grid ({existing.get('grid')!r}, {len(existing.get('trials', []))} "
                f"trials); use another --out, or the same grid and --set values as when it was written"
            )
        return path
    document = {"grid": grid.name, "source": grid.source, "description": grid.description,
                "overrides": grid.overrides, "launch": grid.launch, "created_at": utc_now(),
                "git_commit": git_commit(), "num_trials": len(entries), "trials": entries}
    tmp = path.with_name(f"{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1))
    os.replace(tmp, path)  # concurrent tasks may race here; each writes the same content atomically
    return path


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise ConfigError(f"no {MANIFEST} in {out_dir}: not a results folder of this pipeline")
    return json.loads(path.read_text())


def trials_of_manifest(manifest: dict) -> list[TrialConfig]:
    return [make_trial(e["experiment"], e["config"]) for e in manifest["trials"]]


def select(trials: list[TrialConfig], index: int | None = None, trial_id: str | None = None) -> tuple[int, TrialConfig]:
    if trial_id is not None:
        for i, trial in enumerate(trials):
            if trial.trial_id == trial_id:
                return i, trial
        raise ConfigError(f"unknown trial {trial_id!r}; accepted: {trials[0].trial_id} ... {trials[-1].trial_id} "
                          "(see `pipeline plan`)")
    if index is None or not 0 <= index < len(trials):
        raise ConfigError(f"trial index {index} out of range; accepted: 0..{len(trials) - 1}")
    return index, trials[index]


class TrialLog:
    """Appends progress lines to logs/<trial_id>.log and echoes them to stdout (the job log)."""

    def __init__(self, out_dir: Path, trial_id: str):
        self.path = Path(out_dir) / "logs" / f"{trial_id}.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with open(self.path, "a") as handle:
            handle.write(f"{utc_now()} {line}\n")


def _prepared(out_dir: Path, index: int, trial: TrialConfig, **store_options):
    """The trial's log and store, prepared; None if the trial is already complete."""
    log = TrialLog(out_dir, trial.trial_id)
    store = TrialFile(out_dir, trial, index, log=log, **store_options)
    if store.prepare() == "complete":
        log(f"{trial.trial_id}: already complete; skipped (use --force to rerun)")
        return None
    return log, store


def _run_recording_failures(train, entries: list, on_store=None) -> None:
    """Run ``train`` for prepared (trial, log, store) entries; on an error, every trial records it."""
    for _, _, store in entries:
        if on_store is not None:
            on_store(store)  # lets a launcher persist the latest state on preemption
    try:
        train()
    except Exception as error:
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        for trial, log, store in entries:
            log(f"{trial.trial_id}: FAILED: {message}")
            store.mark_failed(message)
        raise


def execute_packed(out_dir: Path, items: list[tuple[int, TrialConfig]], force: bool = False,
                   checkpoint_every_s: float = 60.0, on_store=None) -> dict[str, str]:
    """Run CNN trials that differ only in their seed as one packed training (pipeline.packing), each into
    its own file; complete ones are skipped. Returns trial id -> 'complete' or 'ran'."""
    from .packing import run_packed
    from .runner import run_trial

    outcomes, pending = {}, []
    clock = CheckpointClock(checkpoint_every_s)
    for index, trial in items:
        prepared = _prepared(out_dir, index, trial, force=force, clock=clock)
        if prepared is None:
            outcomes[trial.trial_id] = "complete"
        else:
            pending.append((trial, *prepared))
    for _, log, store in pending:
        store.pack_size = len(pending)  # the seeds actually trained together
        if len(pending) > 1:
            log("training packed with " + ", ".join(t.trial_id for t, _, _ in pending))
    if len(pending) == 1:  # nothing left to pack with
        trial, _, store = pending[0]
        _run_recording_failures(lambda: run_trial(trial, store), pending, on_store)
    elif pending:
        _run_recording_failures(lambda: run_packed([t for t, _, _ in pending], [s for _, _, s in pending]),
                                pending, on_store)
    outcomes.update({trial.trial_id: "ran" for trial, _, _ in pending})
    return outcomes


def execute(out_dir: Path, index: int, trial: TrialConfig, force: bool = False,
            checkpoint_every_s: float = 60.0, on_store=None) -> str:
    """Run (or resume, or skip) one trial; returns 'complete' if it had already finished, else 'ran'."""
    from .runner import run_trial

    prepared = _prepared(out_dir, index, trial, force=force, checkpoint_every_s=checkpoint_every_s)
    if prepared is None:
        return "complete"
    log, store = prepared
    _run_recording_failures(lambda: run_trial(trial, store), [(trial, log, store)], on_store)
    return "ran"
