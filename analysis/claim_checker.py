"""The claims of an experiment's cells judged, cell by cell and combined: every claim an experiment declares
(``Experiment.claims``) becomes a verdict by its kind (``analysis.claims.KINDS``), a verdict combined from others
(``COMBINATIONS`` below) or a note. The thresholds and each kind's criterion are ``analysis.claims``'s.
"""

from __future__ import annotations

import json
from typing import ClassVar

import pandas as pd

from analysis.claims import (
    DEMONSTRATED,
    FAILS,
    HOLDS,
    KINDS,
    MIN_COMPLETE_TRIALS,
    NOT_OBSERVED,
    TOO_FEW,
    Assessment,
    Note,
    Verdict,
    evidence_figure,
)
from analysis.loading import experiment_of
from analysis.science import cite
from analysis.summary import CELL, cell_order
from pipeline.experiments.claims import ALL_OF, ANY_OF, NO_CLAIM, Claim, GridCell


def grid_cells(trials: pd.DataFrame) -> dict[str, list[tuple[GridCell, pd.DataFrame]]]:
    """Per experiment, its cells in reading order, each with its manifest trials."""
    cells: dict[str, list[tuple[GridCell, pd.DataFrame]]] = {}
    for _, members in cell_order(trials).groupby(CELL, sort=False):
        first = members.iloc[0]
        settings = [json.loads(text) for text in members["settings"]]
        values = {name: tuple(json.loads(v) for v in sorted({json.dumps(s.get(name)) for s in settings}))
                  for name in settings[0]}
        cell = GridCell(first["cell"], first["mode"], json.loads(first["swept"]), values)
        cells.setdefault(first["experiment"], []).append((cell, members))
    return cells


class ClaimChecker:
    """Evaluates the experiments' claims; each reads the complete trials' end points of its cells."""

    def __init__(self, trials: pd.DataFrame, end_points: pd.DataFrame, min_complete: int = MIN_COMPLETE_TRIALS):
        self.end_points, self.min_complete = end_points, min_complete
        self.cells = grid_cells(trials)
        self.assessment = Assessment()

    def members(self, experiment: str, cell: GridCell) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(manifest trials, complete end points) of one cell."""
        for known, members in self.cells.get(experiment, []):
            if (known.cell, known.mode, known.swept) == (cell.cell, cell.mode, cell.swept):
                return members, self.end_points[self.end_points["trial_id"].isin(set(members["trial_id"]))]
        empty = pd.DataFrame(columns=["trial_id", "dtype"])
        return empty, self.end_points.iloc[0:0]

    def _too_few(self, *cells: tuple[pd.DataFrame, str]) -> str | None:
        short = [f"{label + ': ' if label else ''}{len(done)} complete" for done, label in cells
                 if len(done) < self.min_complete]
        if not short:
            return None
        return f"{', '.join(short)}; need at least {self.min_complete} per cell"

    def run(self) -> Assessment:
        for experiment_name, cells in self.cells.items():
            experiment = experiment_of(experiment_name)
            declared = experiment.claims([cell for cell, _ in cells])
            spoken_of = set()
            for claim in declared:
                spoken_of.add(_key(claim.cell))
                if claim.reference is not None:
                    spoken_of.add(_key(claim.reference))
                self.assess(experiment_name, claim)
            for cell, _ in cells:
                if _key(cell) not in spoken_of:
                    words = experiment.series_words(cell.mode, cell.swept)
                    self.assessment.notes.append(Note(
                        experiment_name, f"{experiment.display_title()} {cell.cell} / {words}",
                        f"no claim applies to cell {cell.cell} / mode {cell.mode}: docs/science.md states none "
                        "that its trajectories could test"))
        return self.assessment

    def assess(self, experiment: str, claim: Claim) -> None:
        """A claim's verdict, or its note: judged on its cell's trials (``KINDS``), combined from the verdicts
        of other claims (``COMBINATIONS``), or a note where nothing is claimed (``NO_CLAIM``)."""
        if claim.kind == NO_CLAIM:
            self.assessment.notes.append(Note(experiment, claim.subject, claim.claim))
            return
        combination = COMBINATIONS.get(claim.kind)
        self.assessment.verdicts.append(self.judge(experiment, claim) if combination is None
                                        else self.combine(experiment, claim, combination))

    def judge(self, experiment: str, claim: Claim) -> Verdict:
        members, done = self.members(experiment, claim.cell)
        science = cite(claim.section, claim.source)
        figure = evidence_figure(experiment_of(experiment), claim.kind, claim.cell)
        kind = KINDS.get(claim.kind)
        if kind is None:
            raise ValueError(f"unknown kind of claim {claim.kind!r} declared by {experiment}")
        judged = kind(self, experiment, claim, members, done)
        criterion = judged.criterion()
        too_few = self._too_few(*judged.cells())
        value = float("nan")
        if too_few:
            outcome, evidence = TOO_FEW, too_few
        else:
            passed, evidence, value = judged.judge()
            if kind.existence:  # shown, or not seen
                outcome = DEMONSTRATED if passed else NOT_OBSERVED
            else:
                outcome = HOLDS if passed else FAILS
        return Verdict(experiment, claim.subject, claim.claim, science, criterion, outcome, evidence, figure,
                       (experiment, *_key(claim.cell)), claim.kind, claim.expected, claim.source, value)

    def combine(self, experiment: str, claim: Claim, combination: Combination) -> Verdict:
        """A claim over every cell that carries a claim of kind ``claim.threshold``, from their verdicts."""
        members = [v for v in self.assessment.verdicts
                   if v.experiment == experiment and v.kind == claim.threshold and not v.expected]
        judged = [v for v in members if v.outcome != TOO_FEW]
        science = cite(claim.section, claim.source)
        figure = evidence_figure(experiment_of(experiment), claim.threshold, claim.cell)
        named = ", ".join(f"{v.subject.rsplit(', ', 1)[-1]}: {v.outcome}" for v in members)
        if not judged:
            outcome, evidence = TOO_FEW, f"no network has enough complete trials ({named or 'none'})"
        else:
            outcome, evidence = combination.outcome(members, judged, named)
        return Verdict(experiment, claim.subject, claim.claim, science, combination.criterion, outcome, evidence,
                       figure, (experiment, *_key(claim.cell)), claim.kind, source=claim.source)


class Combination:
    """How a claim over an experiment's cells reads the verdicts of the claims it combines (those of the kind its
    ``threshold`` names, controls left out): its criterion in words, and ``outcome(members, judged, named)``:
    (outcome, evidence in words) from the verdicts of every member and of those judged (enough trials)."""

    kind: ClassVar[str]
    criterion: ClassVar[str]

    def outcome(self, members: list[Verdict], judged: list[Verdict], named: str) -> tuple[str, str]:
        raise NotImplementedError


class AllOf(Combination):
    kind = ALL_OF
    criterion = "holds in every network where it is claimed"

    def outcome(self, members: list[Verdict], judged: list[Verdict], named: str) -> tuple[str, str]:
        held = [v for v in judged if v.outcome == HOLDS]
        outcome = HOLDS if len(held) == len(members) else FAILS if len(held) < len(judged) else TOO_FEW
        return outcome, f"holds in {len(held)} of {len(members)} networks ({named})"


class AnyOf(Combination):
    kind = ANY_OF
    criterion = "demonstrated in at least one network"

    def outcome(self, members: list[Verdict], judged: list[Verdict], named: str) -> tuple[str, str]:
        shown = [v for v in judged if v.outcome == DEMONSTRATED]
        return (DEMONSTRATED if shown else NOT_OBSERVED,
                f"shown in {len(shown)} of {len(members)} networks ({named}); the spectra are in the report")


# Every kind of claim that combines the verdicts of others (an experiment's claim over all its networks).
COMBINATIONS: dict[str, Combination] = {c.kind: c for c in (AllOf(), AnyOf())}


def _key(cell: GridCell) -> tuple:
    return cell.cell, cell.mode, json.dumps(cell.swept, sort_keys=True)


def evaluate_claims(trials: pd.DataFrame, end_points: pd.DataFrame,
                    min_complete: int = MIN_COMPLETE_TRIALS) -> Assessment:
    """Verdicts for every claim the experiments declare about the manifest's cells, and a note for every
    cell about which nothing is claimed."""
    return ClaimChecker(trials, end_points, min_complete).run()


def check_claims(trials: pd.DataFrame, end_points: pd.DataFrame,
                 min_complete: int = MIN_COMPLETE_TRIALS) -> list[Verdict]:
    return evaluate_claims(trials, end_points, min_complete).verdicts
