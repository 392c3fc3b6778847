"""What every model of the pipeline exposes to training and to the trial store.

A model is measured layer by layer in *weight space*: ``layer_weights()`` gives each measured layer as a
tensor, ``project_layer`` its orthogonal projection onto E (intersected with L where L is not closed
under the group average). Training and the store only ever talk to models through this interface.
"""

from __future__ import annotations

import torch
from torch import nn


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
    def layer_measurements(self, initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """dist_E, distance from ``initial`` and norm of every measured layer, as 1-D tensors."""
        dist_E, dist_init, norm = [], [], []
        for name, weight in self.layer_weights().items():
            dist_E.append(self.layer_dist(name, weight))
            dist_init.append(torch.linalg.vector_norm(weight - initial[name]))
            norm.append(torch.linalg.vector_norm(weight))
        return {"dist_E": torch.stack(dist_E), "dist_init": torch.stack(dist_init), "norm": torch.stack(norm)}

    @torch.no_grad()
    def snapshot(self) -> dict[str, torch.Tensor]:
        """Detached contiguous copies of the measured layers (for distances and weight snapshots)."""
        return {name: w.detach().clone().contiguous() for name, w in self.layer_weights().items()}
