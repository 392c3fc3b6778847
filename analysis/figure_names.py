"""The names of the figures an experiment gets, shared by the figures and the verdicts that cite them.

Trajectory figures plot dist_E against the experiment's ``trajectory_x``: ``<experiment>_dist_vs_travelled``
or ``<experiment>_dist_vs_epoch``, with ``_layers`` for a row of panels per layer and ``_log`` for a
logarithmic dist_E axis. The linear figure is made only where x is the distance travelled: claim 5 is a proportion between
the two, which a linear plot shows as a straight line; against epochs, distances that differ by orders of
magnitude are only readable on a log axis.
"""

from __future__ import annotations

from typing import Any

from pipeline.experiments.base import Experiment
from pipeline.experiments.claims import GridCell


def arm_experiment_name(experiment: Experiment[Any, Any], arm: object) -> str:
    """The name an arm's figures go by: the experiment's own for its own arm (``Experiment.arm_key`` at its
    default), else ``<experiment>_<arm>`` (``groups_sgd``)."""
    if experiment.arm_key is None or arm == getattr(experiment.settings_type(), experiment.arm_key):
        return experiment.name
    return f"{experiment.name}_{arm}"


def has_linear_trajectory(experiment: Experiment[Any, Any]) -> bool:
    return experiment.trajectory_x == "travelled"


def trajectory(experiment: Experiment[Any, Any], log: bool = False) -> str:
    return f"{experiment.name}_dist_vs_{experiment.trajectory_x}" + ("_log" if log else "")


def ratio(experiment: Experiment[Any, Any]) -> str:
    """dist_E over the distance travelled against the epoch (log): made where x is the distance travelled."""
    return f"{experiment.name}_ratio_vs_epoch_log"


def layers(experiment: Experiment[Any, Any]) -> str:
    """A row of panels per measured layer; always log: layers differ by orders of magnitude."""
    return f"{experiment.name}_dist_vs_{experiment.trajectory_x}_layers_log"


def training_curves(experiment: Experiment[Any, Any]) -> str:
    return f"{experiment.name}_training_curves"


def steps(experiment: Experiment[Any, Any]) -> str:
    return f"{experiment.name}_steps_log"


def spectra(experiment: Experiment[Any, Any]) -> str:
    """The ends of the spectra of H_E and H_⊥ at A*, a panel per cell (measurements after training)."""
    return f"{experiment.name}_spectra"


def perturbations(experiment: Experiment[Any, Any]) -> str:
    """dist_E along Aug gradient descent from A* + a perturbation off E, plain and regularised."""
    return f"{experiment.name}_perturbations_log"


def cell_trajectory(experiment: Experiment[Any, Any], log: bool, cell: GridCell | None = None) -> str:
    """The trajectory figure (its PNG) of a cell: ``cell`` (a GridCell), where the experiment has arms, the
    figure of the cell's arm."""
    name = trajectory(experiment, log=log)
    if cell is not None and experiment.arm_key is not None:
        own = getattr(experiment.settings_type(), experiment.arm_key)
        arm = arm_experiment_name(experiment, cell.value(experiment.arm_key, own))
        name = arm + name[len(experiment.name):]
    return name + ".png"
