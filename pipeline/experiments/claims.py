"""What an experiment claims about the cells of a results folder, as data: the cells the analysis sees
(:class:`GridCell`), a claim about one (:class:`Claim`) and the kinds of claim.

An experiment declares its claims (``Experiment.claims``); ``analysis/claims.py`` judges them and owns the
thresholds (docs/science.md §7). A kind of claim is a name here and a behaviour there: a judge per kind
that reads a cell's trials (``analysis.claims.KINDS``), a combination per kind that reads the verdicts of
other claims (``analysis.claim_checker.COMBINATIONS``), and :data:`NO_CLAIM`, which is a note, not a verdict.

Torch-free, and it imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The kinds of claim an experiment can declare about its cells (evaluated by ``analysis/claims.py``,
# which owns the thresholds; see docs/science.md §7).
STAYS_IN_E = "stays in E"  # median over seeds of the largest dist_E/||A|| over the epochs concerned <= round-off
LEAVES_E = "leaves E"  # median final dist_E/dist_init >= a named minimum ratio (and optionally rel > round-off)
BELOW_REFERENCE = "below reference"  # median final dist_E/dist_init below that of a reference cell
NO_CLAIM = "no claim"  # nothing to judge in this cell, and why
# Claims about stationary points (Experiment S), judged on what a trial measured at A* (``results/``).
IDENTITY_AT_ROUNDOFF = "identity at round-off"  # claim 1: grad R_aug = Pi_E grad R to round-off
IDENTITY_FAILS = "identity fails"  # the same identity off by orders of magnitude where its premises fail
STABILITY_DIFFERS = "stability differs"  # claim 3: H_E >= 0 but lambda_min(H_perp) < 0, and the growth shows it
# Over all the cells of an experiment that carry a claim of the kind named in ``threshold``: it holds in
# every one (ALL_OF) or is shown by at least one (ANY_OF).
ALL_OF = "all of"
ANY_OF = "any of"


@dataclass(frozen=True)
class GridCell:
    """A cell of a results folder as the analysis sees it: the seeds of one cell, mode and swept values.

    ``values`` maps every setting to the distinct values its trials have (one value, unless a setting
    that does not distinguish trials in the manifest still differs), so that claims can read the
    settings that decide what applies (e.g. ``augment``) without naming them in the manifest's labels.
    """

    cell: str
    mode: str
    swept: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)

    def value(self, name: str, default: Any = None) -> Any:
        """The setting's value if all trials of the cell share it; ``default`` if absent or mixed."""
        found = self.values.get(name, ())
        return found[0] if len(found) == 1 else default


@dataclass(frozen=True)
class Claim:
    """A claim about one cell, as data: what is claimed, where the science states it, how to judge it.

    ``threshold`` names a constant of ``analysis/claims.py`` (``NOM_MIN_RATIO``, ``LEAVES_E_MIN_RATIO``)
    rather than holding a number, so that every threshold lives where docs/science.md §7 says it does.
    """

    kind: str  # one of the kinds above
    subject: str  # how verdicts name the cell, e.g. "rot" or "cnn cross (aug)"
    claim: str  # e.g. "Aug (orbit) stays in E"; for NO_CLAIM, a sentence: what does not apply, and why
    cell: GridCell
    section: str = ""  # the section of docs/science.md that states the claim, e.g. "1"
    source: str = ""  # where in that section, e.g. "claim 2"
    phase: int | None = None  # STAYS_IN_E: the epochs concerned are this phase's (None: every epoch)
    threshold: str = ""  # LEAVES_E: the named minimum of dist_E/dist_init; ALL_OF/ANY_OF: the kind combined
    above_roundoff: bool = False  # LEAVES_E: also require final dist_E/||A|| above round-off
    reference: GridCell | None = None  # BELOW_REFERENCE: the cell to stay below
    # A control of a detector (STABILITY_DIFFERS on a model where the answer is known): the verdict it must give.
    # Controls validate the detector; they are not evidence for the paper's claim and are not combined into it.
    expected: str = ""
