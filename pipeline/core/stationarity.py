"""When a point of E counts as stationary for Experiment S: the curvature-scale criterion (docs/science.md §7).

One rule, used twice: the search for A* stops when it holds (on estimates of the curvatures, with a margin),
and the claim-3 verdict judges it (on the certified spectra, ``analysis.claims``). No torch here: the
analysis imports it.

A gradient g at a point is a slope. Along an eigenvector of curvature λ the stationary point is about ‖g‖/|λ|
away, which must be short against ‖A*‖ for the spectrum at A* to speak about stability there; the curvature
that matters is the smallest one whose sign is judged: |λ_min(H_⊥)|, and λ_min(H_E) where it is clearly above
zero (a zero eigenvalue of H_E, along a curve of minima, is allowed and has no scale). A drop of the gradient
relative to its start is not enough: a large start leaves a gradient that is large on that scale.

Two kinds of point have no such scale and are named instead of divided by: a *degenerate* point, where every
curvature judged is at round-off of the Hessian (|λ| ≤ HESSIAN_ROUNDOFF × λ_max), and the *zero point*
A* = 0, where ‖A*‖ vanishes.
"""

from __future__ import annotations

import math

# ‖Π_E∇R‖ ≤ STATIONARITY_TOLERANCE × |λ| × ‖A*‖: stationary on the curvature scale.
STATIONARITY_TOLERANCE = 1e-3
# An eigenvalue within this fraction of λ_max of 0 is round-off of the Hessian-vector products.
HESSIAN_ROUNDOFF = 1e-12
# H_E counts as positive semi-definite down to −PSD_TOLERANCE × λ_max; below, the point is a saddle of R on E.
PSD_TOLERANCE = 1e-8

# A Ritz vector of a block whose part outside the block's space exceeds this fraction of its norm is not an
# eigenvector of that block: its Rayleigh quotient mixes in the 0 that the projected operator gives the outside.
OUTSIDE_TOLERANCE = 1e-8
# ‖A*‖ below this fraction of ‖A⁰‖ is the zero point: the weights have decayed to round-off.
ZERO_NORM = 1e-12

DEGENERATE = "degenerate"  # every judged curvature at round-off
ZERO_POINT = "zero point"  # A* = 0


def curvature_scale(lowest_E: float, lowest_perp: float, lambda_max: float) -> float:
    """The smallest curvature whose sign is judged: |λ_min(H_⊥)|, and λ_min(H_E) where it is clearly above zero;
    NaN where each is at round-off (a degenerate point). A λ_min(H_⊥) of NaN (not known) is left out."""
    floor = HESSIAN_ROUNDOFF * abs(lambda_max)
    judged = ([abs(lowest_perp)] if math.isfinite(lowest_perp) else []) + ([lowest_E] if lowest_E > floor else [])
    judged = [value for value in judged if value > floor]
    return min(judged) if judged else math.nan


def stationarity(grad_norm: float, curvature: float, theta_norm: float) -> float:
    """‖Π_E∇R‖ / (|λ| ‖A*‖); NaN where there is no scale to judge on (see :func:`point_kind`)."""
    if not math.isfinite(curvature) or curvature <= 0 or theta_norm <= 0:  # the point is named instead
        return math.nan
    return grad_norm / (curvature * theta_norm)


def point_kind(curvature: float, theta_norm: float, start_norm: float) -> str:
    """"" for a point with a curvature scale; else what it is (never divided by): the zero point where ‖A*‖ is
    at most ZERO_NORM × ‖A⁰‖, degenerate where no judged curvature is above round-off."""
    if theta_norm <= ZERO_NORM * start_norm:
        return ZERO_POINT
    if not math.isfinite(curvature):
        return DEGENERATE
    return ""
