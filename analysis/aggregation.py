"""Aggregate a results folder into ``OUT/aggregate/``: tables, figures, summary and report.

Reads the manifest and the trial files (never writes to ``trials/``), and rewrites every output on each
run, one atomic file replacement at a time, so re-running after more trials finish updates everything
and a reader never sees a half-written file. Outputs:

    aggregate/epochs.csv     the tidy table of ``analysis.load``
    aggregate/steps.csv      dist_E after single optimizer steps (only if some trial records them)
    aggregate/trials.csv     one row per manifest trial: labels, status, data source, device, end points
    aggregate/summary.csv    per cell: counts by status, whether it learned, median/quartiles of the end points
    aggregate/summary.md     the same, readable, with every trial that is not complete
    aggregate/<table>.parquet  every CSV table also as Parquet (typed columns, read fast by pandas or pyarrow)
    aggregate/report.md      the verdicts with evidence, data and devices, criteria, figures, provenance
    aggregate/figures/       see ``analysis.figures``
    aggregate/provenance/    the installed packages of the trials and the diffs of dirty trees they ran with

Outputs of an earlier run that this one no longer makes (a figure of a cell gone, ``steps.csv`` of another
grid state) are removed if the pipeline's own record says it wrote them and they are inside the results
folder (``analysis.outputs``): a folder linked in, such as ``figures/`` into a paper, keeps every file of its
own. One aggregate writes a folder's outputs at a time (``OUT/.aggregate.lease``); another waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import results_analyses
from analysis.atomic import replace_atomically, write_text
from analysis.claim_checker import evaluate_claims
from analysis.claims import MIN_COMPLETE_TRIALS, Note, Verdict
from analysis.figures import FigureInfo, make_figures
from analysis.loading import read_results
from analysis.outputs import Outputs
from analysis.provenance import provenance_files
from analysis.report import problem_lines, report_markdown, summary_markdown
from analysis.summary import summarize, trial_end_points
from pipeline import folder as folder_names
from pipeline.folder import ResultsFolder
from pipeline.leases.ownership import Busy, Lease
from pipeline.settings import quoted
from pipeline.trialfile.manifest import read_manifest

LOGGED_PROBLEMS = 10
# How long an aggregate waits for another one of the same folder (a large grid's figures take minutes).
GUARD_WAIT_S = 3600.0
GUARD_POLL_S = 1.0


@dataclass
class AggregateResult:
    out_dir: Path
    paths: list[Path]  # every file written, in order
    verdicts: list[Verdict]
    problems: list[str]  # one line per trial that is not complete, and stray files in trials/
    figures: dict[str, FigureInfo] = field(default_factory=dict)
    summary: pd.DataFrame | None = None
    notes: list[Note] = field(default_factory=list)  # cells about which no claim is judged

    @property
    def verdict_lines(self) -> list[str]:
        return [v.line for v in self.verdicts]

    @property
    def report(self) -> Path:
        return ResultsFolder(self.out_dir).report


def _write_table(path: Path, table: pd.DataFrame) -> list[Path]:
    """A table as CSV and, beside it, as Parquet (``<name>.parquet``): the same rows and columns, typed."""
    return [replace_atomically(path, lambda handle: table.to_csv(handle, index=False), text=True),
            replace_atomically(path.with_suffix(".parquet"),
                               lambda handle: _parquet(table).to_parquet(handle, index=False))]


def _parquet(table: pd.DataFrame) -> pd.DataFrame:
    """Columns of mixed Python types (a swept setting that is a number in one trial, "" where it does not
    apply) as text, which Parquet's one type per column needs; every other column keeps its type."""
    mixed = [c for c in table.columns if table[c].dtype == object
             and len({type(v) for v in table[c].dropna()}) > 1]
    return table.astype({c: str for c in mixed}) if mixed else table


def _hold_guard(out_dir: Path, log: Callable[[str], object], wait_s: float = GUARD_WAIT_S) -> Lease:
    """The folder's aggregate guard, waiting (and saying so once) while another aggregate holds it."""
    what = f"the aggregate of {quoted(out_dir)}"
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            return Lease.acquire(ResultsFolder(out_dir).aggregate_guard, what)
        except Busy as busy:
            if time.monotonic() >= deadline:
                raise
            if not said:
                log(f"aggregate: waiting for another aggregate of this folder to finish ({busy})")
                said = True
            time.sleep(GUARD_POLL_S)


def aggregate(out_dir: Path | str, log: Callable[[str], object] = print, min_complete: int = MIN_COMPLETE_TRIALS,
              figures: bool = True) -> AggregateResult:
    """Read ``out_dir``, write ``out_dir/aggregate/``, return the paths written and the verdicts.
    ``figures=False`` leaves the figures of an earlier run as they are and reports none: the verdicts of
    a large grid in seconds."""
    out_dir = Path(out_dir)
    read_manifest(out_dir)  # a folder that is not a results folder says so before anything is held
    guard = _hold_guard(out_dir, log)
    try:
        return _aggregate(out_dir, log, min_complete, figures)
    finally:
        guard.release()


def _aggregate(out_dir: Path, log: Callable[[str], object], min_complete: int, figures: bool) -> AggregateResult:
    outputs = Outputs(out_dir)
    results = read_results(out_dir)
    problems = problem_lines(results)
    counts = results.trials["status"].value_counts()
    log(f"aggregate: {int(counts.get('complete', 0))} of {len(results.trials)} trials complete in {quoted(out_dir)}"
        + "".join(f", {int(n)} {status}" for status, n in counts.items() if status != "complete"))
    # A large grid in progress has hundreds of missing trials: the report lists them all.
    for line in problems[:LOGGED_PROBLEMS]:
        log(f"aggregate: {line}")
    if len(problems) > LOGGED_PROBLEMS:
        log(f"aggregate: ... and {len(problems) - LOGGED_PROBLEMS} more, listed in "
            f"{folder_names.AGGREGATE}/{folder_names.REPORT}")

    end_points = trial_end_points(results)
    if not results.measurements.empty:
        # What trials measured at A* (Experiment S) is what its claims are judged on.
        known = set(end_points.columns) | set(results.trials.columns) | {"status"}
        measured = results.measurements.drop(columns=[c for c in results.measurements.columns
                                                      if c in known and c != "trial_id"])
        end_points = end_points.merge(measured, on="trial_id", how="left")
    summary = summarize(results, end_points)
    assessment = evaluate_claims(results.trials, end_points, min_complete)

    where = ResultsFolder(out_dir)
    folder = where.aggregate
    paths = _write_table(folder / "epochs.csv", results.epochs)
    if not results.steps.empty:
        paths += _write_table(folder / "steps.csv", results.steps)
    # The settings JSON closes each row: a complete record, but long, so after the columns one reads.
    trials = results.trials.merge(end_points, on="trial_id", how="left")
    trials = trials[[c for c in trials.columns if c != "settings"] + ["settings"]]
    paths += _write_table(folder / "trials.csv", trials)
    paths += _write_table(folder / "summary.csv", summary)
    for name, table in {"measurements": results.measurements, **results.tables}.items():
        if not table.empty:
            paths += _write_table(folder / f"{name}.csv", table)
    named = results_analyses.named_by(results)
    for analysis in named:
        for name, table in analysis.tables.items():
            paths += _write_table(folder / f"{name}.csv", table(results))

    made = None
    if figures:
        extra = {name: figure for analysis in named for name, figure in analysis.figures(results).items()}
        made = make_figures(results.epochs, results.steps, results.trials, where.figures, extra=extra)
        paths += [p for info in made.values() for p in info.paths]

    for name, text in provenance_files(results).items():
        paths.append(write_text(where.provenance / name, text))
    paths.append(write_text(folder / "summary.md", summary_markdown(results, summary)))
    paths.append(write_text(where.report, report_markdown(results, assessment, summary, made, min_complete)))
    # Without figures, those of an earlier run stay as they are, and stay recorded as the pipeline's.
    outputs.finish(paths, log, keep=() if figures else (folder_names.FIGURES,))
    log(f"aggregate: wrote {len(paths)} files under {quoted(folder)}")
    return AggregateResult(out_dir, paths, assessment.verdicts, problems, made or {}, summary, assessment.notes)
