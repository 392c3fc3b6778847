"""Markdown documents of an aggregation: ``summary.md`` (the numbers) and ``report.md`` (the claims).

Both list every trial of the manifest that is not complete, with what is known about it: a grid is
never reported as if the missing part did not exist.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from . import claims
from .figures import FigureInfo
from .loading import Results
from .summary import END_POINTS, STATUSES


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.3g}"


def _spread(row: pd.Series, column: str) -> str:
    """'median [q25, q75]' of one end point."""
    median = row[f"{column}_median"]
    if not np.isfinite(median):
        return "–"
    return f"{_number(median)} [{_number(row[f'{column}_q25'])}, {_number(row[f'{column}_q75'])}]"


def _setting(row) -> str:
    return row["group"] if row["experiment"] == "groups" else row["config"]


def problem_lines(results: Results) -> list[str]:
    """One line per trial that is not complete, then the other files of trials/ worth knowing about."""
    lines = []
    # The ones needing attention first: a damaged or failed trial matters more than one not yet run.
    severity = {status: rank for rank, status in enumerate(("damaged", "inconsistent", "failed", "running", "missing"))}
    problems = results.trials[results.trials["status"] != "complete"]
    problems = problems.iloc[problems["status"].map(severity).fillna(len(severity)).argsort(kind="stable")]
    for row in problems.itertuples():
        done = int(row.epochs_done)
        progress = f"{done}/{int(row.total_epochs)} epochs" if done >= 0 else "no epoch written yet"
        detail = {
            "missing": f"missing: no file {row.file}",
            "damaged": f"damaged: unreadable file {row.file} ({row.error}); skipped",
            "running": f"incomplete (running or interrupted): {progress}",
            "failed": f"incomplete (failed): {progress}; last error: {row.error or 'not recorded'}",
            "inconsistent": f"skipped: {row.error}",
        }.get(row.status, f"{row.status}: {progress}")
        lines.append(f"{row.trial_id}: {detail}")
    lines += [f"trials/{name}: not in manifest.json; ignored" for name in results.unexpected_files]
    lines += [f"trials/{name}: a damaged file the pipeline set aside before restarting its trial"
              for name in results.set_aside_files]
    return lines


def _trial_counts(results: Results) -> str:
    counts = results.trials["status"].value_counts()
    parts = [f"{int(counts[s])} {s}" for s in STATUSES if counts.get(s, 0)]
    return f"{len(results.trials)} trials in the manifest: " + ", ".join(parts)


def _problems_section(results: Results) -> str:
    lines = problem_lines(results)
    text = "\n".join(f"- {line}" for line in lines) if lines else "None: every trial of the manifest is complete."
    if results.checkpoint_files:
        text += (f"\n\n{len(results.checkpoint_files)} checkpoint file(s) (`*.state.pt`) in trials/: trials that "
                 "are running or were interrupted and will resume.")
    return text


def summary_markdown(results: Results, summary: pd.DataFrame) -> str:
    headers = ["experiment", "group / config", "mode", "complete / expected", "running", "failed", "damaged",
               "missing", *END_POINTS.values()]
    rows = [[r["experiment"], _setting(r), r["mode"], f"{r['complete']} / {r['expected']}", r["running"], r["failed"],
             r["damaged"], r["missing"], *(_spread(r, column) for column in END_POINTS)]
            for _, r in summary.iterrows()]
    return "\n\n".join([
        f"# Summary: grid `{results.manifest.get('grid', '?')}`",
        f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from `{results.out_dir}`. "
        + _trial_counts(results) + ".",
        "Statistics are over complete trials only, as median [25th percentile, 75th percentile] over seeds "
        "(the interquartile range is their difference). dist_E and the distance travelled are totals over the "
        "measured layers (Frobenius norms of the whole weight set). For Experiment C the distance travelled is "
        "counted from the start of phase 2.",
        markdown_table(headers, rows),
        "## Trials that are not complete",
        _problems_section(results),
    ]) + "\n"


def provenance(results: Results) -> dict:
    readable = results.trials[~results.trials["status"].isin(["missing", "damaged"])]
    kinds = readable["device"].map(_device_kind)
    # Seeds trained together in one packed process share its wall time: each counts its share.
    hours = (readable["wall_seconds"] / readable["pack_size"] / 3600).groupby(kinds).sum().to_dict()
    return {
        "grid": results.manifest.get("grid", ""), "source": results.manifest.get("source", ""),
        "description": results.manifest.get("description", ""), "overrides": results.manifest.get("overrides", {}),
        "created_at": results.manifest.get("created_at", ""),
        "manifest_git_commit": results.manifest.get("git_commit", ""),
        "num_trials": int(results.manifest.get("num_trials", len(results.trials))),
        "git_commits": readable["git_commit"].value_counts().to_dict(),
        "devices": readable["device"].value_counts().to_dict(),
        "hostnames": readable["hostname"].value_counts().to_dict(),
        "hours_by_device": hours,
        "gpu_hours": float(sum(h for kind, h in hours.items() if kind != "cpu")),
        "cpu_hours": float(hours.get("cpu", 0.0)),
    }


def _device_kind(device: str) -> str:
    """'cuda:0 (NVIDIA A40)' -> 'NVIDIA A40'; 'cpu' -> 'cpu'."""
    if "(" in device:
        return device[device.index("(") + 1:device.rindex(")")]
    return device.split(":")[0] or "unknown"


def _counted(mapping: dict) -> str:
    return ", ".join(f"`{k}` ({v})" for k, v in mapping.items()) or "none recorded"


def _provenance_section(info: dict) -> str:
    overrides = ", ".join(f"`{k}={v}`" for k, v in info["overrides"].items()) or "none"
    hours = ", ".join(f"{kind}: {h:.3g} h" for kind, h in info["hours_by_device"].items()) or "none"
    return "\n".join([
        f"- Grid: `{info['grid']}` ({info['source']}): {info['description']}",
        f"- Overrides: {overrides}",
        f"- Manifest written {info['created_at']} at commit `{info['manifest_git_commit']}`; "
        f"{info['num_trials']} trials",
        f"- Trial commits: {_counted(info['git_commits'])}",
        f"- Devices: {_counted(info['devices'])}",
        f"- Hosts: {_counted(info['hostnames'])}",
        f"- Wall-clock time of the readable trials (all attempts): GPU {info['gpu_hours']:.3g} h, "
        f"CPU {info['cpu_hours']:.3g} h; by device: {hours}. Summed over trials from each file's "
        "`wall_seconds`, divided by `pack_size` for seeds trained together in one packed process.",
    ])


def _criteria_section(min_complete: int) -> str:
    thresholds = ", ".join(f"{dtype}: {value:g}" for dtype, value in claims.ROUNDOFF_THRESHOLD.items())
    return "\n".join([
        "Per complete trial, with totals over the measured layers: rel = dist_E / ‖A‖ and "
        "ratio = dist_E / dist_init (dist_init: the distance travelled; for Experiment C from the start of phase 2). "
        "Every criterion applies to the median over the seeds of a cell (one group or configuration, one mode).",
        "",
        f"- *Stays in E* (Equi; Aug with orbit augmentation; CNN `cross` in phase 2; CNN phase 1): the median of the "
        f"largest rel over the epochs concerned ≤ `ROUNDOFF_THRESHOLD` ({thresholds}; the trial's dtype). Judged "
        "relative to ‖A‖ because round-off in ‖A − Π_E A‖ scales with ‖A‖, not with the distance travelled.",
        f"- *Aug (sampled) leaves E less than Nom*: median final ratio of Aug < that of Nom (same group).",
        f"- *Nom leaves E at a rate comparable to the distance travelled*: median final ratio ≥ `NOM_MIN_RATIO` "
        f"= {claims.NOM_MIN_RATIO:g}.",
        f"- *Aug leaves E* (CNN `skew`, `nonunitary`): median final ratio ≥ `LEAVES_E_MIN_RATIO` = "
        f"{claims.LEAVES_E_MIN_RATIO:g} and median final rel > `ROUNDOFF_THRESHOLD`, so that round-off is never "
        "read as leaving E.",
        f"- A verdict needs at least `MIN_COMPLETE_TRIALS` = {min_complete} complete trials in every cell it reads; "
        "otherwise it is \"not enough complete trials\".",
        "- Not assessed by this grid: claim 1 (the equivariant stationary points of Equi and Aug coincide) and "
        "claim 3 (stability can differ): the measurements are trajectories, not stationary points or their "
        "Hessians.",
    ])


def report_markdown(results: Results, verdicts: list[claims.Verdict], figures: dict[str, FigureInfo],
                    min_complete: int) -> str:
    made = {f"{name}.png" for name in figures}
    verdict_rows = [[v.subject, v.claim, v.science, f"**{v.outcome}**", v.evidence,
                     f"`{v.figure}`" if v.figure in made else "–"] for v in verdicts]
    held = sum(v.outcome == claims.HOLDS for v in verdicts)
    failed = sum(v.outcome == claims.FAILS for v in verdicts)
    figure_lines = [f"- `{name}.png` / `.pdf` ({info.panels} panels): {info.caption}" for name, info in figures.items()]
    shown = [name for name in ("groups_dist_vs_travelled", "groups_dist_vs_travelled_log", "cnn_dist_vs_epoch",
                               "cnn_phase2_steps") if name in figures]
    sections = [
        f"# Report: grid `{results.manifest.get('grid', '?')}`",
        f"Generated {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from `{results.out_dir}`. "
        + _trial_counts(results) + ". Statistics and figures use complete trials only; the others are listed below.",
        "## Verdicts",
        f"{held} hold, {failed} do not hold, {len(verdicts) - held - failed} lack complete trials "
        "(claims refer to SCIENCE.md).",
        markdown_table(["subject", "claim", "source", "verdict", "evidence", "figure"], verdict_rows)
        if verdicts else "No claim applies to the cells of this grid.",
        "## Criteria",
        _criteria_section(min_complete),
        "## Trials that are not complete",
        _problems_section(results),
        "## Figures",
        "In `figures/`; statistics per cell are in `summary.md` and `summary.csv`.\n\n"
        + ("\n".join(figure_lines) if figure_lines else "None: no experiment has complete trials yet."),
        "\n\n".join(f"![{figures[name].caption}](figures/{name}.png)" for name in shown),
        "## Provenance",
        _provenance_section(provenance(results)),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"
