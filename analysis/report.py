"""Markdown documents of an aggregation: ``summary.md`` (the numbers) and ``report.md`` (the claims).

The report is meant to be read on its own, away from the code: it cites the paper and the sections of
``docs/science.md`` (by their path in the pipeline's repository and their anchors), says what data and
devices the trials used, which cells did not learn, and embeds every figure with its caption. Both
documents list every trial of the manifest that is not complete: a grid is never reported as if the
missing part did not exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis import claims, results_analyses
from analysis.claim_checker import COMBINATIONS
from analysis.figures import FigureInfo
from analysis.loading import Results, experiment_of
from analysis.paper_claims import ClaimRow, claim_rows, grouped
from analysis.provenance import data_sources, devices, provenance, provenance_files, software
from analysis.science import PAPER, PAPER_SHORT, SCIENCE, SECTIONS, cite, section_ref
from analysis.summary import END_POINTS, LEARNING_MIN_FACTOR, STATUSES
from analysis.tables import markdown_table
from pipeline import folder

WARNING = "⚠"


def _number(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.3g}"


def _spread(row: pd.Series, column: str) -> str:
    """'median [q25, q75]' of one end point."""
    median = row[f"{column}_median"]
    if not np.isfinite(median):
        return "–"
    return f"{_number(median)} [{_number(row[f'{column}_q25'])}, {_number(row[f'{column}_q75'])}]"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def problem_lines(results: Results) -> list[str]:
    """One line per trial that is not complete, then the other files of trials/ worth knowing about."""
    lines = []
    # The ones needing attention first: a damaged or failed trial matters more than one not yet run.
    order = ("damaged", "inconsistent", "failed", "cancelled", "running", "missing")
    severity = {status: rank for rank, status in enumerate(order)}
    problems = results.trials[results.trials["status"] != "complete"]
    problems = problems.iloc[problems["status"].map(severity).fillna(len(severity)).argsort(kind="stable")]
    for row in problems.itertuples():
        done = int(row.epochs_done) if pd.notna(row.epochs_done) else -1
        total = int(row.total_epochs) if pd.notna(row.total_epochs) else "?"
        progress = f"{done}/{total} epochs" if done >= 0 else "no epoch written yet"
        detail = {
            "missing": f"missing: no file {row.file}",
            "damaged": f"damaged: unreadable file {row.file} ({row.error}); skipped",
            "running": f"incomplete (running or interrupted): {progress}",
            "failed": f"incomplete (failed): {progress}; last error: {row.error or 'not recorded'}",
            "cancelled": f"incomplete (cancelled): {progress}",
            "inconsistent": f"skipped: {row.error}",
        }.get(row.status, f"{row.status}: {progress}")
        # Errors may quote the file by its absolute path: the report names files relative to the folder.
        lines.append(f"{row.trial_id}: {detail}".replace(f"{results.out_dir}/", ""))
    lines += [f"{folder.TRIALS}/{name}: not in {folder.MANIFEST}; ignored" for name in results.unexpected_files]
    lines += [f"{folder.TRIALS}/{name}: a damaged file the pipeline set aside before restarting its trial"
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


def _cell_name(row: Mapping[str, Any]) -> str:
    return f"{row['cell']}, {row['series']}"


def summary_markdown(results: Results, summary: pd.DataFrame) -> str:
    headers = ["experiment", "cell, series", "complete / expected", "running", "failed", "damaged", "missing",
               *END_POINTS.values()]
    rows = [[r["experiment"], _cell_name(r) + (f" {WARNING} did not learn" if r["not_learning"] else ""),
             f"{r['complete']} / {r['expected']}", r["running"], r["failed"], r["damaged"], r["missing"],
             *(_spread(r, column) for column in END_POINTS)] for _, r in summary.iterrows()]
    return "\n\n".join([
        f"# Summary: grid `{results.manifest.get('grid', '?')}`",
        f"Generated {_now()} from the results folder `{results.out_dir.name}`. " + _trial_counts(results) + ".",
        "Statistics are over complete trials only, as median [25th percentile, 75th percentile] over seeds "
        "(the interquartile range is their difference). Distances are totals over the measured layers (Frobenius "
        "norms of the whole weight set). For a multi-phase experiment the distance travelled is counted from the "
        f"start of the last phase. {WARNING} marks cells whose median final training accuracy is below "
        f"{LEARNING_MIN_FACTOR:g} × chance.",
        markdown_table(headers, rows),
        "## Trials that are not complete",
        _problems_section(results),
    ]) + "\n"


# -- the report ----------------------------------------------------------------------------------------

def _not_learning(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["not_learning"]]


def _first_section(results: Results, summary: pd.DataFrame, figures: dict[str, FigureInfo] | None) -> str:
    sources = data_sources(results)
    if len(sources) == 1:
        data = f"- **Data.** Every trial trained on {sources['source'].iloc[0]}."
    elif len(sources):
        data = "- **Data.** The trials do not share one data source:\n" + "\n".join(
            f"  - {row.source}: {row.trials} trials ({row.experiments})" for row in sources.itertuples())
    else:
        data = "- **Data.** No trial file could be read yet."
    probes = _probes(summary)
    lazy = _not_learning(summary)
    if len(lazy):
        rows = [[r["experiment"], _cell_name(r), _number(r["final_accuracy_median"]), _number(r["chance_accuracy"]),
                 r["complete"]] for _, r in lazy.iterrows()]
        table = markdown_table(["experiment", "cell, series", "median final accuracy", "chance", "complete trials"],
                               rows)
        learning = (f"- **{WARNING} Cells that did not learn.** In {len(lazy)} of {len(summary)} cells the median final "
                    f"training accuracy is below {LEARNING_MIN_FACTOR:g} × chance. Their distances describe networks "
                    "that have not fitted the data: they test the dynamics near A⁰, not the trained behaviour the "
                    "paper reports; their verdicts are marked in the table below.\n\n"
                    + "\n".join("  " + line for line in table.splitlines()))
    elif (summary["meant_to_learn"] & (summary["complete"] > 0)).any():
        learning = (f"- **Learning.** Every cell meant to learn with complete trials reached a median final training "
                    f"accuracy of at least {LEARNING_MIN_FACTOR:g} × chance.")
    else:
        learning = ""
    incomplete = int((results.trials["status"] != "complete").sum())
    running = sum(info.running for info in (figures or {}).values())
    progress = (f"- **Completeness.** {incomplete} of {len(results.trials)} trials are not complete (listed below); "
                "statistics and verdicts use complete trials only"
                + ("; figures also draw running trials, dashed up to their last epoch." if running else ".")
                if incomplete else "- **Completeness.** Every trial of the manifest is complete.")
    return "\n".join(line for line in [data, *probes, learning, progress] if line)


def _probes(summary: pd.DataFrame) -> list[str]:
    """A line per experiment some of whose cells are probes of the dynamics near A⁰, not training runs: what
    they are, so that their accuracy near chance is read as intended rather than as a failure."""
    lines = []
    for experiment, part in summary.groupby("experiment", sort=False):
        probes = part[~part["meant_to_learn"]]
        words = experiment_of(experiment).probe_words()
        if len(probes) and words:
            lines.append(f"- **{experiment_of(experiment).display_title()}: {len(probes)} of {len(part)} cells are "
                         f"probes, not training runs.** {words}")
    return lines


def _verdicts_table(verdicts: list[claims.Verdict], figures: dict[str, FigureInfo] | None,
                    summary: pd.DataFrame) -> str:
    made = {f"{name}.png" for name in figures} if figures is not None else set()
    lazy = {(r["experiment"], r["cell"], r["mode"], r["swept"]) for _, r in _not_learning(summary).iterrows()}
    rows = []
    for v in verdicts:
        subject = v.subject + (f" {WARNING} did not learn" if v.cell in lazy else "")
        figure = (f"[{v.figure}]({folder.FIGURES}/{v.figure})" if v.figure in made
                  else f"`{v.figure}` (not drawn in this run)" if figures is None else "–")
        rows.append([subject, v.claim, v.science, f"**{v.outcome}**", v.evidence, figure])
    return markdown_table(["subject", "claim", "source", "verdict", "evidence", "figure"], rows,
                          flag_large_numbers=True)


def _criteria_section(min_complete: int) -> str:
    thresholds = ", ".join(f"{dtype}: {value:g}" for dtype, value in claims.ROUNDOFF_THRESHOLD.items())
    return "\n".join([
        f"As in {cite('7')}. Per complete trial, with totals over the measured layers: the *distance from E "
        "relative to the weight norm*, rel = dist_E / ‖A‖, and the *distance from E per unit distance "
        "travelled*, ratio = dist_E / dist_init (dist_init is the distance travelled; for a multi-phase "
        "experiment, from the start of the current phase). Every criterion applies to the median over the seeds "
        "of a cell (one experiment, cell, mode and set of swept settings).",
        "",
        f"- *Stays in E*: the median of the largest rel over the epochs concerned (every epoch, or one phase) ≤ "
        f"`ROUNDOFF_THRESHOLD` ({thresholds}; the trials' dtype). Judged relative to ‖A‖ because round-off in "
        "‖A − Π_E A‖ scales with ‖A‖, not with the distance travelled.",
        "- *Leaves E less than a reference cell* (sampled Aug against Nom): median final ratio below the "
        "reference's.",
        f"- *Leaves E*: median final ratio ≥ a named minimum, `NOM_MIN_RATIO` = {claims.NOM_MIN_RATIO:g} for Nom "
        f"(\"at a rate comparable to the distance travelled\") or `LEAVES_E_MIN_RATIO` = "
        f"{claims.LEAVES_E_MIN_RATIO:g} for Aug without the premises of claim 2, which must also have median "
        "final rel > `ROUNDOFF_THRESHOLD`, so that round-off is never read as leaving E.",
        f"- A verdict needs at least `MIN_COMPLETE_TRIALS` = {min_complete} complete trials in every cell it reads; "
        "otherwise it is \"not enough complete trials\".",
        f"- A cell *did not learn* when its median final training accuracy is below {LEARNING_MIN_FACTOR:g} × chance "
        "(chance: 1 / number of classes, 0.1 for ten digits). This does not change a verdict; it says how to read it.",
        f"- Two claims concern stationary points and Hessians, not trajectories: claim 1 (the equivariant stationary "
        f"points of Equi and Aug coincide) and claim 3 (their stability can differ), {cite('1')}; Experiment S "
        f"measures them ({cite('5')}). *Claim 1* holds in a network when ‖∇R_aug − Π_E∇R‖ ≤ `IDENTITY_THRESHOLD` = "
        f"{claims.IDENTITY_THRESHOLD:g} × ‖∇R‖ at A⁰ and at A* (median over seeds; relative to ‖∇R‖ because the "
        "sums carry round-off of that scale, while ‖∇R_aug‖ nearly vanishes at A*), and overall when it holds in "
        "every network whose premises hold; where they fail it must be off by at least `IDENTITY_FAILS_MIN` = "
        f"{claims.IDENTITY_FAILS_MIN:g} of ‖∇R_aug‖ at A⁰. *Claim 3* is demonstrated in a network when one of its "
        "trials shows all four of: (i) A* is stationary on the scale of the curvature judged, ‖Π_E∇R‖ ≤ "
        f"`STATIONARITY_TOLERANCE` = {claims.STATIONARITY_TOLERANCE:g} × |λ| × ‖A*‖, |λ| the smallest of "
        "|λ_min(H_⊥)| and λ_min(H_E) where that is clearly above zero (a gradient g is a slope of length g/|λ| "
        "along that eigenvector; a degenerate point, where every such curvature is at round-off, and the zero point "
        "A* = 0 are named, not divided by); (ii) H_E certified ⪰ 0, a zero eigenvalue allowed: only the dense "
        "spectrum of H_E, formed in an orthonormal basis of E, certifies it (a Ritz value bounds λ_min from above "
        "only), its lowest eigenvalue minus the round-off of the formed matrix "
        f"≥ −`PSD_TOLERANCE` × λ_max ({claims.PSD_TOLERANCE:g}); (iii) H_⊥ certified "
        "negative by a clear gap: its lowest Ritz value (the Rayleigh quotient of a vector of E⊥, with its residual "
        "computed), an upper bound of λ_min(H_⊥), below −`SPECTRAL_GAP` = "
        f"{claims.SPECTRAL_GAP:g} times every bound in play (any negative part of H_E, the residual of H_⊥'s Ritz "
        f"pair, and `HESSIAN_ROUNDOFF` = {claims.HESSIAN_ROUNDOFF:g} × λ_max); (iv) the perturbation along the "
        "lowest E⊥ eigenvector, anchored at A*, grows at the predicted rate (log-factors within "
        f"`GROWTH_TOLERANCE` = {claims.GROWTH_TOLERANCE:.0%}). Otherwise it is not observed, with the reasons in "
        "words and the spectra shown either way. The detector is validated on two controls, where the answer is "
        "known: `toy-z2` (claim 3 holds provably) must give *demonstrated*, `toy-linear` (a convex model) *not "
        "observed*. Each search for A* ends by its criterion (stationary on the curvature scale, on estimates), a "
        "certified stall or its budget, on its best iterate; the tables of Experiment S say which, trial by trial, "
        "and count seeds that ended at one point once.",
    ])


def _data_section(results: Results) -> str:
    """Trials per data source, from the trial files' ``data_source`` (per trial in ``trials.csv``)."""
    sources = data_sources(results)
    if sources.empty:
        return "No trial file could be read yet."
    return markdown_table(["data the trials trained on", "trials", "experiments"],
                          [[row.source, row.trials, row.experiments] for row in sources.itertuples()])


def _devices_section(results: Results) -> str:
    table = devices(results)
    if table.empty:
        return "No trial file could be read yet."
    rows = [[row.kind, row.trials, int(row.complete), f"{row.hours:.3g}"] for row in table.itertuples()]
    return (markdown_table(["device", "trials", "complete", "wall-clock hours"], rows)
            + "\n\nHours are summed from each file's `wall_seconds` over all attempts, divided by `pack_size` for "
              "seeds trained together in one packed process. The device of every trial is the `device` column of "
              "`trials.csv`.")


def _figures_section(figures: dict[str, FigureInfo] | None) -> str:
    if figures is None:
        return ("Not drawn in this run (figures were switched off); `figures/` may still hold those of an earlier "
                "run, which need not match these tables.")
    if not figures:
        return "None: no experiment has complete or running trials yet."
    blocks = []
    for number, (name, info) in enumerate(figures.items(), 1):
        where = folder.FIGURES
        blocks.append(f"**Figure {number}: `{name}`** ([PNG]({where}/{name}.png), [PDF]({where}/{name}.pdf)). "
                      f"{info.caption}\n\n![Figure {number}: {name}]({where}/{name}.png)")
    return "\n\n".join(blocks)


def _provenance_section(info: dict, soft: dict | None = None, files: list[str] | None = None) -> str:
    def counted(mapping: dict) -> str:
        return ", ".join(f"`{k}` ({v})" for k, v in mapping.items()) or "none recorded"

    overrides = ", ".join(f"`{k}={v}`" for k, v in info["overrides"].items()) or "none"
    hours = ", ".join(f"{kind}: {h:.3g} h" for kind, h in info["hours_by_device"].items()) or "none"
    grown = f"; grown {info['grown']} time(s) by later grids" if info["grown"] else ""
    return "\n".join([
        f"- Grid: `{info['grid']}`, from {info['source']}: {info['description']}",
        f"- Overrides: {overrides}",
        f"- Manifest written {info['created_at']} at commit `{info['manifest_git_commit']}`; "
        f"{info['num_trials']} trials{grown}",
        f"- Trial commits: {counted(info['git_commits'])}",
        f"- Devices: {counted(info['devices'])}",
        f"- Hosts: {counted(info['hostnames'])}",
        f"- Wall-clock time of the readable trials (all attempts): GPU {info['gpu_hours']:.3g} h, "
        f"CPU {info['cpu_hours']:.3g} h; by device: {hours}.",
        *(_software_lines(soft, files or []) if soft is not None else []),
    ])


def _software_lines(soft: dict, files: list[str]) -> list[str]:
    """What the trials ran with (each value with its number of trials), as their files recorded it."""
    def counted(mapping: dict) -> str:
        return ", ".join(f"`{k}` ({v})" for k, v in mapping.items()) or "none recorded"

    packages = [f"[{name}]({folder.PROVENANCE}/{name})" for name in files if name.startswith("packages-")]
    lines = [
        f"- Python: {counted(soft['python'])}",
        f"- torch / CUDA / cuDNN: {counted(soft['torch'])}",
        f"- NVIDIA driver: {counted(soft['drivers'])}",
        f"- Device models: {counted(soft['models'])}",
        f"- Data files read (sha256): {counted(soft['data_files'])}",
        f"- Installed packages: {', '.join(packages) if packages else 'none recorded'}"
        + (" (the trials ran with different package lists)" if len(packages) > 1 else ""),
        "- Uncommitted changes: " + (", ".join(f"[`{d}`]({folder.PROVENANCE}/diff-{d[:12]}.patch) ({n} trials)"
                                            for d, n in soft["diffs"].items())
                                     if soft["diffs"] else "none (every trial ran committed code)"),
    ]
    if soft["unrecorded"]:
        lines.append(f"- {soft['unrecorded']} trial file(s) written before this provenance was recorded")
    return lines


def _references_section() -> str:
    sections = "\n".join(f"  - §{number} {heading.split('. ', 1)[-1]}: `{section_ref(number)}`"
                         for number, heading in SECTIONS.items())
    return "\n".join([
        f"- {PAPER}",
        f"- `{SCIENCE}` in the pipeline's repository: the project's account of the science, the claims and how "
        "they are judged. Sections:",
        sections,
    ])


def _claims_table(rows: list[ClaimRow]) -> str:
    return markdown_table(["claim (docs/science.md §1)", "verdict", "evidence", "caveat"],
                          [[f"**{r.claim}**: {r.statement}", f"**{r.verdict}**", r.evidence, r.caveat or "–"]
                           for r in rows], flag_large_numbers=True)


def _controls_table(verdicts: list[claims.Verdict]) -> str:
    rows = [[v.subject, v.claim, f"**{v.outcome}**", "as expected" if v.as_expected else f"{WARNING} expected "
             f"{v.expected}: the detector is broken", v.evidence] for v in verdicts]
    return markdown_table(["control", "what the detector must say", "verdict", "", "evidence"], rows)


def report_markdown(results: Results, assessment: claims.Assessment, summary: pd.DataFrame,
                    figures: dict[str, FigureInfo] | None, min_complete: int) -> str:
    """``figures``: the figures drawn, or None when this run drew none."""
    verdicts = assessment.verdicts
    groups = grouped(verdicts)
    named = results_analyses.named_by(results)
    after_training = [(analysis.heading, analysis.section(results, figures)) for analysis in named]
    measured = pd.concat([analysis.trial_table(results) for analysis in named]) if named else pd.DataFrame()
    reasons_in_words = named[0].reasons_in_words if named else None
    notes = "\n".join(f"- {note.line}" for note in assessment.notes) or "None: every cell has a claim."
    by_cell = [v for v in groups["claims"] if v.kind not in COMBINATIONS]
    sections = [
        f"# Reproduction report: grid `{results.manifest.get('grid', '?')}`",
        f"This report tests, on the results folder `{results.out_dir.name}`, the claims of *Optimization Dynamics "
        f"of Equivariant and Augmented Neural Networks* ({PAPER_SHORT}), as the pipeline's account of the science "
        f"states them: `{SCIENCE}` in the pipeline's repository (paths below are relative to its root; sections are "
        f"cited with their anchors, e.g. `{section_ref('1')}`). Generated {_now()}. " + _trial_counts(results) + ".",
        "## The paper's claims",
        "One row per claim: what this grid shows, judged from every experiment that bears on it (the cell-by-cell "
        "verdicts follow below; the criteria are at the end).",
        _claims_table(claim_rows(verdicts, measured, reasons_in_words)),
        "## Read this first",
        _first_section(results, summary, figures),
        "## The claims, cell by cell",
        _verdicts_table(by_cell, figures, summary) if by_cell else "No claim of the paper applies to this grid's cells.",
        "### Checks that hold by construction" if groups["construction"] else "",
        ("Equi restricts every step to E, so these hold whatever the data; they check the pipeline's projections "
         "and its arithmetic, not the paper." if groups["construction"] else ""),
        _verdicts_table(groups["construction"], figures, summary) if groups["construction"] else "",
        "### Controls of the claim-3 detector" if groups["controls"] else "",
        ("Models where the answer is known (docs/science.md §5): a detector that does not say *demonstrated* on the "
         "first, or says it on the second, is broken." if groups["controls"] else ""),
        _controls_table(groups["controls"]) if groups["controls"] else "",
        "### Comparisons with the expected picture" if groups["comparisons"] else "",
        _verdicts_table(groups["comparisons"], figures, summary) if groups["comparisons"] else "",
        "### Cells without a claim",
        notes,
        *(part for heading, text in after_training if text for part in (f"## {heading}", text)),
        "## Criteria",
        _criteria_section(min_complete),
        "## Data and devices",
        _data_section(results),
        _devices_section(results),
        "## Trials that are not complete",
        _problems_section(results),
        "## Figures",
        "In `figures/`, each as PNG (300 dpi) and PDF; statistics per cell are in `summary.md` and `summary.csv`, "
        "per trial in `trials.csv`.",
        _figures_section(figures),
        "## Provenance",
        _provenance_section(provenance(results), software(results), sorted(provenance_files(results))),
        "## References",
        _references_section(),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"
