"""The claims of SCIENCE.md section 1 that a grid can test, as measurable criteria with verdicts.

Notation, per complete trial, with totals over the measured layers (Frobenius norms of the weight set):
``rel = dist_E / ||A||`` and ``ratio = dist_E / dist_init`` (dist_E per unit of distance travelled).
"max rel" is the largest rel over the epochs the claim is about; "final" is the last epoch. Each
criterion applies to the median over the seeds of a cell.

Staying in E is judged relative to ||A||, not to the distance travelled: round-off in dist_E = ||A - Pi_E A||
is a multiple of machine epsilon times ||A||, so a short training run would make a ratio to the distance
travelled look large although the point has never left E to working precision. Leaving E is judged
relative to the distance travelled, which is what "at a rate comparable to the distance travelled" means
and does not depend on the learning rate or the number of epochs.

Not testable from these measurements: claim 1 (equivariant stationary points coincide) and claim 3
(stability of stationary points); the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .summary import cell_order, quartiles

# Largest dist_E / ||A|| still counted as "in E", by the trial's floating-point type: about 100x the
# round-off of one projection (float32 eps = 1.2e-7, float64 eps = 2.2e-16) to absorb its growth over
# a few hundred steps.
ROUNDOFF_THRESHOLD = {"float32": 1e-5, "float64": 1e-12}
# Nom "leaves E at a rate comparable to the distance travelled": final dist_E / dist_init at least this.
NOM_MIN_RATIO = 0.05
# An Aug run "leaves E" (CNN, incompatible or non-unitary): final dist_E / dist_init at least this, and
# final dist_E / ||A|| above the round-off threshold, so that round-off is never read as leaving.
LEAVES_E_MIN_RATIO = 1e-4
# Complete trials needed in every cell a claim reads; with fewer, the verdict is "not enough complete trials".
MIN_COMPLETE_TRIALS = 2

HOLDS, FAILS, TOO_FEW = "holds", "does not hold", "not enough complete trials"

LOG_FIGURE = "groups_dist_vs_travelled_log.png"
LINEAR_FIGURE = "groups_dist_vs_travelled.png"
CNN_FIGURE = "cnn_dist_vs_epoch.png"


@dataclass
class Verdict:
    experiment: str
    subject: str  # a group (rot, ...) or "cnn <config>"
    claim: str
    science: str  # where the claim comes from in SCIENCE.md
    criterion: str
    outcome: str  # HOLDS, FAILS or TOO_FEW
    evidence: str
    figure: str

    @property
    def line(self) -> str:
        return f"{self.subject}: {self.claim} — {self.outcome} ({self.evidence})"


def number(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def _median(values) -> float:
    return quartiles(values)[1]


def roundoff_threshold(dtypes) -> float:
    """The loosest threshold of the dtypes present (a cell normally has one)."""
    return max(ROUNDOFF_THRESHOLD.get(str(d), ROUNDOFF_THRESHOLD["float32"]) for d in dtypes)


class ClaimChecker:
    """Collects verdicts cell by cell; each check reads the complete trials' end points of its cells."""

    def __init__(self, trials: pd.DataFrame, end_points: pd.DataFrame, min_complete: int = MIN_COMPLETE_TRIALS):
        self.trials, self.end_points, self.min_complete = trials, end_points, min_complete
        self.verdicts: list[Verdict] = []

    def _cell(self, experiment: str, setting: str, mode: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(manifest trials, complete end points) of one cell."""
        column = "group" if experiment == "groups" else "config"
        members = self.trials[(self.trials["experiment"] == experiment) & (self.trials[column] == setting)
                              & (self.trials["mode"] == mode)]
        done = self.end_points[self.end_points["trial_id"].isin(members["trial_id"])]
        return members, done

    def _too_few(self, *cells: pd.DataFrame) -> str | None:
        short = [f"{label + ': ' if label else ''}{len(done)} complete" for done, label in cells
                 if len(done) < self.min_complete]
        if not short:
            return None
        return f"{', '.join(short)}; need at least {self.min_complete} per cell"

    def _add(self, experiment, subject, claim, science, criterion, figure, cells, judge):
        too_few = self._too_few(*cells)
        if too_few:
            outcome, evidence = TOO_FEW, too_few
        else:
            passed, evidence = judge()
            outcome = HOLDS if passed else FAILS
        self.verdicts.append(Verdict(experiment, subject, claim, science, criterion, outcome, evidence, figure))

    def stays_in_E(self, experiment, subject, claim, science, members, done, column="max_rel_dist_E",
                   figure=LOG_FIGURE):
        """``column``: the per-trial largest dist_E/‖A‖ over the epochs the claim is about."""
        threshold = roundoff_threshold(members["dtype"])
        dtypes = "/".join(sorted(set(members["dtype"])))
        criterion = f"median over seeds of max dist_E/‖A‖ (totals) ≤ {threshold:g} ({dtypes})"

        def judge():
            median = _median(done[column])
            passed = bool(median <= threshold)
            return passed, (f"median max dist_E/‖A‖ = {number(median)} {'≤' if passed else '>'} {threshold:g}, "
                            f"n = {len(done)}")

        self._add(experiment, subject, claim, science, criterion, figure, [(done, "")], judge)

    def leaves_E(self, experiment, subject, claim, science, members, done, min_ratio, figure, check_roundoff):
        threshold = roundoff_threshold(members["dtype"])
        criterion = f"median final dist_E/dist_init ≥ {min_ratio:g}"
        if check_roundoff:
            criterion += f" and median final dist_E/‖A‖ > {threshold:g}"

        def judge():
            ratio, relative = _median(done["final_ratio"]), _median(done["final_rel_dist_E"])
            passed = bool(ratio >= min_ratio) and (not check_roundoff or bool(relative > threshold))
            evidence = (f"median final dist_E/dist_init = {number(ratio)} "
                        f"{'≥' if ratio >= min_ratio else '<'} {min_ratio:g}")
            if check_roundoff:
                evidence += (f"; median final dist_E/‖A‖ = {number(relative)} "
                             f"{'>' if relative > threshold else '≤'} {threshold:g}")
            return passed, evidence + f", n = {len(done)}"

        self._add(experiment, subject, claim, science, criterion, figure, [(done, "")], judge)

    def aug_below_nom(self, group, aug_done, nom_done, augment):
        criterion = "median final dist_E/dist_init of Aug < that of Nom"

        def judge():
            aug, nom = _median(aug_done["final_ratio"]), _median(nom_done["final_ratio"])
            passed = bool(aug < nom)
            return passed, (f"median final dist_E/dist_init Aug = {number(aug)} {'<' if passed else '≥'} "
                            f"Nom = {number(nom)}, n = {len(aug_done)}/{len(nom_done)}")

        self._add("groups", group, f"Aug ({augment}) leaves E less than Nom", "§3 expected picture; §1 claims 2, 5",
                  criterion, LOG_FIGURE, [(aug_done, "Aug"), (nom_done, "Nom")], judge)

    def check_groups(self) -> None:
        trials = self.trials[self.trials["experiment"] == "groups"]
        for group in cell_order(trials.drop_duplicates("group"))["group"]:
            modes = set(trials.loc[trials["group"] == group, "mode"])
            if "equi" in modes:
                members, done = self._cell("groups", group, "equi")
                self.stays_in_E("groups", group, "Equi stays in E", "§2 (Equi)", members, done)
            if "aug" in modes:
                members, done = self._cell("groups", group, "aug")
                augments = sorted(set(members["augment"]))
                if augments == ["orbit"]:
                    self.stays_in_E("groups", group, "Aug (orbit) stays in E", "§1 claim 2", members, done)
                elif "nom" in modes:
                    self.aug_below_nom(group, done, self._cell("groups", group, "nom")[1], "/".join(augments))
            if "nom" in modes:
                members, done = self._cell("groups", group, "nom")
                self.leaves_E("groups", group, "Nom leaves E at a rate comparable to the distance travelled",
                              "§1 claim 5", members, done, NOM_MIN_RATIO, LINEAR_FIGURE, check_roundoff=False)

    def check_cnn(self) -> None:
        trials = cell_order(self.trials[self.trials["experiment"] == "cnn"].drop_duplicates(["config", "mode"]))
        for config, mode in zip(trials["config"], trials["mode"]):
            members, done = self._cell("cnn", config, mode)
            subject = f"cnn {config} ({mode})"
            self.stays_in_E("cnn", subject, "phase 1 (Equi) stays in E", "§2 (Equi)", members, done,
                            column="max_rel_dist_E_phase1", figure=CNN_FIGURE)
            if mode == "nom":
                self.leaves_E("cnn", subject, "Nom leaves E in phase 2", "§1 claim 5", members, done, NOM_MIN_RATIO,
                              CNN_FIGURE, check_roundoff=False)
            elif config == "cross":
                self.stays_in_E("cnn", subject, "Aug stays in E in phase 2 (compatible, unitary)", "§1 claim 2",
                                members, done, figure=CNN_FIGURE)
            else:
                why = "incompatible support" if config == "skew" else "non-unitary parametrization"
                self.leaves_E("cnn", subject, f"Aug leaves E in phase 2 ({why})", "§1 claim 4", members, done,
                              LEAVES_E_MIN_RATIO, CNN_FIGURE, check_roundoff=True)


def check_claims(trials: pd.DataFrame, end_points: pd.DataFrame,
                 min_complete: int = MIN_COMPLETE_TRIALS) -> list[Verdict]:
    """Verdicts for every claim the manifest's cells can speak to, groups first."""
    checker = ClaimChecker(trials, end_points, min_complete)
    checker.check_groups()
    checker.check_cnn()
    return checker.verdicts
