"""Analysis of a results folder: tidy tables, summary statistics, paper figures and claim verdicts.

    import analysis
    epochs = analysis.load("OUT")        # one row per trial x epoch x layer (+ "total")
    result = analysis.aggregate("OUT")   # writes OUT/aggregate/; result.verdict_lines, result.paths

See ``analysis/README.md`` for the tables' columns, the output files and the claims' criteria.
"""

from analysis.aggregation import AggregateResult, aggregate
from analysis.claim_checker import check_claims, evaluate_claims
from analysis.claims import (
                     LEAVES_E_MIN_RATIO,
                     MIN_COMPLETE_TRIALS,
                     NOM_MIN_RATIO,
                     ROUNDOFF_THRESHOLD,
                     Assessment,
                     Note,
                     Verdict,
)
from analysis.loading import Results, load, load_steps, load_trials, read_results

__all__ = ["AggregateResult", "aggregate", "load", "load_steps", "load_trials", "read_results", "Results",
           "Verdict", "Note", "Assessment", "check_claims", "evaluate_claims", "ROUNDOFF_THRESHOLD", "NOM_MIN_RATIO",
           "LEAVES_E_MIN_RATIO", "MIN_COMPLETE_TRIALS"]
