"""Experiment S's controls (docs/science.md §5): models of two inputs, with G = Z₂ swapping them.

They are small enough that the claim-3 detector can be checked against hand calculations:

- ``toy-z2``, the positive control: f(x) = a·(w₁x₁ + w₂x₂)², parameters (a, w₁, w₂). E = {w₁ = w₂}. On the
  data (1, 1) ↦ 0 and (1, 0) ↦ 1 with the squared error, R on E depends on u = a·w₁² only and is least at
  u = 1/17: a curve of Equi minima along which H_E ⪰ 0 (one eigenvalue 0, along the curve), while the
  transversal block H_⊥ = −14a/17 < 0. Claim 3 holds here provably.
- ``toy-linear``, the negative control: f(x) = w₁x₁ + w₂x₂ on the same data. The loss is a convex quadratic
  in w, so H ⪰ 0 everywhere and claim 3 cannot hold.

Every parameter is a measured layer: ``w`` (its distance from E is |w₁ − w₂|/√2) and, for ``toy-z2``, ``a``
(the group does not move it: it is all E).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel

KINDS = ("z2", "linear")
# The two samples: inputs and real-valued targets.
INPUTS = ((1.0, 1.0), (1.0, 0.0))
TARGETS = (0.0, 1.0)


class SwapPairModel(MeasuredModel):
    group_name = "swap"

    def __init__(self, kind: str):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
        self.kind = kind
        self.w = nn.Parameter(torch.zeros(2))
        self.a = nn.Parameter(torch.ones(1)) if kind == "z2" else None

    @torch.no_grad()
    def initialize(self, generator: torch.Generator) -> None:
        """A point of E with w₁ = w₂ and, for ``toy-z2``, a > 0, both in [0.5, 1.5]: from there the search
        reaches the curve of minima with a > 0, where H_⊥ < 0."""
        draws = 0.5 + torch.rand(2, generator=generator, dtype=torch.float64)
        self.w.copy_(draws[0].expand(2))
        if self.a is not None:
            self.a.copy_(draws[1:])

    def layer_weights(self) -> dict[str, torch.Tensor]:
        return {"w": self.w} if self.a is None else {"a": self.a, "w": self.w}

    def project_layer(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight if name == "a" else (weight + weight.flip(-1)) / 2

    def project_parameters(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: self.project_layer(name, value) for name, value in tensors.items()}

    @torch.no_grad()
    def project_gradients_(self) -> None:
        grad = self.w.grad
        assert grad is not None, "gradients are projected after a backward pass"
        grad.copy_(self.project_layer("w", grad))

    def transform_inputs(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        swapped = x.flip(-1)
        return torch.where((elements != 0).view(-1, *([1] * (x.dim() - 1))), swapped, x)

    @property
    def group_order(self) -> int:
        return 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ..., 2) -> (B, 1)."""
        z = x.reshape(x.shape[0], 2) @ self.w
        out = z if self.a is None else self.a * z**2
        return out[:, None]


def swap_pair_data(dtype: torch.dtype = torch.float64) -> Dataset:
    """The two samples as a Dataset: inputs shaped like one-row images (1, 1, 2), real-valued targets."""
    images = torch.tensor(INPUTS, dtype=dtype).view(2, 1, 1, 2)
    return Dataset(images, torch.tensor(TARGETS, dtype=dtype), "two samples (1, 1) ↦ 0, (1, 0) ↦ 1 (toy)")
