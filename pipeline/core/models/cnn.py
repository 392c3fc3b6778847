"""The Experiment C network (docs/science.md §4): a C4-equivariant CNN with 5-pixel kernel supports.

Every kernel is a combination of basis kernels, ``kernel = sum_i c_i B_i``. Three bases:

* ``equivariant`` - an orthonormal basis of E intersected with L (kernels invariant under 90-degree
  rotations that vanish off the support): the Equi model of phase 1;
* ``unitary`` - one-hot kernels on the support pixels (the canonical, orthonormal parametrisation of L);
* ``nonunitary`` - a fixed random, normalised, non-orthogonal combination of those one-hot kernels.

dist_E is measured in weight space: the distance of a kernel from its orthogonal projection onto E ∩ L.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.core.models.base import MeasuredModel
from pipeline.core.pixel_groups import PixelGroup, get_group

SUPPORTS = {
    "cross": ((0, 1), (1, 0), (1, 1), (1, 2), (2, 1)),
    "skew": ((0, 0), (0, 1), (1, 0), (1, 2), (2, 1)),
}
PARAMETRIZATIONS = ("equivariant", "unitary", "nonunitary")
LAYER_NAMES = ("conv1", "conv2", "conv3", "head")


def support_mask(support: str) -> torch.Tensor:
    if support not in SUPPORTS:
        raise ValueError(f"unknown support {support!r}; accepted: {', '.join(SUPPORTS)}")
    mask = torch.zeros(3, 3, dtype=torch.float64)
    for r, c in SUPPORTS[support]:
        mask[r, c] = 1.0
    return mask


def equivariant_basis(support: str) -> torch.Tensor:
    """Orthonormal basis of E ∩ L for 3 x 3 kernels: normalised indicators of the C4 orbits of kernel
    pixels that lie inside the support."""
    mask = support_mask(support)
    orbits = [o for o in get_group("rot", 3).orbit_indicators() if bool(((o > 0) <= (mask > 0)).all())]
    return torch.stack([o / o.norm() for o in orbits])


def unconstrained_basis(support: str, parametrization: str, basis_seed: int = 0) -> torch.Tensor:
    mask = support_mask(support)
    one_hot = torch.stack([m for m in torch.eye(9, dtype=torch.float64).reshape(9, 3, 3) if (m * mask).sum() > 0])
    if parametrization == "unitary":
        return one_hot
    if parametrization != "nonunitary":
        raise ValueError(f"unknown parametrization {parametrization!r}; accepted: {', '.join(PARAMETRIZATIONS)}")
    generator = torch.Generator().manual_seed(basis_seed)
    while True:
        mixing = torch.randn(len(one_hot), len(one_hot), generator=generator, dtype=torch.float64)
        mixing = mixing / mixing.norm(dim=1, keepdim=True)
        # Transfer solves for coefficients in this basis, so keep it well conditioned.
        if torch.linalg.cond(mixing) < 20:
            return torch.einsum("ij,jkl->ikl", mixing, one_hot)


def projector_onto(basis: torch.Tensor) -> torch.Tensor:
    """Orthogonal projector (9 x 9 for 3 x 3 kernels) onto the span of the given kernels."""
    flat = basis.reshape(len(basis), -1)
    q, _ = torch.linalg.qr(flat.T)
    return q @ q.T


def pooled_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4, 4): the kernel whose stride-2 convolution equals the 3 x 3 convolution
    followed by 2 x 2 average pooling. Both are linear with nothing between them, so they compose into one
    filter (each tap spread over the pooling window, a quarter each): 16 taps at a quarter of the
    positions instead of 9 at all of them, and the full-resolution map is never formed."""
    spread = kernel.new_zeros(3, 3, 4, 4)  # [u, v, s, t]: the share of tap (u, v) in pooled tap (s, t)
    for u in range(3):
        for v in range(3):
            spread[u, v, u:u + 2, v:v + 2] = 0.25
    return (kernel.flatten(-2) @ spread.reshape(9, 16)).reshape(*kernel.shape[:-2], 4, 4)


class BasisConv2d(nn.Module):
    basis: torch.Tensor  # a buffer

    def __init__(self, c_in: int, c_out: int, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("basis", basis.clone())
        self.coefficients = nn.Parameter(torch.empty(c_out, c_in, len(basis)))

    def kernel(self) -> torch.Tensor:
        return torch.einsum("oib,bkl->oikl", self.coefficients, self.basis)


class CNN(MeasuredModel):
    group_name = "rot"
    projector_E_L: torch.Tensor  # buffers
    head_basis: torch.Tensor

    def __init__(
        self,
        support: str,
        parametrization: str,
        channels: tuple[int, ...] = (32, 64, 64),  # three
        image_size: int = 28,
        num_classes: int = 10,
        basis_seed: int = 0,
    ):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two 2x2 poolings), got {image_size}")
        self.support, self.parametrization = support, parametrization
        basis = (
            equivariant_basis(support)
            if parametrization == "equivariant"
            else unconstrained_basis(support, parametrization, basis_seed)
        )
        widths = (1, *channels)
        self.convs = nn.ModuleList(BasisConv2d(widths[i], widths[i + 1], basis) for i in range(3))
        self.map_size = image_size // 4
        self.register_buffer("projector_E_L", projector_onto(equivariant_basis(support)))
        # The head's inputs rotate with the image, so its E is the rotation-invariant weight maps.
        self.head_group = get_group("rot", self.map_size)
        head_orbits = self.head_group.orbit_indicators()
        self.register_buffer("head_basis", head_orbits / head_orbits.flatten(1).norm(dim=1)[:, None, None])
        head_size = len(head_orbits) if parametrization == "equivariant" else self.map_size**2
        self.head_coefficients = nn.Parameter(torch.empty(num_classes, channels[2], head_size))
        self.num_classes = num_classes

    @property
    def conv_layers(self) -> list[BasisConv2d]:
        """The convolutions, as what they are (a ModuleList holds Modules)."""
        return [cast(BasisConv2d, conv) for conv in self.convs]

    # -- weight space ----------------------------------------------------------------------------
    def head_weight(self) -> torch.Tensor:  # (classes, channels, s, s)
        if self.parametrization == "equivariant":
            return torch.einsum("ocb,bkl->ockl", self.head_coefficients, self.head_basis)
        s = self.map_size
        return self.head_coefficients.view(*self.head_coefficients.shape[:2], s, s)

    def layer_weights(self) -> dict[str, torch.Tensor]:
        weights = {f"conv{i + 1}": conv.kernel() for i, conv in enumerate(self.conv_layers)}
        weights["head"] = self.head_weight()
        return weights

    def project_layer(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        if name == "head":  # the group average over C4 acting on the weight map
            total = sum(self.head_group.transform(weight, k) for k in range(len(self.head_group)))
            return cast(torch.Tensor, total) / len(self.head_group)
        flat = weight.reshape(*weight.shape[:-2], 9)
        return (flat @ self.projector_E_L.to(weight).T).reshape(weight.shape)

    def project_parameters(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.parametrization == "equivariant":  # coefficients on a basis of E ∩ L: already inside E
            return super().project_parameters(tensors)
        projected = dict(tensors)
        # Coefficients c whose kernel M c lies in E ∩ L are span(M⁺ Q) (M is injective and E ∩ L lies in its
        # range). For a non-orthogonal basis this span, not M^T Π_{E∩L} M, is what must be projected onto.
        for i, conv in enumerate(self.conv_layers):
            M = conv.basis.to(torch.float64).reshape(len(conv.basis), 9).T
            Q = equivariant_basis(self.support).to(M).reshape(-1, 9).T
            name = f"convs.{i}.coefficients"
            projected[name] = tensors[name] @ projector_onto((torch.linalg.pinv(M) @ Q).T).to(tensors[name])
        head = tensors["head_coefficients"]  # a plain weight map outside the equivariant parametrisation
        maps = head.reshape(*head.shape[:2], self.map_size, self.map_size)
        projected["head_coefficients"] = self.project_layer("head", maps).reshape(head.shape)
        return projected

    @torch.no_grad()
    def initialize(self, generator: torch.Generator) -> None:
        """Kaiming-uniform-like scale in weight space, drawn in float64 so both dtypes share one start."""
        for conv in self.conv_layers:
            fan_in = conv.coefficients.shape[1] * len(conv.basis)
            bound = (3.0 / fan_in) ** 0.5
            conv.coefficients.copy_(
                (torch.rand(conv.coefficients.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
            )
        fan_in = self.head_coefficients.shape[1] * self.head_coefficients.shape[2]
        bound = (3.0 / fan_in) ** 0.5
        self.head_coefficients.copy_(
            (torch.rand(self.head_coefficients.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        )

    @torch.no_grad()
    def _load_layer_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Set coefficients so that the kernels equal ``weights`` (they must lie in this model's span)."""
        for i, conv in enumerate(self.conv_layers):
            kernel = weights[f"conv{i + 1}"].to(torch.float64)
            basis = conv.basis.to(torch.float64).reshape(len(conv.basis), 9)
            # Least squares: exact for kernels in the span, and for orthonormal bases a projection.
            solution = torch.linalg.lstsq(basis.T, kernel.reshape(-1, 9).T).solution.T
            conv.coefficients.copy_(solution.reshape(conv.coefficients.shape))
        head = weights["head"].to(torch.float64)
        if self.parametrization == "equivariant":
            coefficients = torch.einsum("ockl,bkl->ocb", head, self.head_basis.to(torch.float64))
        else:
            coefficients = head.flatten(2)
        self.head_coefficients.copy_(coefficients)

    def transferred(self, parametrization: str, basis_seed: int = 0) -> CNN:
        """The same function in another parametrisation (phase 1 -> phase 2)."""
        channels = tuple(conv.coefficients.shape[0] for conv in self.conv_layers)
        other = CNN(self.support, parametrization, channels, self.map_size * 4, self.num_classes, basis_seed)
        other = other.to(self.head_coefficients)
        other._load_layer_weights({k: v.detach() for k, v in self.layer_weights().items()})
        return other

    def transform_inputs(self, x: torch.Tensor, elements: torch.Tensor) -> torch.Tensor:
        return self.input_group.transform_each(x, elements)

    @property
    def input_group(self) -> PixelGroup:
        return get_group("rot", self.map_size * 4)

    @property
    def group_order(self) -> int:
        return 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_with(self.layer_weights(), x)


def forward_with(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The CNN as a function of its layer weights (``CNN.layer_weights``) and images x (B, 1, H, W): logits
    (B, classes). :meth:`CNN.forward` is this at its own weights; packed seeds (``pipeline.core.packing``) run it
    on each seed's weights, one after the other or under ``torch.func.vmap``."""
    h = x
    for i in range(3):
        kernel = weights[f"conv{i + 1}"]
        if i < 2:  # convolution, then 2 x 2 average pooling: one stride-2 convolution
            h = F.conv2d(h, pooled_kernel(kernel), stride=2, padding=1)
        else:
            h = F.conv2d(h, kernel, padding=1)
        h = torch.tanh(h)
        h = F.layer_norm(h, h.shape[-2:])
    return h.flatten(1) @ weights["head"].flatten(1).T
