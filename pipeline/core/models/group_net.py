"""The Experiment G network (docs/science.md §3): two equivariant-type layers, one invariant-type layer,
LayerNorm and an unconstrained linear head.

An equivariant-type layer holds, for every (out, in) channel pair, a full N x N matrix (N = n*n). It is
stored as one (N*C_out, N*C_in) matrix, pixel-major (row i*C_out + o, column j*C_in + c), so that a layer
is a single large GEMM on the batch, whose activations are laid out pixel-major too; ``pairs()`` is the
(C_out, C_in, N, N) view that the group projections and the trial files use. Pixel-major storage keeps
each channel block contiguous when the projections regroup the entries by pixel pair.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.core.models.base import MeasuredModel
from pipeline.core.pixel_groups import PixelGroup

LAYER_NAMES = ("A0", "A1", "A2")


class EquivariantTypeLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_pixels: int):
        super().__init__()
        self.c_in, self.c_out, self.num_pixels = c_in, c_out, num_pixels
        self.weight = nn.Parameter(torch.empty(num_pixels * c_out, num_pixels * c_in))

    def pairs(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        t = self.weight if tensor is None else tensor
        N = self.num_pixels
        return t.view(N, self.c_out, N, self.c_in).permute(1, 3, 0, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, N*C_in) -> (B, N*C_out), pixel-major
        return h @ self.weight.T


class InvariantTypeLayer(nn.Module):
    """Output unit o is sum_c sum_p w[o, c, p] h[c, p]; stored pixel-major like its input."""

    def __init__(self, c_in: int, c_out: int, num_pixels: int):
        super().__init__()
        self.c_in, self.c_out, self.num_pixels = c_in, c_out, num_pixels
        self.weight = nn.Parameter(torch.empty(c_out, num_pixels * c_in))

    def maps(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        t = self.weight if tensor is None else tensor
        return t.view(self.c_out, self.num_pixels, self.c_in).permute(0, 2, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.T


class GroupNet(MeasuredModel):
    def __init__(
        self,
        group: PixelGroup,
        channels: int = 32,
        num_classes: int = 10,
        invariant_activation: str | None = None,
        hidden_activation: str = "leaky_relu",
    ):
        super().__init__()
        self.group = group
        self.group_name = group.name
        self.channels = channels
        N = group.num_pixels
        self.A0 = EquivariantTypeLayer(1, channels, N)
        self.A1 = EquivariantTypeLayer(channels, channels, N)
        self.A2 = InvariantTypeLayer(channels, channels, N)
        self.head = nn.Linear(channels, num_classes, bias=False)
        # The reference code uses LeakyReLU after the invariant layer for rot and rototrans, tanh otherwise.
        if invariant_activation is None:
            invariant_activation = "leaky_relu" if group.name in ("rot", "rototrans") else "tanh"
        if invariant_activation not in ("tanh", "leaky_relu"):
            raise ValueError(f"unknown invariant_activation {invariant_activation!r}; accepted: tanh, leaky_relu")
        self.invariant_activation = invariant_activation
        # After A0 and A1: LeakyReLU as in §3, or tanh for a twice-differentiable loss (Experiment S: a
        # perturbation that moves pre-activations across LeakyReLU's kink changes the gradient by a jump that
        # no Hessian describes).
        if hidden_activation not in ("tanh", "leaky_relu"):
            raise ValueError(f"unknown hidden_activation {hidden_activation!r}; accepted: tanh, leaky_relu")
        self.hidden_activation = hidden_activation

    @torch.no_grad()
    def initialize(self, generator: torch.Generator) -> None:
        """The initialisation of docs/science.md §3, then projection of A0, A1, A2 onto E."""
        n, C = self.group.n, self.channels
        for layer in (self.A0, self.A1):
            sigma = 1.0 / (n * math.sqrt(layer.c_in))
            sample = torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64) * sigma
            layer.weight.copy_(sample)
        per_pair = torch.randn(C, C, 1, generator=generator, dtype=torch.float64) / math.sqrt(C)
        self.A2.maps().copy_(per_pair.expand(C, C, self.group.num_pixels))
        self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator, dtype=torch.float64) * n / C)
        for name, weight in self.layer_weights().items():
            self._assign(name, self.project_layer(name, weight))

    def _layers(self) -> dict[str, EquivariantTypeLayer | InvariantTypeLayer]:
        return {"A0": self.A0, "A1": self.A1, "A2": self.A2}

    def _view(self, name: str, stored: torch.Tensor | None = None) -> torch.Tensor:
        """A layer's weight-space view of its weight (or of ``stored``, a tensor in its layout): A2's maps,
        A0's and A1's pairs."""
        if name == "A2":
            return self.A2.maps(stored)
        return (self.A0 if name == "A0" else self.A1).pairs(stored)

    def layer_weights(self) -> dict[str, torch.Tensor]:
        return {"A0": self.A0.pairs(), "A1": self.A1.pairs(), "A2": self.A2.maps()}

    def project_layer(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name == "A2":
            return self.group.project_invariant(weight)
        return self.group.project(weight)

    def layer_dist(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return self.group.dist_invariant(weight) if name == "A2" else self.group.dist(weight)

    @torch.no_grad()
    def _assign(self, name: str, weight_space: torch.Tensor) -> None:
        self._view(name).copy_(weight_space)  # through the (C_out, C_in, ...) view straight into the stored layout

    @torch.no_grad()
    def _project_stored_(self, name: str, stored: torch.Tensor) -> None:
        """Project a tensor in a layer's stored layout onto E, in place, through its weight-space view."""
        view = self._view(name, stored)
        view.copy_(self.group.project_invariant(view) if name == "A2" else self.group.project(view))

    @torch.no_grad()
    def project_gradients_(self) -> None:
        for name, layer in self._layers().items():
            assert layer.weight.grad is not None, "Equi projects the gradient of a backward pass"
            self._project_stored_(name, layer.weight.grad)

    def project_parameters(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # The stored layouts are permutations of the pairs/maps views, so projecting through the views is
        # the orthogonal projection of the parameters too. The head's inputs are invariant: it is all E.
        projected = dict(tensors)
        for name in self._layers():
            out = tensors[f"{name}.weight"].clone(memory_format=torch.contiguous_format)
            self._project_stored_(name, out)
            projected[f"{name}.weight"] = out
        return projected

    def transform_inputs(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        return self.group.transform_each(x, elements)

    @property
    def group_order(self) -> int:
        return len(self.group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, n, n) images in [0, 1] -> (B, num_classes) logits."""
        h = x.reshape(x.shape[0], -1) - 0.5  # one input channel: already pixel-major
        hidden = torch.tanh if self.hidden_activation == "tanh" else (lambda z: F.leaky_relu(z, 0.01))
        h = hidden(self.A0(h))
        h = hidden(self.A1(h))
        h = self.A2(h)
        h = torch.tanh(h) if self.invariant_activation == "tanh" else F.leaky_relu(h, 0.01)
        h = F.layer_norm(h, (self.channels,))
        return self.head(h)
