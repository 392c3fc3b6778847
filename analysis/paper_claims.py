"""The report's opening: the paper's five claims, one row each, judged from the verdicts of every experiment.

``analysis.claims`` judges what each experiment declares about its cells; this module reads those verdicts
by the claim of docs/science.md §1 they bear on (``Verdict.source``, "claim 1" to "claim 5") and says, per
claim, what the grid shows: a verdict, the evidence in words with its numbers, and the caveat a referee would
raise. Checks that hold by construction (Equi stays in E), the controls of the claim-3 detector and the
comparisons with the expected picture are reported below it, each under their own heading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import claims
from analysis.claim_checker import COMBINATIONS
from analysis.claims import DEMONSTRATED, FAILS, HOLDS, NOT_OBSERVED, TOO_FEW, Verdict, number

# docs/science.md §1, in a sentence each.
STATEMENTS = {
    "claim 1": "If L and E are compatible, the equivariant stationary points of Equi and of Aug are the same.",
    "claim 2": "If moreover L has a unitary parametrisation, Aug training started in E stays in E (to round-off).",
    "claim 3": "An equivariant stationary point can be stable for Equi and unstable for Aug.",
    "claim 4": "With an incompatible L or a non-unitary parametrisation, Aug training started in E leaves it.",
    "claim 5": "Nom leaves E, at a rate comparable to the distance travelled.",
}
NOT_TESTED = "not tested in this grid"
DETECTOR_BROKEN = "detector failed a control"

# How an analysis of measurements after training words why trials did not show a claim (their reasons, one text
# per trial).
ReasonsInWords = Callable[[pd.Series], str]


@dataclass
class ClaimRow:
    claim: str  # "claim 1"
    statement: str
    verdict: str
    evidence: str
    caveat: str


def _subjects(verdicts: list[Verdict], outcome: str) -> str:
    return ", ".join(v.subject for v in verdicts if v.outcome == outcome)


def _all_hold(verdicts: list[Verdict], good: str = HOLDS) -> str:
    judged = [v for v in verdicts if v.outcome != TOO_FEW]
    if not judged:
        return TOO_FEW
    if any(v.outcome != good for v in judged):
        return FAILS
    return good if len(judged) == len(verdicts) else TOO_FEW


def _cells_in_words(verdicts: list[Verdict], good: str = HOLDS) -> str:
    held = [v for v in verdicts if v.outcome == good]
    text = f"{good} in {len(held)} of {len(verdicts)} cells"
    failed = [v for v in verdicts if v.outcome not in (good, TOO_FEW)]
    if failed:
        text += f"; not in {_subjects(failed, failed[0].outcome)}" if len({v.outcome for v in failed}) == 1 else \
            "; not in " + ", ".join(v.subject for v in failed)
    too_few = [v for v in verdicts if v.outcome == TOO_FEW]
    if too_few:
        text += f"; too few complete trials in {', '.join(v.subject for v in too_few)}"
    return text


def _claim1(verdicts: list[Verdict], trials: pd.DataFrame, controls: set[str]) -> ClaimRow:
    networks = [v for v in verdicts if v.kind == claims.IDENTITY_AT_ROUNDOFF]
    if not networks:
        return ClaimRow("claim 1", STATEMENTS["claim 1"], NOT_TESTED, "no Experiment S network where its premises "
                        "hold", "")
    worst = max((v.value for v in networks if np.isfinite(v.value)), default=float("nan"))
    evidence = (f"the identity ∇R_aug = Π_E∇R holds to {number(worst)} × ‖∇R‖ (worst median over seeds) at A⁰ and "
                f"A* in {len([v for v in networks if v.outcome == HOLDS])} of {len(networks)} networks")
    judged = trials[trials["premises_hold"] & ~trials["cell"].isin(controls)] if not trials.empty else trials
    stationary = int((judged["stationarity"] <= claims.STATIONARITY_TOLERANCE).sum()) if "stationarity" in judged \
        else 0
    # Two findings, never one word for both: the identity (what holds at every point of E) and whether the
    # searches reached the stationary points the claim is about.
    verdict = (f"the identity on E {_all_hold(networks)}; stationary points reached in {stationary} of {len(judged)} "
               "searches")
    caveat = ("the identity is exact at every point of E; that the stationary points of Equi and Aug coincide is "
              "seen only at points that are stationary (on the curvature scale), which the searches reached in "
              f"{stationary} of {len(judged)} trials")
    return ClaimRow("claim 1", STATEMENTS["claim 1"], verdict, evidence, caveat)


def _control_cells(verdicts: list[Verdict]) -> set[str]:
    return {v.cell[1] for v in verdicts if v.expected}


def _claim3(verdicts: list[Verdict], controls: list[Verdict], trials: pd.DataFrame,
            reasons_in_words: ReasonsInWords | None) -> ClaimRow:
    networks = [v for v in verdicts if v.kind == claims.STABILITY_DIFFERS and not v.expected]
    control_words = "; ".join(f"{v.subject.split(', ')[-1]}: {v.outcome} (must be {v.expected})" for v in controls)
    broken = [v for v in controls if not v.as_expected]
    if not networks and not controls:
        return ClaimRow("claim 3", STATEMENTS["claim 3"], NOT_TESTED, "no Experiment S network where its premises "
                        "hold", "")
    positive = [v.subject.split(", ")[-1] for v in controls if v.expected == DEMONSTRATED and v.as_expected]
    on_control = f"demonstrated on the control {', '.join(positive)}" if positive else ""
    if broken:
        verdict = DETECTOR_BROKEN
    elif any(v.outcome == DEMONSTRATED for v in networks):
        verdict = DEMONSTRATED
    elif any(v.outcome == NOT_OBSERVED for v in networks):
        verdict = NOT_OBSERVED + " in the networks of §3–§4" + (f" ({on_control})" if on_control else "")
    elif networks:
        verdict = TOO_FEW
    else:
        verdict = f"{on_control} only" if on_control else NOT_TESTED
    parts = []
    if controls:
        parts.append(f"detector controls: {control_words}")
    if networks:
        shown = [v for v in networks if v.outcome == DEMONSTRATED]
        parts.append(f"in the networks of §3–§4: shown in {len(shown)} of {len(networks)}"
                     + (f" ({', '.join(v.subject.split(', ')[-1] for v in shown)})" if shown else ""))
        per_network = _per_network(trials, _control_cells(verdicts))
        if per_network:
            parts.append(f"per network, of its seeds: {per_network}")
        reasons = _reasons(trials, _control_cells(verdicts), reasons_in_words)
        if reasons:
            parts.append(f"why not elsewhere (trials): {reasons}")
    caveat = ("a demonstration needs a search stationary on the curvature scale, H_E certified ⪰ 0, H_⊥ certified "
              "negative by a clear gap and the anchored growth as predicted; the controls show the detector can tell")
    if controls and not networks:
        caveat += "; this grid has only the controls: the paper's networks are not judged"
    return ClaimRow("claim 3", STATEMENTS["claim 3"], verdict, "; ".join(parts), caveat)


def _per_network(trials: pd.DataFrame, controls: set[str]) -> str:
    """"rot: claim 3 in 1 of 3, 2 of 3 converged; ..." over the networks whose premises hold."""
    if trials.empty or "claim3" not in trials:
        return ""
    judged = trials[trials["premises_hold"] & ~trials["cell"].isin(controls)]
    words = []
    for cell, part in judged.groupby("cell", sort=False):
        converged = int((part["stationarity"] <= claims.STATIONARITY_TOLERANCE).sum())
        shown = int((part["claim3"] == DEMONSTRATED).sum())
        words.append(f"{cell}: claim 3 in {shown} of {len(part)}, {converged} of {len(part)} converged")
    return "; ".join(words)


def _reasons(trials: pd.DataFrame, controls: set[str], in_words: ReasonsInWords | None) -> str:
    if trials.empty or "claim3_reasons" not in trials or in_words is None:
        return ""
    judged = trials[trials["premises_hold"] & ~trials["cell"].isin(controls)]
    return in_words(judged["claim3_reasons"])


def _trajectory_claim(name: str, verdicts: list[Verdict], what: str, caveat: str) -> ClaimRow:
    if not verdicts:
        return ClaimRow(name, STATEMENTS[name], NOT_TESTED, "no cell of this grid tests it", "")
    values = [v.value for v in verdicts if np.isfinite(v.value)]
    extreme = (max(values) if name == "claim 2" else min(values)) if values else float("nan")
    evidence = f"{_cells_in_words(verdicts)}; {what} {number(extreme)}"
    return ClaimRow(name, STATEMENTS[name], _all_hold(verdicts), evidence, caveat)


def _claim4(verdicts: list[Verdict]) -> ClaimRow:
    if not verdicts:
        return ClaimRow("claim 4", STATEMENTS["claim 4"], NOT_TESTED, "no cell of this grid tests it", "")
    trajectories = [v for v in verdicts if v.kind == claims.LEAVES_E]
    identities = [v for v in verdicts if v.kind == claims.IDENTITY_FAILS]
    parts = []
    if trajectories:
        values = [v.value for v in trajectories if np.isfinite(v.value)]
        parts.append(f"Aug leaves E in {len([v for v in trajectories if v.outcome == HOLDS])} of {len(trajectories)} "
                     f"cells (smallest median final dist_E/dist_init {number(min(values) if values else np.nan)})")
    if identities:
        values = [v.value for v in identities if np.isfinite(v.value)]
        parts.append(f"at the stationary points Aug's gradient departs from Equi's in "
                     f"{len([v for v in identities if v.outcome == HOLDS])} of {len(identities)} networks (by at "
                     f"least {number(min(values) if values else np.nan)} of ‖∇R_aug‖)")
    caveat = "tested on the CNN's skew support (incompatible) and non-orthogonal basis (non-unitary) only"
    return ClaimRow("claim 4", STATEMENTS["claim 4"], _all_hold(verdicts), "; ".join(parts), caveat)


def claim_rows(verdicts: list[Verdict], trials: pd.DataFrame,
               reasons_in_words: ReasonsInWords | None = None) -> list[ClaimRow]:
    """One row per claim of docs/science.md §1. ``trials``: what trials measured after training, one row per trial
    (the analyses' ``trial_table``, ``analysis.results_analyses``; may be empty); ``reasons_in_words``: how their
    analysis words the reasons that stopped trials from showing claim 3."""
    by_source: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_source.setdefault(v.source, []).append(v)
    cell_verdicts = {name: [v for v in by_source.get(name, []) if v.kind not in COMBINATIONS]
                     for name in STATEMENTS}
    controls = [v for v in verdicts if v.expected]
    return [
        _claim1(cell_verdicts["claim 1"], trials, _control_cells(verdicts)),
        _trajectory_claim("claim 2", cell_verdicts["claim 2"], "largest median dist_E/‖A‖ over the epochs concerned:",
                          "round-off is judged against the trials' dtype; Experiment G's cells take a few small "
                          "full-batch steps from A⁰"),
        _claim3(cell_verdicts["claim 3"], controls, trials, reasons_in_words),
        _claim4(cell_verdicts["claim 4"]),
        _trajectory_claim("claim 5", cell_verdicts["claim 5"], "smallest median final dist_E/dist_init:",
                          f"'comparable' is read as a ratio of at least {claims.NOM_MIN_RATIO:g}"),
    ]


def grouped(verdicts: list[Verdict]) -> dict[str, list[Verdict]]:
    """The per-cell verdicts under the report's headings: the paper's claims, checks that hold by construction,
    the detector's controls, and comparisons with the expected picture."""
    groups: dict[str, list[Verdict]] = {"claims": [], "construction": [], "controls": [], "comparisons": []}
    for v in verdicts:
        if v.expected:
            groups["controls"].append(v)
        elif v.source in STATEMENTS:
            groups["claims"].append(v)
        elif v.source == "Equi":
            groups["construction"].append(v)
        else:
            groups["comparisons"].append(v)
    return groups
