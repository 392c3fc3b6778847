"""The claims of docs/science.md §1 that trajectories can test, judged as §7 describes.

What is claimed about which cell is declared by each experiment (``Experiment.claims``, as data: a kind,
the cell, the epochs concerned, a named threshold); this module owns the thresholds and judges every kind of
declaration the same way, whatever the experiment (``KINDS``); ``analysis.claim_checker`` takes each declaration
to its judge, combines verdicts and keeps the notes.

Notation, per complete trial, with totals over the measured layers (Frobenius norms of the weight set):
``rel = dist_E / ||A||`` (distance from E relative to the weight norm) and ``ratio = dist_E / dist_init``
(distance from E per unit distance travelled). "max rel" is the largest rel over the epochs concerned;
"final" is the last epoch. Each criterion applies to the median over the seeds of a cell.

Staying in E is judged relative to ||A||, not to the distance travelled: round-off in dist_E = ||A - Pi_E A||
is a multiple of machine epsilon times ||A||, so a short training run would make a ratio to the distance
travelled look large although the point has never left E to working precision. Leaving E is judged
relative to the distance travelled, which is what "at a rate comparable to the distance travelled" means
and does not depend on the learning rate or the number of epochs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from analysis import figure_names
from analysis.loading import experiment_of
from analysis.summary import quartiles
from pipeline.core.stationarity import (
    DEGENERATE,
    HESSIAN_ROUNDOFF,
    OUTSIDE_TOLERANCE,
    PSD_TOLERANCE,
    STATIONARITY_TOLERANCE,
    ZERO_POINT,
    curvature_scale,
    point_kind,
    stationarity,
)
from pipeline.experiments.base import Experiment
from pipeline.experiments.claims import (
    BELOW_REFERENCE,
    IDENTITY_AT_ROUNDOFF,
    IDENTITY_FAILS,
    LEAVES_E,
    STABILITY_DIFFERS,
    STAYS_IN_E,
    Claim,
    GridCell,
)

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
# The minimum ratios an experiment's claims may name.
MIN_RATIOS = {"NOM_MIN_RATIO": NOM_MIN_RATIO, "LEAVES_E_MIN_RATIO": LEAVES_E_MIN_RATIO}

# Stationary points (Experiment S, float64). Claim 1's identity holds "to round-off" when the difference
# ||grad R_aug - Pi_E grad R|| is at most this fraction of ||grad R||, the scale at which both gradients
# are summed (the sums carry round-off of order 1e-16 of it), at A0 and at A*. Relative to ||grad R_aug||
# instead, a nearly stationary A* would divide round-off by a small number; the report shows that ratio too.
IDENTITY_THRESHOLD = 1e-10
# Where the premises fail (CNN skew, nonunitary) the identity is off "by orders of magnitude": at A0, where
# the gradients are large, by at least this fraction of ||grad R_aug||.
IDENTITY_FAILS_MIN = 1e-4
# Claim 3 is demonstrated by a trial when all four hold (docs/science.md §7). The curvature-scale rule and its
# constants live in pipeline.core.stationarity, which the search for A* stops by as well:
# 1. A* is stationary on the scale of the curvature judged: ||Pi_E grad R|| <= STATIONARITY_TOLERANCE * |lambda| *
#    ||A*||, |lambda| the smallest of |lambda_min(H_perp)| and lambda_min(H_E) where that is clearly above zero (a
#    gradient g is a slope of length about g / |lambda| along that eigenvector: it must be short against ||A*||).
#    A point without such a scale (degenerate: every judged curvature at round-off; the zero point A* = 0) is
#    named, never divided by.
# 2. H_E is certified positive semi-definite, a zero eigenvalue allowed: only a dense spectrum certifies that (a
#    Ritz value is an upper bound, and a Ritz value minus its residual bounds some eigenvalue, not the lowest);
#    its lowest eigenvalue minus the round-off of the formed matrix >= -PSD_TOLERANCE * lambda_max.
# 3. H_perp is certified negative by a clear gap: its lowest Ritz value (the Rayleigh quotient of a vector of
#    E-perp: an upper bound of lambda_min(H_perp)) is below -SPECTRAL_GAP times every bound in play (any negative
#    part of H_E, the residual of H_perp's pair, and HESSIAN_ROUNDOFF * lambda_max, where Hessian-vector products
#    stop resolving eigenvalues). Not one band shared by both tests: a point that is a saddle on E and on E-perp
#    alike must not straddle it.
SPECTRAL_GAP = 10.0
# 4. The anchored perturbation along the lowest E-perp eigenvector grows at the predicted rate: log of the measured
#    factor per step within this fraction of the log of |1 - eta lambda_min(H_perp)|.
GROWTH_TOLERANCE = 0.01
# Two trials whose R and ||A*|| agree to this (relative) ended at one point (up to a symmetry of the network):
# seeds that share a point are not independent evidence.
SAME_POINT = 1e-9

HOLDS, FAILS, TOO_FEW = "holds", "does not hold", "not enough complete trials"
DEMONSTRATED, NOT_OBSERVED = "demonstrated", "not observed"
REL_WORDS = "distance from E relative to the weight norm (dist_E/‖A‖)"
RATIO_WORDS = "distance from E per unit distance travelled (dist_E/dist_init)"


@dataclass
class Verdict:
    experiment: str
    subject: str  # e.g. "rot" or "cnn cross (aug)", as the experiment names the cell
    claim: str
    science: str  # where docs/science.md states the claim, with the section's anchor
    criterion: str
    outcome: str  # HOLDS, FAILS or TOO_FEW
    evidence: str  # the measured medians in words, against the threshold
    figure: str  # the figure file that shows the evidence
    cell: tuple = ()  # (experiment, cell, mode, swept as JSON): the cell judged, as the summary names it
    kind: str = ""  # the kind of claim judged
    expected: str = ""  # a detector control: the outcome the detector must give (else empty)
    source: str = ""  # the claim of docs/science.md §1 it bears on ("claim 3"), "Equi", "controls", ...
    value: float = float("nan")  # the statistic judged (a median over seeds; for claim 3, trials showing it)

    @property
    def as_expected(self) -> bool | None:
        """For a control: whether the detector gave the outcome it must; None for a claim."""
        return None if not self.expected else self.outcome == self.expected

    @property
    def line(self) -> str:
        return f"{self.subject}: {self.claim} — {self.outcome} ({self.evidence})"


@dataclass
class Note:
    """A cell about which no claim is judged, and why."""

    experiment: str
    subject: str
    text: str

    @property
    def line(self) -> str:
        return f"{self.subject}: {self.text}"


@dataclass
class Assessment:
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def number(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.3g}"


def _median(values: ArrayLike) -> float:
    return quartiles(values)[1]


def roundoff_threshold(dtypes: Iterable[str]) -> float:
    """The loosest threshold of the dtypes present (a cell normally has one)."""
    return max(ROUNDOFF_THRESHOLD.get(str(d), ROUNDOFF_THRESHOLD["float32"]) for d in dtypes)


def _seeds(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


class CellTrials(Protocol):
    """What a kind of claim asks about other cells than its own (``analysis.claim_checker.ClaimChecker``)."""

    def members(self, experiment: str, cell: GridCell) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(manifest trials, complete end points) of one cell."""
        ...


class ClaimKind:
    """How one kind of claim (``Claim.kind``) is judged on a cell: its criterion in words, the cells whose
    complete trials it needs, and ``judge()``: (passed, the evidence in words, the value compared)."""

    kind: ClassVar[str]
    existence: ClassVar[bool] = False  # an existence claim: demonstrated or not observed, not holds or fails

    def __init__(self, checker: CellTrials, experiment: str, claim: Claim, members: pd.DataFrame,
                 done: pd.DataFrame):
        self.checker, self.experiment, self.claim, self.members, self.done = checker, experiment, claim, members, done

    @classmethod
    def figure(cls, experiment: Experiment, cell: GridCell | None = None) -> str:
        """The figure a verdict cites. Leaving E is a proportion to the distance travelled, read on the linear
        figure where there is one; claims about stationary points are read on their spectra."""
        if "trajectory" not in experiment.standard_figures:
            return figure_names.spectra(experiment) + ".png"
        return figure_names.cell_trajectory(experiment, not figure_names.has_linear_trajectory(experiment), cell)

    def criterion(self) -> str:
        raise NotImplementedError

    def cells(self) -> list[tuple[pd.DataFrame, str]]:
        """(complete end points, how the verdict names them) of every cell the claim needs."""
        return [(self.done, "")]

    def judge(self) -> tuple[bool, str, float]:
        raise NotImplementedError


class IdentityAtRoundoff(ClaimKind):
    kind = IDENTITY_AT_ROUNDOFF

    @classmethod
    def figure(cls, experiment: Experiment, cell: GridCell | None = None) -> str:
        return ""  # numbers in the report

    def criterion(self) -> str:
        return (f"median over seeds of the larger of ‖∇R_aug − Π_E∇R‖/‖∇R‖ at A⁰ and at A* ≤ "
                f"{IDENTITY_THRESHOLD:g} (`IDENTITY_THRESHOLD`)")

    def judge(self) -> tuple[bool, str, float]:
        done = self.done
        worst = np.maximum(done["identity_residual_vs_plain"], done["start_identity_residual_vs_plain"])
        median = _median(worst)
        passed = bool(median <= IDENTITY_THRESHOLD)
        return passed, (f"‖∇R_aug − Π_E∇R‖ relative to ‖∇R‖, the larger of A⁰ and A*, median over "
                        f"{_seeds(len(done))}: {number(median)} {'≤' if passed else '>'} {IDENTITY_THRESHOLD:g}; "
                        f"relative to ‖∇R_aug‖ at A*: {number(_median(done['identity_residual']))}"), median


class IdentityFails(ClaimKind):
    kind = IDENTITY_FAILS

    @classmethod
    def figure(cls, experiment: Experiment, cell: GridCell | None = None) -> str:
        return ""  # numbers in the report

    def criterion(self) -> str:
        return (f"median over seeds of ‖∇R_aug − Π_E∇R‖/‖∇R_aug‖ at A⁰ ≥ {IDENTITY_FAILS_MIN:g} "
                "(`IDENTITY_FAILS_MIN`)")

    def judge(self) -> tuple[bool, str, float]:
        done = self.done
        median = _median(done["start_identity_residual"])
        passed = bool(median >= IDENTITY_FAILS_MIN)
        off = _median(_ratio_of(done["aug_grad_off_E"], done["projected_grad_norm"]))
        return passed, (f"‖∇R_aug − Π_E∇R‖/‖∇R_aug‖ at A⁰, median over {_seeds(len(done))}: {number(median)} "
                        f"{'≥' if passed else '<'} {IDENTITY_FAILS_MIN:g}; at A* the part of ∇R_aug off E is "
                        f"{number(off)} × ‖Π_E∇R‖"), median


class StabilityDiffers(ClaimKind):
    kind = STABILITY_DIFFERS
    existence = True

    def criterion(self) -> str:
        return (f"some trial with all of: A* stationary on the curvature scale (‖Π_E∇R‖ ≤ "
                f"{STATIONARITY_TOLERANCE:g}·|λ|·‖A*‖, `STATIONARITY_TOLERANCE`); H_E certified ⪰ 0 (lowest Ritz "
                f"value − residual ≥ −{PSD_TOLERANCE:g}·λ_max, `PSD_TOLERANCE`); H_⊥ certified negative by a gap "
                f"(lowest Ritz value < −{SPECTRAL_GAP:g} × every bound, `SPECTRAL_GAP`); the anchored "
                f"perturbation along the lowest E⊥ eigenvector growing as predicted (log-factors within "
                f"{GROWTH_TOLERANCE:.0%}, `GROWTH_TOLERANCE`)")

    def judge(self) -> tuple[bool, str, float]:
        done = self.done
        found = [claim3_evidence(row) for _, row in done.iterrows()]
        shown = [(trial_id, e) for trial_id, e in zip(done["trial_id"], found) if e.demonstrated]
        evidence = f"{len(shown)} of {len(done)} trials"
        example = shown[0] if shown else next(zip(done["trial_id"], found), None)
        if example is not None:
            evidence += f"; {example[0]}: {example[1].numbers}"
        reasons: dict[str, int] = {}
        for e in found:
            for reason in e.reasons:
                kind = reason.split(" (", 1)[0]
                reasons[kind] = reasons.get(kind, 0) + 1
        if reasons:
            evidence += "; not observed because: " + ", ".join(f"{k} ({n})" for k, n in reasons.items())
        return bool(shown), evidence, float(len(shown))


class StaysInE(ClaimKind):
    kind = STAYS_IN_E

    @classmethod
    def figure(cls, experiment: Experiment, cell: GridCell | None = None) -> str:
        return figure_names.cell_trajectory(experiment, True, cell)  # round-off: visible on a log axis only

    def __init__(self, *args: Any):
        super().__init__(*args)
        phase = self.claim.phase
        self.threshold = roundoff_threshold(self.members["dtype"])
        self.dtypes = "/".join(sorted(set(self.members["dtype"])))
        self.column = "max_rel_dist_E" if phase is None else f"max_rel_dist_E_phase{phase}"
        self.epochs = "every epoch" if phase is None else f"the epochs of phase {phase}"

    def criterion(self) -> str:
        return (f"median over seeds of the largest dist_E/‖A‖ (all layers) over {self.epochs} ≤ {self.threshold:g} "
                f"(`ROUNDOFF_THRESHOLD`, {self.dtypes})")

    def judge(self) -> tuple[bool, str, float]:
        done, threshold = self.done, self.threshold
        median = _median(done[self.column] if self.column in done else [])
        passed = bool(median <= threshold)
        return passed, (f"largest {REL_WORDS} over {self.epochs}, median over {_seeds(len(done))}: "
                        f"{number(median)} {'≤' if passed else '>'} {threshold:g}, the {self.dtypes} round-off "
                        "threshold"), median


class LeavesE(ClaimKind):
    kind = LEAVES_E

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.min_ratio = MIN_RATIOS[self.claim.threshold]
        self.threshold = roundoff_threshold(self.members["dtype"])

    def criterion(self) -> str:
        criterion = f"median final dist_E/dist_init ≥ {self.min_ratio:g} (`{self.claim.threshold}`)"
        if self.claim.above_roundoff:
            criterion += f" and median final dist_E/‖A‖ > {self.threshold:g} (`ROUNDOFF_THRESHOLD`)"
        return criterion

    def judge(self) -> tuple[bool, str, float]:
        done, min_ratio, threshold, claim = self.done, self.min_ratio, self.threshold, self.claim
        ratio, relative = _median(done["final_ratio"]), _median(done["final_rel_dist_E"])
        passed = bool(ratio >= min_ratio) and (not claim.above_roundoff or bool(relative > threshold))
        evidence = f"final {RATIO_WORDS}, median over {_seeds(len(done))}: {number(ratio)} " \
                   f"{'≥' if ratio >= min_ratio else '<'} {min_ratio:g}"
        if claim.above_roundoff:
            evidence += (f"; final {REL_WORDS}: {number(relative)} {'>' if relative > threshold else '≤'} "
                         f"{threshold:g}, the round-off threshold")
        return passed, evidence, ratio


class BelowReference(ClaimKind):
    kind = BELOW_REFERENCE

    def __init__(self, *args: Any):
        super().__init__(*args)
        reference = self.claim.reference
        assert reference is not None, "a below-reference claim names the cell it stays below"
        _, self.reference = self.checker.members(self.experiment, reference)
        self.words = experiment_of(self.experiment).series_words(reference.mode, reference.swept)

    def criterion(self) -> str:
        return f"median final dist_E/dist_init of this cell < that of {self.words}"

    def cells(self) -> list[tuple[pd.DataFrame, str]]:
        mine = experiment_of(self.experiment).mode_words(self.claim.cell.mode)
        return [(self.done, mine), (self.reference, self.words)]

    def judge(self) -> tuple[bool, str, float]:
        done, reference, words = self.done, self.reference, self.words
        mine, theirs = _median(done["final_ratio"]), _median(reference["final_ratio"])
        passed = bool(mine < theirs)
        return passed, (f"final {RATIO_WORDS}, median over seeds: {number(mine)} ({_seeds(len(done))}) "
                        f"{'<' if passed else '≥'} {words} {number(theirs)} ({_seeds(len(reference))})"), mine


# Every kind of claim an experiment may declare about a cell (ALL_OF and ANY_OF combine these verdicts).
KINDS: dict[str, type[ClaimKind]] = {k.kind: k for k in (StaysInE, LeavesE, BelowReference, IdentityAtRoundoff,
                                                         IdentityFails, StabilityDiffers)}


def evidence_figure(experiment: Experiment, kind: str, cell: GridCell | None = None) -> str:
    """The figure that a verdict on a claim of ``kind`` about ``cell`` cites."""
    return KINDS[kind].figure(experiment, cell)


@dataclass
class Claim3Evidence:
    """What one trial shows about claim 3: the verdict, why not (in words), and the numbers behind it."""

    demonstrated: bool
    reasons: list[str]
    numbers: str
    stationarity: float  # ‖Π_E∇R‖ / (|λ|·‖A*‖); NaN at a point without a curvature scale
    e_lower_bound: float  # λ_min(H_E) certified from below, relative to λ_max; NaN where not certified
    perp_upper_bound: float  # λ_min(H_⊥) certified from above, relative to λ_max
    growth_error: float  # |log measured / log predicted − 1| of the anchored lowest run
    point: str = ""  # the point, where it has no curvature scale: pipeline.core.stationarity.ZERO_POINT or DEGENERATE


def _get(row: Mapping[str, Any], name: str, default: Any) -> Any:
    """A measurement that trials of older versions (or other experiments in one table) may lack."""
    value = row.get(name, default)
    return default if value is None or (isinstance(value, float) and np.isnan(value)) else value


def claim3_evidence(row: Mapping[str, Any]) -> Claim3Evidence:
    """Judge one trial's measurements at A* (a row of the measurements table) against the four conditions above.

    Trials measured before spectra were certified (no ``spectrum_method_E``) had H_E by Lanczos only: their
    E-block is not certified."""
    scale = float(row["lambda_max"])
    dense_E = _get(row, "spectrum_method_E", "lanczos") == "dense"
    dense_perp = _get(row, "spectrum_method_perp", "lanczos") == "dense"
    lowest_E = float(row["lambda_min_E"])
    e_low = float(_get(row, "lambda_min_E_lower_bound", np.nan)) if dense_E else np.nan
    perp = float(row["lambda_min_perp"])
    perp_residual = abs(float(row["lambda_min_perp_residual"]))
    negative_E = max(0.0, -e_low) if dense_E else 0.0
    bound = max(negative_E, perp_residual, HESSIAN_ROUNDOFF * scale)
    theta_norm = float(row["theta_norm"])
    curvature = curvature_scale(e_low if dense_E else lowest_E, perp, scale)
    kind = point_kind(curvature, theta_norm, float(_get(row, "start_theta_norm", theta_norm)))
    ratio = stationarity(float(row["final_projected_grad_norm"]), curvature, theta_norm)
    measured, predicted = float(row["lowest_measured"]), float(row["lowest_predicted"])
    with np.errstate(divide="ignore", invalid="ignore"):
        growth_error = abs(np.log(measured) / np.log(predicted) - 1) if predicted > 1 else float("nan")
    reasons = []
    if kind == ZERO_POINT:
        reasons.append(f"the zero point (A* = 0: ‖A*‖ = {number(theta_norm)}, no scale to judge stationarity on)")
    elif kind == DEGENERATE:
        reasons.append(f"degenerate point (every curvature judged is at round-off, |λ| ≤ {HESSIAN_ROUNDOFF:g}·λ_max)")
    elif not ratio <= STATIONARITY_TOLERANCE:
        reasons.append(f"not converged (‖Π_E∇R‖ = {number(ratio)}·|λ|·‖A*‖ > {STATIONARITY_TOLERANCE:g})")
    if not dense_E:
        reasons.append(f"H_E not certified (dim E = {_dimension(row, 'E')}: only a dense spectrum bounds λ_min(H_E) "
                       f"from below; its lowest Ritz value is {number(lowest_E / scale)}·λ_max)")
    elif negative_E > PSD_TOLERANCE * scale:
        reasons.append(f"E-block not PSD (λ_min(H_E) = {number(float(e_low) / scale)}·λ_max, dense: "
                       f"{int(_get(row, 'negative_count_E', -1))} negative eigenvalues)")
    outside = float(_get(row, "ritz_outside_perp", 0.0))
    if outside > OUTSIDE_TOLERANCE:
        reasons.append(f"H_⊥'s Ritz vector not in E⊥ (a part {number(outside)} in E)")
    elif perp >= 0:
        reasons.append(f"H_⊥ ⪰ 0 (dense: λ_min(H_⊥) = {number(perp / scale)}·λ_max)" if dense_perp else
                       f"no negative eigenvalue of H_⊥ found (Lanczos, {int(_get(row, 'krylov_dim_perp', 0))} steps: "
                       f"λ_min(H_⊥) ≤ {number(perp / scale)}·λ_max; not a proof that there is none)")
    elif not perp < -SPECTRAL_GAP * bound:
        reasons.append(f"H_⊥ not clearly negative (λ_min(H_⊥) ≤ {number(perp / scale)}·λ_max, not below "
                       f"−{SPECTRAL_GAP:g} × {number(bound / scale)}·λ_max)")
    if perp < 0 and not growth_error <= GROWTH_TOLERANCE:
        reasons.append(f"growth off (measured {measured:.7g} per step, predicted {predicted:.7g})")
    numbers = (f"‖Π_E∇R‖/(|λ|‖A*‖) {number(ratio)}, λ_min(H_E) "
               + (f"≥ {number(e_low / scale)}·λ_max (dense)" if dense_E else f"≤ {number(lowest_E / scale)}·λ_max "
                  "(Lanczos)")
               + f", λ_min(H_⊥) ≤ {number(perp / scale)}·λ_max (residual {number(perp_residual / scale)}), growth "
               f"{measured:.7g}/{predicted:.7g}")
    return Claim3Evidence(not reasons, reasons, numbers, ratio, e_low / scale, perp / scale, growth_error, kind)


def _dimension(row: Mapping[str, Any], block: str) -> str:
    dim = int(_get(row, f"dimension_{block}", -1))
    return str(dim) if dim >= 0 else "unknown"


def _ratio_of(numerator: ArrayLike, denominator: ArrayLike) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(numerator, dtype=float) / np.asarray(denominator, dtype=float)
