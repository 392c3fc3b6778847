"""What trials measured at their stationary point A* (Experiment S, docs/science.md §5): a table per cell,
the spectra and perturbation figures, and the report's section.

Everything here reads the tables that ``analysis.loading`` builds from the ``results/`` group of trial files
(``Results.measurements``, and ``Results.tables`` as ``analysis.stationary_point_tables`` reads them: the spectra
and the perturbation runs), complete trials only; it names no experiment.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

from analysis import claims, figure_names
from analysis.loading import Results, experiment_of
from analysis.science import cite
from analysis.stationary_point_tables import PERTURBATIONS, SPECTRA
from analysis.style import lowest_in_columns, panel_grid
from analysis.summary import quartiles
from analysis.tables import markdown_table
from pipeline.schema import DIST_E

# The perturbation runs, how legends name them and how they are drawn (Okabe-Ito).
RUNS: dict[str, tuple[str, str, Any]] = {
    "lowest": ("along the lowest E⊥ eigenvector", "#D55E00", "-"),
    "random": ("along a random E⊥ direction", "#0072B2", "-"),
    "lowest_regularised": ("lowest eigenvector, regularised (γ)", "#D55E00", (0, (4, 2))),
    "random_regularised": ("random direction, regularised (γ)", "#0072B2", (0, (4, 2))),
}
# Runs along the lowest eigenvector and along a random direction often coincide (where H_⊥ has no clearly
# lowest direction): the first are drawn wide and pale underneath, the others thin on top, so both show.
UNDER: dict[str, Any] = {"linewidth": 2.6, "alpha": 0.45, "zorder": 1}
OVER: dict[str, Any] = {"linewidth": 0.9, "alpha": 0.9, "zorder": 2}
BLOCKS = {"E": ("H_E on E (Equi)", "#0072B2"), "perp": ("H_⊥ on E⊥ (what Aug adds)", "#D55E00")}


def _complete(results: Results, table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    done = set(results.trials.loc[results.trials["status"] == "complete", "trial_id"])
    return table[table["trial_id"].isin(done)]


def _median(values: ArrayLike) -> float:
    return quartiles(values)[1]


def _cells(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(experiment, cell) in the experiments' reading order."""
    found = list(dict.fromkeys(zip(table["experiment"], table["cell"])))
    order = {}
    for name, cell in found:
        names = experiment_of(name).cell_names
        order[(name, cell)] = names.index(cell) if cell in names else len(names)
    return sorted(found, key=lambda key: (key[0], order[key]))


def trial_table(results: Results) -> pd.DataFrame:
    """Per complete trial: how its search ended, the certified ends of both spectra, the perturbation's growth,
    what kind of point A* is, and what it shows about claim 3 (``claims.claim3_evidence``)."""
    done = _complete(results, results.measurements)
    rows = []
    for _, row in done.iterrows():
        scale = row["lambda_max"]
        entry = {"experiment": row["experiment"], "cell": row["cell"], "trial_id": row["trial_id"],
                 "premises_hold": bool(row["premises_hold"]), "search_end": row.get("search_end", ""),
                 "search_ending": _text(row.get("search_ending", "")),
                 "newton_iterations": row.get("newton_iterations", 0),
                 "hessian_products": row.get("hessian_products", np.nan) + row.get("orbit_products", 0),
                 "loss": row.get("loss", np.nan), "projected_grad_norm": row["final_projected_grad_norm"],
                 "theta_norm": row.get("theta_norm", np.nan), "lambda_max": scale,
                 "lambda_min_E": row["lambda_min_E"], "lambda_min_E_residual": row["lambda_min_E_residual"],
                 "spectrum_method_E": _text(row.get("spectrum_method_E", "lanczos")),
                 "lambda_min_perp": row["lambda_min_perp"],
                 "lambda_min_perp_residual": row["lambda_min_perp_residual"],
                 "spectrum_method_perp": _text(row.get("spectrum_method_perp", "lanczos")),
                 "lowest_measured": row["lowest_measured"], "lowest_predicted": row["lowest_predicted"]}
        if entry["premises_hold"] and "theta_norm" in row:
            evidence = claims.claim3_evidence(row)
            entry.update({"stationarity": evidence.stationarity, "lambda_min_E_lower_rel": evidence.e_lower_bound,
                          "lambda_min_perp_upper_rel": evidence.perp_upper_bound,
                          "growth_error": evidence.growth_error, "point": evidence.point,
                          "claim3": claims.DEMONSTRATED if evidence.demonstrated else claims.NOT_OBSERVED,
                          "claim3_reasons": "; ".join(evidence.reasons)})
        rows.append(entry)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["same_point_as"] = same_points(table)
    return table


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def same_points(table: pd.DataFrame) -> list[str]:
    """Per trial, the other trials that ended at its point (R and ‖A*‖ equal to ``claims.SAME_POINT``, networks
    of one experiment alike: one point can lie in the E of several groups), comma-separated."""
    keys = list(zip(table["experiment"], table["loss"].astype(float), table["theta_norm"].astype(float)))
    shared = []
    for i, (experiment, loss, norm) in enumerate(keys):
        others = [table["trial_id"].iloc[j] for j, (other, l2, n2) in enumerate(keys)
                  if j != i and other == experiment and np.isfinite(loss) and np.isfinite(norm)
                  and abs(loss - l2) <= claims.SAME_POINT * abs(loss) and abs(norm - n2) <= claims.SAME_POINT * norm]
        shared.append(", ".join(others))
    return shared


def cell_table(results: Results) -> pd.DataFrame:
    """Per cell: trials, how the searches ended, claim 1's residuals, the ends of both spectra relative to
    λ_max, the measured against predicted change of dist_E per step (medians over seeds), and, of its seeds, how
    many converged (stationary on the curvature scale) and how many show claim 3, at how many distinct points."""
    done = _complete(results, results.measurements)
    trials = trial_table(results)
    rows = []
    for name, cell in _cells(done) if not done.empty else []:
        part = done[(done["experiment"] == name) & (done["cell"] == cell)]
        judged = trials[(trials["experiment"] == name) & (trials["cell"] == cell)]
        scale = part["lambda_max"]
        endings = judged["search_ending"].replace("", "unrecorded").value_counts()
        row = {"experiment": name, "cell": cell, "trials": len(part),
               "premises_hold": bool(part["premises_hold"].all()),
               "converged": int(part["converged"].astype(bool).sum()),
               "search_endings": ", ".join(f"{kind} {count}" for kind, count in endings.items()),
               "gradient_drop": _median(part["final_projected_grad_norm"] / part["start_projected_grad_norm"]),
               "final_loss": _median(part["loss"] if "loss" in part else [np.nan]),
               "identity_start": _median(part["start_identity_residual"]),
               "identity_star": _median(part["identity_residual"]),
               "identity_star_vs_plain": _median(part["identity_residual_vs_plain"]),
               "aug_grad_off_E_star": _median(part["aug_grad_off_E"] / part["projected_grad_norm"]),
               "block_off_diagonal": _median(part["block_off_diagonal"]),
               "lambda_max": _median(scale),
               "lambda_min_E_rel": _median(part["lambda_min_E"] / scale),
               "lambda_min_perp_rel": _median(part["lambda_min_perp"] / scale),
               "lambda_max_perp_rel": _median(part["lambda_max_perp"] / scale),
               "lambda_min_perp_residual_rel": _median(part["lambda_min_perp_residual"] / scale)}
        for run in RUNS:
            row[f"{run}_measured"] = _median(part[f"{run}_measured"])
            row[f"{run}_predicted"] = _median(part[f"{run}_predicted"])
        if "stationarity" in judged:
            shown = judged[judged["claim3"] == claims.DEMONSTRATED]
            row.update({
                "stationary_on_curvature_scale": int((judged["stationarity"] <= claims.STATIONARITY_TOLERANCE).sum()),
                "stationarity": _median(judged["stationarity"]),
                "lambda_min_E_lower_rel": _median(judged["lambda_min_E_lower_rel"]),
                "lambda_min_perp_upper_rel": _median(judged["lambda_min_perp_upper_rel"]),
                "claim3_trials": len(shown), "claim3_points": distinct_points(shown),
                "claim3_reasons": common_reasons(judged["claim3_reasons"])})
        rows.append(row)
    return pd.DataFrame(rows)


def distinct_points(trials: pd.DataFrame) -> int:
    """How many different points the trials ended at (``same_points``)."""
    seen: set[str] = set()
    count = 0
    for trial_id, same in zip(trials["trial_id"], trials["same_point_as"]):
        if trial_id not in seen:
            count += 1
        seen |= {trial_id, *filter(None, str(same).split(", "))}
    return count


def common_reasons(reasons: pd.Series) -> str:
    """The kinds of reason that stopped trials from showing claim 3, with how many trials each stopped."""
    counts: dict[str, int] = {}
    for text in reasons.dropna():
        for reason in _top_level_parts(str(text)):
            kind = reason.split(" (", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{kind} ({count})" for kind, count in counts.items())


def _top_level_parts(text: str) -> list[str]:
    """``text`` split at "; " outside parentheses: a reason's own details may hold "; " too."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0 and text.startswith("; ", i):
            parts.append(text[start:i])
            start = i + 2
    parts.append(text[start:])
    return [part for part in parts if part]


def summary_lines(attrs: dict) -> list[str]:
    """What one trial measured at A*, in a few lines (``pipeline train`` prints them at the end)."""
    scale = attrs["lambda_max"]
    ending = attrs.get("search_ending", "")
    products = attrs.get("hessian_products", 0) + attrs.get("orbit_products", 0)
    lines = [
        f"search: {attrs.get('search_end', '')}{f' ({ending})' if ending else ''}; {attrs['iterations']} first-order "
        f"iterations, {attrs.get('newton_iterations', 0)} Newton steps, {products} Hessian-vector products; "
        f"‖Π_E∇R‖ {attrs['start_projected_grad_norm']:.3g} → "
        f"{attrs['final_projected_grad_norm']:.3g} (its best iterate); R at A* {attrs.get('loss', float('nan')):.6g}",
        f"claim 1: ‖∇R_aug − Π_E∇R‖/‖∇R‖ = {attrs['identity_residual_vs_plain']:.3g} at A*, "
        f"{attrs['start_identity_residual_vs_plain']:.3g} at A⁰",
        f"spectra (÷λ_max = {scale:.4g}): λ_min(H_E) {attrs['lambda_min_E'] / scale:.3g} ± "
        f"{attrs['lambda_min_E_residual'] / scale:.2g} ({attrs.get('spectrum_method_E', 'lanczos')}), λ_min(H_⊥) "
        f"{attrs['lambda_min_perp'] / scale:.3g} ± {attrs['lambda_min_perp_residual'] / scale:.2g} "
        f"({attrs.get('spectrum_method_perp', 'lanczos')})",
        f"perturbation along the lowest E⊥ eigenvector: dist_E × {attrs['lowest_measured']:.7g} per step "
        f"(predicted {attrs['lowest_predicted']:.7g})",
    ]
    if attrs.get("premises_hold") and "theta_norm" in attrs:
        evidence = claims.claim3_evidence(pd.Series(attrs))
        lines.append("claim 3: " + (claims.DEMONSTRATED if evidence.demonstrated else
                                    f"{claims.NOT_OBSERVED} ({'; '.join(evidence.reasons)})"))
    return lines


def _number(x: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(x) else f"{x:.{digits}g}"


def report_section(results: Results, figures: dict | None) -> str:
    """The report's section on stationary points (a table per network, then one per trial); empty when no trial
    measured any."""
    table = cell_table(results)
    if table.empty:
        return ""
    rows = []
    for _, r in table.iterrows():
        claim3 = "–"
        if r["premises_hold"] and "claim3_trials" in r and np.isfinite(r["claim3_trials"]):
            claim3 = f"{int(r['claim3_trials'])} of {r['trials']}"
            if r["claim3_trials"] > 1:
                claim3 += f" (at {int(r['claim3_points'])} distinct points)"
            if r["claim3_reasons"]:
                claim3 += f"; not in the others: {r['claim3_reasons']}"
        rows.append([
            f"{r['cell']}{'' if r['premises_hold'] else ' (premises fail)'}", r["search_endings"],
            f"{_int(r.get('stationary_on_curvature_scale'))} of {r['trials']}" if r["premises_hold"] else "–",
            _number(r.get("stationarity", np.nan)), _number(r["final_loss"]),
            _number(r["identity_start"]), _number(r["identity_star_vs_plain"]),
            _number(r["aug_grad_off_E_star"]), _number(r.get("lambda_min_E_lower_rel", np.nan)),
            _number(r.get("lambda_min_perp_upper_rel", np.nan)), _number(r["lambda_min_perp_residual_rel"]),
            f"{r['lowest_measured']:.7g} / {r['lowest_predicted']:.7g}",
            f"{r['lowest_regularised_measured']:.4g} / {r['lowest_regularised_predicted']:.4g}", claim3])
    headers = ["network", "searches ended by", "stationary on the curvature scale", "‖Π_E∇R‖ / (|λ|·‖A*‖)",
               "R at A*", "claim 1 at A⁰ (rel. ‖∇R_aug‖)", "claim 1 at A* (rel. ‖∇R‖)", "‖Π_⊥∇R_aug‖/‖Π_E∇R‖ at A*",
               "λ_min(H_E) ≥ (÷λ_max)", "λ_min(H_⊥) ≤ (÷λ_max)", "its Ritz residual (÷λ_max)",
               "dist_E factor per step, measured / predicted", "regularised, measured / predicted",
               "seeds showing claim 3; why not"]
    shown = figures or {}
    drawn = [name for name in shown if name.endswith(("_spectra", "_perturbations_log"))]
    parts = [
        f"Each trial searched for a stationary point A* of R on E from its A⁰ (L-BFGS on projected gradients, then "
        f"trust-region Newton on E), then measured there ({cite('5')}). A search ends by its *criterion* "
        "(stationary on the curvature scale, from estimates of the curvatures), a certified *stall* (no decrease of "
        "R beyond round-off, nor of ‖Π_E∇R‖ by half, over its stall window; or a trust region shrunk to round-off), "
        "or its *budget* (Hessian-vector products, time or steps), and ends on its best iterate. Medians over the "
        "complete trials of each network; every trial's numbers are in `stationary_points_trials.csv` and in the "
        "table after this one. *Stationary on the curvature scale*: ‖Π_E∇R‖ ≤ "
        f"{claims.STATIONARITY_TOLERANCE:g}·|λ|·‖A*‖ for the smallest curvature |λ| whose sign is judged, on the "
        "certified spectra. *Claim 1*: "
        "‖∇R_aug − Π_E∇R‖, relative to ‖∇R_aug‖ at A⁰ (where gradients are large) and to ‖∇R‖ at A* (where "
        "both sides nearly vanish); where the premises hold it is round-off, where they fail (CNN `skew`, "
        "`nonunitary`) it is not, and A* is then not stationary for Aug (‖Π_⊥∇R_aug‖ > 0). *Spectra*, relative to "
        "λ_max (the largest of both blocks): λ_min(H_E) from below, certified only where H_E was formed densely in "
        "an orthonormal basis of E (its whole spectrum, exact up to the round-off of the products); λ_min(H_⊥) from "
        "above, the Rayleigh quotient of a vector of E⊥ (dense where that block was small enough, else a Lanczos "
        "Ritz vector, with its residual computed, not estimated). *Dynamics*: Aug gradient descent with step "
        "η = step_factor/λ_max from A* plus a perturbation "
        "off E along the lowest E⊥ eigenvector, anchored at A* (the part in E of ∇R_aug(A*) is subtracted at every "
        "step, so that the point does not drift along E): dist_E changes by the factor |1 − ηλ_min(H_⊥)| per step "
        "if the linearisation holds, and regularised augmentation (γ chosen above −λ_min(H_⊥)) turns it into a "
        "decay. *Claim 3* needs all four of: stationary on the curvature scale, H_E certified ⪰ 0, H_⊥ certified "
        "negative by a clear gap, growth as predicted (see Criteria). Seeds that end at one point (equal R and "
        "‖A*‖) are counted as one point.",
        markdown_table(headers, rows, flag_large_numbers=True),
        "Every trial: how its search ended (its best iterate measured), its cost, and what its point shows.",
        markdown_table(*trials_rows(trial_table(results)), flag_large_numbers=True),
        *(f"![{shown[name].caption}](figures/{name}.png)" for name in drawn),
    ]
    return "\n\n".join(parts)


def trials_rows(trials: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The report's per-trial table: (headers, rows)."""
    headers = ["trial", "search ended", "Newton steps", "Hessian-vector products", "‖Π_E∇R‖",
               "‖Π_E∇R‖ / (|λ|·‖A*‖)", "λ_min(H_E) (÷λ_max)", "λ_min(H_⊥) ± residual (÷λ_max)",
               "growth per step, measured / predicted", "claim 3"]
    rows = []
    for _, t in trials.iterrows():
        scale = t["lambda_max"]
        ending = f" ({t['search_ending']})" if t["search_ending"] else ""
        if not t["premises_hold"]:
            verdict = "– (premises fail)"
        elif t.get("claim3") == claims.DEMONSTRATED:
            verdict = claims.DEMONSTRATED
        else:
            verdict = f"{t.get('claim3', '–')}: {t.get('claim3_reasons', '')}"
        if t.get("same_point_as"):
            verdict += f"; the same point as {t['same_point_as']}"
        rows.append([
            t["trial_id"], f"{t['search_end']}{ending}", _int(t["newton_iterations"]), _int(t["hessian_products"]),
            _number(t["projected_grad_norm"]), _number(t.get("stationarity", np.nan)),
            f"{_number(t['lambda_min_E'] / scale)} ({t['spectrum_method_E']})",
            f"{_number(t['lambda_min_perp'] / scale)} ± {_number(t['lambda_min_perp_residual'] / scale, 2)} "
            f"({t['spectrum_method_perp']})",
            f"{t['lowest_measured']:.9g} / {t['lowest_predicted']:.9g}", verdict])
    return headers, rows


def _int(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else str(int(value))


# -- figures ----------------------------------------------------------------------------------------------


def _grid(count: int, sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """A panel per cell, wrapped as every figure's (``style.panel_grid``); the axis labels once per figure."""
    figure, axes = panel_grid(count, sharey=sharey)
    return figure, list(axes[0])


def _symlog_ticks(ax: Axes, low: float) -> None:
    """Decades every other one on the symmetric log axis: every decade would crowd the labels."""
    decades = [10.0 ** k for k in range(0, int(np.floor(np.log10(low))) - 1, -2)]
    ticks = sorted([-d for d in decades] + [0.0] + decades)
    ax.set_yticks(ticks, [("−" if t < 0 else "") + (f"1e{int(np.log10(abs(t)))}" if t else "0") if abs(t) != 1
                          else ("−1" if t < 0 else "1") for t in ticks])
    ax.minorticks_off()


def spectra_figure(results: Results, experiment_name: str) -> tuple[Figure, int]:
    """A panel per cell: the lowest eigenvalues and the largest of H_E and H_⊥, relative to λ_max, on a
    symmetric log axis; each trial's points side by side, with a bar over the interval its Ritz residual leaves
    open (where it is large enough to see), the lowest of H_⊥ ringed."""
    spectra = _complete(results, results.tables.get(SPECTRA, pd.DataFrame()))
    measured = _complete(results, results.measurements)
    spectra = spectra[spectra["experiment"] == experiment_name]
    cells = [cell for name, cell in _cells(spectra) if name == experiment_name]
    experiment = experiment_of(experiment_name)
    figure, axes = _grid(len(cells))
    for ax, cell in zip(axes, cells):
        part = spectra[spectra["cell"] == cell]
        scales = measured.set_index("trial_id")["lambda_max"]
        trial_ids = list(dict.fromkeys(part["trial_id"]))
        for b, (block, (_words, colour)) in enumerate(BLOCKS.items()):
            for t, trial_id in enumerate(trial_ids):
                rows = part[(part["trial_id"] == trial_id) & (part["block"] == block)]
                x = b + 0.5 * (t + 0.5) / max(len(trial_ids), 1) - 0.25
                values = rows["value"].to_numpy() / scales[trial_id]
                residuals = np.abs(rows["residual"].to_numpy()) / scales[trial_id]
                ax.errorbar(np.full(len(values), x), values, yerr=residuals, fmt="o", color=colour, markersize=3,
                            alpha=0.8, elinewidth=0.8, capsize=0)
                if block == "perp":
                    lowest = rows.loc[rows["end"] == "lowest", "value"].min() / scales[trial_id]
                    ax.plot([x], [lowest], "o", markersize=7, markerfacecolor="none", markeredgecolor="black",
                            markeredgewidth=0.8)
        ax.axhline(0, color="0.5", linewidth=0.6)
        ax.set_yscale("symlog", linthresh=1e-6)
        _symlog_ticks(ax, 1e-6)
        ax.set_xticks([0, 1], ["H_E", "H_⊥"])
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(cell)
    figure.supylabel("eigenvalue / λ_max")
    handles = [Line2D([], [], marker="o", linestyle="none", color=colour, label=words) for words, colour in BLOCKS.values()]
    handles.append(Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="black",
                          markersize=7, label="lowest of H_⊥"))
    handles.append(Line2D([], [], color="0.3", linewidth=0.8, label="± Ritz residual (the certified interval)"))
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    figure.suptitle(f"{experiment.display_title()}: the ends of the spectra at A*, relative to λ_max")
    return figure, len(cells)


def perturbations_figure(results: Results, experiment_name: str) -> tuple[Figure, int]:
    """A panel per cell: dist_E / dist_E at the start against the step of Aug gradient descent from A* + a
    perturbation off E, a thin line per trial and run; the predicted factor per step as a thin black line."""
    runs = _complete(results, results.tables.get(PERTURBATIONS, pd.DataFrame()))
    runs = runs[runs["experiment"] == experiment_name]
    cells = [cell for name, cell in _cells(runs) if name == experiment_name]
    experiment = experiment_of(experiment_name)
    figure, axes = _grid(len(cells))
    for ax, cell in zip(axes, cells):
        part = runs[runs["cell"] == cell]
        for (_trial_id, run), series in part.groupby(["trial_id", "run"], sort=False):
            words, colour, dashes = RUNS.get(run, (run, "0.5", "-"))
            series = series.sort_values("step")
            relative = series[DIST_E].to_numpy() / series[DIST_E].iloc[0]
            ax.plot(series["step"], relative, color=colour, linestyle=dashes, **(UNDER if run.startswith("lowest")
                                                                                else OVER))
            if run in ("lowest", "lowest_regularised"):
                ax.plot(series["step"], series["predicted_factor"].iloc[0] ** series["step"].to_numpy(),
                        color="black", linewidth=0.5, linestyle=(0, (1, 1)), zorder=3)
        ax.set_yscale("log")
        ax.set_title(cell)
    for ax in lowest_in_columns(axes):
        ax.set_xlabel("step of Aug gradient descent")
    figure.supylabel("dist_E / its start")
    handles = [Line2D([], [], color=colour, linestyle=dashes, label=words,
                      **{k: v for k, v in (UNDER if run.startswith("lowest") else OVER).items() if k != "zorder"})
               for run, (words, colour, dashes) in RUNS.items()]
    handles.append(Line2D([], [], color="black", linewidth=0.5, linestyle=(0, (1, 1)),
                          label="predicted per step: |1 − η(λ_min(H_⊥) + γ)|"))
    figure.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    figure.suptitle(f"{experiment.display_title()}: a perturbation off E under Aug gradient descent from A*, log scale")
    return figure, len(cells)


def planned_figures(results: Results) -> dict:
    """name -> (builder returning (figure, panels), caption) for every experiment whose trials measured A*."""
    measured = _complete(results, results.measurements)
    planned = {}
    for name in dict.fromkeys(measured["experiment"]) if not measured.empty else []:
        experiment = experiment_of(name)
        title = experiment.display_title()
        count = int((measured["experiment"] == name).sum())
        planned[figure_names.spectra(experiment)] = (
            lambda name=name: spectra_figure(results, name),
            f"{title}: the lowest eigenvalues and the largest of H_E on E (Equi's Hessian; blue) and of H_⊥ on E⊥ "
            "(what Aug adds; orange) at each trial's A*, relative to λ_max, symmetric log axis (linear within "
            f"±1e-6); the lowest of H_⊥ is ringed; vertical bars span ± each Ritz pair's residual, within which an "
            f"eigenvalue lies; {count} complete trials")
        planned[figure_names.perturbations(experiment)] = (
            lambda name=name: perturbations_figure(results, name),
            f"{title}: dist_E, relative to its start, along Aug gradient descent (step η = step_factor/λ_max) from "
            "A* plus ε times a unit vector off E, anchored at A* (the part in E of ∇R_aug(A*) subtracted at every step) "
            "(the lowest E⊥ eigenvector: wide pale orange, drawn under a random direction: thin blue, so that where "
            "the two coincide both show), "
            "plain (solid) and with regularised augmentation (dashed); dotted black: the linearised prediction "
            "|1 − η(λ_min(H_⊥) + γ)| per step. Where the premises fail (CNN skew, nonunitary) ∇R_aug has a part off E "
            f"at A*, which moves the point away from E whatever the perturbation; {count} complete trials")
    return planned
