"""What every model of the pipeline exposes to training and to the trial store.

A model is measured layer by layer in *weight space*: ``layer_weights()`` gives each measured layer as a
tensor, ``project_layer`` its orthogonal projection onto E (intersected with L where L is not closed
under the group average). Training and the store only ever talk to models through this interface.

A weight snapshot (``snapshot``) is the whole model: the measured layers in weight space, plus every
parameter that no measured layer holds whole, under its ``named_parameters()`` name; ``load_snapshot``
sets every parameter from one, exactly. Where a measured layer is a parameter or a view of all of it
(``layer_parameters``), that parameter is stored once, as the layer: a model whose parameters are its
measured layers gets both methods without code of its own.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.schema import DIST_E, DIST_INIT, NORM, STEP_PERP


class MeasuredModel(nn.Module):
    group_name: str = ""

    def initialize(self, generator: torch.Generator) -> None:
        """Draw the seeded initial point (in E), in float64 so that both dtypes share one start."""
        raise NotImplementedError

    def layer_weights(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def project_layer(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project_parameters(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Orthogonal projection, in parameter coordinates (keys and shapes of ``named_parameters()``),
        onto the parameters whose measured layers all lie in E (E ∩ L where that is the constraint).

        Stationary-point analysis works on the flat parameter vector, where Π_E must be the Euclidean
        projector of *those* coordinates. Models parametrised inside E are their own projection: the
        same tensors come back.
        """
        return dict(tensors)

    def project_gradients_(self) -> None:
        """Replace the gradients of the constrained layers by their projections onto E (Equi step).

        Models parametrised inside E (the equivariant CNN) have nothing to do here.
        """

    def layer_dist(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """dist_E of one measured layer; models with a cheaper evaluation than projecting override it."""
        return torch.linalg.vector_norm(weight - self.project_layer(name, weight))

    def transform_inputs(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        """Apply group element ``elements[b]`` to input ``x[b]`` (data augmentation)."""
        raise NotImplementedError

    @property
    def group_order(self) -> int:
        raise NotImplementedError

    @torch.no_grad()
    def layer_measurements(self, initial: dict[str, torch.Tensor],
                           previous: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The per-layer series of a row (``pipeline.schema``), as 1-D tensors over the measured layers: dist_E,
        the distance from ``initial`` (the phase's start), the norm, and the part off E of the step from
        ``previous`` (the layers at the row before; the start where there is none)."""
        previous = initial if previous is None else previous
        measured: dict[str, list[torch.Tensor]] = {DIST_E: [], DIST_INIT: [], NORM: [], STEP_PERP: []}
        for name, weight in self.layer_weights().items():
            measured[DIST_E].append(self.layer_dist(name, weight))
            measured[DIST_INIT].append(torch.linalg.vector_norm(weight - initial[name]))
            measured[NORM].append(torch.linalg.vector_norm(weight))
            measured[STEP_PERP].append(self.layer_dist(name, weight - previous[name]))
        return {series: torch.stack(values) for series, values in measured.items()}

    @torch.no_grad()
    def layer_snapshot(self) -> dict[str, torch.Tensor]:
        """Detached contiguous copies of the measured layers, in weight space (the start of a phase, from
        which distances are measured)."""
        return {name: w.detach().clone().contiguous() for name, w in self.layer_weights().items()}

    def layer_parameters(self) -> dict[str, str]:
        """``{measured layer: parameter name}`` for every measured layer that holds the whole of one parameter:
        the parameter itself, or a view of all of it (a reshape or permutation, as the Experiment G layers
        are of their pixel-major matrices). Such a parameter is stored once, as its layer in weight space,
        and restored through the same view. A model whose parameters are its measured layers needs nothing
        more for its snapshots."""
        owners = {id(p): name for name, p in self.named_parameters()}
        held = {}
        for layer, weight in self.layer_weights().items():
            base = weight if weight._base is None else weight._base
            name = owners.get(id(base))
            if name is not None and weight.numel() == base.numel():
                held[layer] = name
        return held

    def snapshot_names(self) -> tuple[list[str], list[str]]:
        """(measured layers, parameters that no measured layer holds): the names of a ``snapshot()``."""
        layers = list(self.layer_weights())
        held = set(self.layer_parameters().values())
        others = [name for name, _ in self.named_parameters() if name not in held]
        clash = sorted(set(layers) & set(others))
        if clash:
            raise ValueError(f"{type(self).__name__}: parameter {clash[0]!r} has the name of a measured layer; "
                             "a snapshot could not tell them apart")
        return layers, others

    @torch.no_grad()
    def snapshot(self) -> dict[str, torch.Tensor]:
        """Everything a weight snapshot stores, detached copies: every measured layer in weight space, then
        every parameter that no measured layer holds whole, under its ``named_parameters()`` name.
        ``load_snapshot`` restores the model's parameters, exactly, from it."""
        layers, others = self.snapshot_names()
        snapshot = self.layer_snapshot()
        parameters = dict(self.named_parameters())
        snapshot.update({name: parameters[name].detach().clone().contiguous() for name in others})
        return snapshot

    @torch.no_grad()
    def load_snapshot(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set every parameter from a ``snapshot()`` of a model of this architecture. Strict: the names must be
        exactly those of this model's snapshots, with their shapes; values are cast to the parameters'
        dtype and device."""
        layers, others = self.snapshot_names()
        expected = [*layers, *others]
        missing = [name for name in expected if name not in tensors]
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(f"snapshot does not fit {type(self).__name__}: "
                             + "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                           f"unexpected {', '.join(unexpected)}" if unexpected else "")
                                         if part) + f" (expected: {', '.join(expected)})")
        weights = self.layer_weights()
        targets = {layer: weights[layer] for layer in self.layer_parameters()}
        parameters = dict(self.named_parameters())
        targets.update({name: parameters[name] for name in others})
        for name, target in targets.items():
            value = torch.as_tensor(tensors[name])
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"snapshot does not fit {type(self).__name__}: {name} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(target.shape)}")
        for name, target in targets.items():
            target.copy_(torch.as_tensor(tensors[name]))  # a layer's view writes through to its parameter
