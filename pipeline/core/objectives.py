"""Experiment S's objectives (docs/science.md §5): R and R_aug as functions of the flat parameter vector θ.

θ is every parameter of a network, in ``named_parameters`` order; Π_E is the orthogonal projector onto the
equivariant subspace E in these coordinates and Π_⊥ = I − Π_E. An :class:`Objective` gives the loss, the
gradient and Hessian-vector products of R (the plain data) or R_aug (exact orbit augmentation), with the
weight decay and the regularisation of regularised augmentation added once for every objective; what is
measured with them is ``pipeline.core.stationary`` (the identities, spectra, perturbations) and
``pipeline.core.stationary_search`` (the search for A*). Everything is meant for float64.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import cast

import torch

from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.core.training import RowLayout, batch_rows, correct_count, loss_sum
from pipeline.settings import CHUNK_SIZE, Augmentation


class Objective(ABC):
    """R (``augmented=False``) and R_aug (``augmented=True``) as functions of a flat vector θ held inside.

    Subclasses provide the evaluations of the data term, ``_loss_and_grad`` and ``_hvp``; two penalties are
    added here, once for every objective:

    - the weight decay (λ/2)‖θ‖², λ = ``weight_decay``, on both R and R_aug. It is part of the objective being
      studied: ‖g·θ‖ = ‖θ‖ for every g, so it is G-invariant and claims 1 and 3 hold for R + (λ/2)‖θ‖² exactly
      as for R; it shifts every eigenvalue of both Hessian blocks by λ, and it gives R finite minimisers
      where the data term alone improves for ever by growing the weights (docs/science.md §5);
    - the regularisation (γ/2)‖Π_⊥ θ‖² of the augmented objective, γ = ``reg`` (regularised augmentation).

    Accuracy is on the plain data, NaN where there is none (a regression target).
    """

    dim: int
    reg: float = 0.0
    weight_decay: float = 0.0
    orbit_size: int = 1  # how many times R's rows R_aug's evaluations touch (|G| for exact orbit augmentation)

    @abstractmethod
    def get(self) -> torch.Tensor:
        """A copy of the current θ."""

    @abstractmethod
    def set(self, theta: torch.Tensor) -> None:
        ...

    @abstractmethod
    def project_E(self, v: torch.Tensor) -> torch.Tensor:
        ...

    def project_perp(self, v: torch.Tensor) -> torch.Tensor:
        return v - self.project_E(v)

    @abstractmethod
    def _loss_and_grad(self, augmented: bool) -> tuple[float, float, torch.Tensor]:
        ...

    @abstractmethod
    def _hvp(self, v: torch.Tensor, augmented: bool) -> torch.Tensor:
        ...

    def loss_and_grad(self, augmented: bool) -> tuple[float, float, torch.Tensor]:
        """(loss, accuracy, gradient) at the current θ."""
        loss, accuracy, grad = self._loss_and_grad(augmented)
        if self.weight_decay:
            theta = self.get()
            loss += 0.5 * self.weight_decay * float(theta @ theta)
            grad = grad + self.weight_decay * theta
        if augmented and self.reg:
            off = self.project_perp(self.get())
            loss += 0.5 * self.reg * float(off @ off)
            grad = grad + self.reg * off
        return loss, accuracy, grad

    def hvp(self, v: torch.Tensor, augmented: bool) -> torch.Tensor:
        """The Hessian of the objective at the current θ applied to v."""
        hv = self._hvp(v, augmented)
        if self.weight_decay:
            hv = hv + self.weight_decay * v
        if augmented and self.reg:
            hv = hv + self.reg * self.project_perp(v)
        return hv


class ModelObjective(Objective):
    """R and R_aug of a MeasuredModel on a data set; θ is every parameter, in ``named_parameters`` order.

    Both objectives are means over the rows of a training ``RowLayout`` (Nom: every sample once; Aug-orbit:
    every (sample, element) pair), accumulated over chunks of ``chunk_size`` rows as training does, so the
    gradient is the one a training step would apply. A Hessian-vector product differentiates each chunk's
    gradient·v once more (double backward) and adds the chunks up, so memory is bounded by one chunk's graph.
    Π_E is the model's ``project_parameters``, the projection in these very coordinates.
    """

    def __init__(self, model: MeasuredModel, data: Dataset, loss: str, chunk_size: int = CHUNK_SIZE, reg: float = 0.0,
                 weight_decay: float = 0.0):
        self.model, self.data, self.loss, self.chunk_size, self.reg = model, data, loss, chunk_size, reg
        self.weight_decay = weight_decay
        named = list(model.named_parameters())
        self.names = [name for name, _ in named]
        self.parameters = [p for _, p in named]
        self.sizes = [p.numel() for p in self.parameters]
        self.dim = sum(self.sizes)
        self.orbit_size = model.group_order
        self.layouts = {
            False: RowLayout(len(data), "nom", None, model.group_order),
            True: RowLayout(len(data), "aug", Augmentation("orbit"), model.group_order),
        }

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return [part.view_as(p) for part, p in zip(v.split(self.sizes), self.parameters)]

    @staticmethod
    def _flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def get(self) -> torch.Tensor:
        return self._flat([p.detach() for p in self.parameters])

    @torch.no_grad()
    def set(self, theta: torch.Tensor) -> None:
        for p, value in zip(self.parameters, self._split(theta)):
            p.copy_(value)

    def project_E(self, v: torch.Tensor) -> torch.Tensor:
        projected = self.model.project_parameters(dict(zip(self.names, self._split(v))))
        return self._flat([projected[name] for name in self.names])

    def _chunks(self, augmented: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
        """(inputs, labels, which rows are plain data, rows in the objective) for every chunk."""
        layout = self.layouts[augmented]
        rows = torch.arange(layout.num_rows)
        for start in range(0, layout.num_rows, self.chunk_size):
            index = rows[start : start + self.chunk_size]
            x, y = batch_rows(self.model, self.data, layout, index)
            # Element 0 is the identity, so these rows are the plain data, each sample exactly once.
            plain = (layout.rows(index)[1] == 0).to(y.device)
            yield x, y, plain, layout.num_rows

    def _grad(self, output: torch.Tensor, create_graph: bool = False) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(output, self.parameters, create_graph=create_graph, allow_unused=True,
                                   materialize_grads=True)

    def _loss_and_grad(self, augmented: bool) -> tuple[float, float, torch.Tensor]:
        loss = 0.0
        correct: float = 0  # NaN where there are no classes (a regression)
        grad = torch.zeros(self.dim, dtype=self.parameters[0].dtype, device=self.parameters[0].device)
        for x, y, plain, rows in self._chunks(augmented):
            logits = self.model(x)
            chunk_loss = loss_sum(logits, y, self.loss) / rows
            grad += self._flat(self._grad(chunk_loss))
            loss += chunk_loss.item()
            correct += correct_count(logits[plain], y[plain], self.loss)
        return loss, correct / len(self.data), grad

    def _hvp(self, v: torch.Tensor, augmented: bool) -> torch.Tensor:
        directions = self._split(v)
        hv = torch.zeros_like(v)
        for x, y, _, rows in self._chunks(augmented):
            chunk_loss = loss_sum(self.model(x), y, self.loss) / rows
            grads = self._grad(chunk_loss, create_graph=True)
            hv += self._flat(self._grad(cast(torch.Tensor, sum((g * d).sum() for g, d in zip(grads, directions)))))
        return hv


def random_unit(objective: Objective, project: Callable[[torch.Tensor], torch.Tensor],
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A random unit vector in the range of ``project`` (drawn on the CPU, so seeded draws reproduce)."""
    like = objective.get()
    v = project(torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device))
    return v / torch.linalg.vector_norm(v)
