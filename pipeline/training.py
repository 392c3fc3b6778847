"""The three training modes (SCIENCE.md section 2) as plain gradient descent on a MeasuredModel.

Every objective here is a mean over *rows*, a row being one sample seen through one group element:
Nom and Equi use each sample once with the identity; Aug-orbit uses every (sample, element) pair;
Aug-sampled uses P passes, each minibatch of a pass seen through one random element. A ``RowPlan`` maps
a row number to its (sample, element) lazily, so the 784-element rototranslation orbit of 10,000
samples costs no memory, and a full-batch gradient is accumulated over memory-sized chunks of rows.

Random choices (sampled elements, minibatch order) come from generators seeded by (seed, epoch,
purpose), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .data import Dataset
from .models.base import MeasuredModel

MODES = ("equi", "aug", "nom")
LOSSES = ("cross_entropy", "softmax_cross_entropy", "mse")


@dataclass(frozen=True)
class Augmentation:
    kind: str  # "orbit" or "sampled"
    passes: int = 0  # sampled only
    batch_size: int = 25  # sampled only: samples per minibatch sharing one random element

    @classmethod
    def parse(cls, text: str, batch_size: int = 25) -> "Augmentation":
        if text == "orbit":
            return cls("orbit")
        kind, _, passes = text.partition(":")
        if kind == "sampled" and passes.isdigit() and int(passes) > 0:
            return cls("sampled", int(passes), batch_size)
        raise ValueError(f"unknown augment {text!r}; accepted: orbit, sampled:P (P a positive integer)")

    def __str__(self) -> str:
        return "orbit" if self.kind == "orbit" else f"sampled:{self.passes}"


def seeded_generator(*purpose) -> torch.Generator:
    """A CPU generator whose seed is a stable hash of ``purpose`` (seed, epoch, what it is for)."""
    digest = hashlib.sha256(repr(purpose).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class RowPlan:
    """Which (sample, group element) each row of one epoch's objective is."""

    def __init__(self, num_samples: int, mode: str, augmentation: Augmentation | None, group_order: int,
                 generator: torch.Generator | None = None):
        self.num_samples = num_samples
        self.kind = "identity" if mode != "aug" else augmentation.kind
        if self.kind == "orbit":
            self.num_rows = num_samples * group_order
        elif self.kind == "sampled":
            self.batch_size = augmentation.batch_size
            batches_per_pass = -(-num_samples // self.batch_size)
            self.elements = torch.randint(group_order, (augmentation.passes, batches_per_pass), generator=generator)
            self.num_rows = num_samples * augmentation.passes
        else:
            self.num_rows = num_samples

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        samples = index % self.num_samples
        if self.kind == "orbit":
            return samples, index // self.num_samples
        if self.kind == "sampled":
            return samples, self.elements[index // self.num_samples, samples // self.batch_size]
        return samples, torch.zeros_like(index)


def loss_sum(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "cross_entropy":
        return F.cross_entropy(logits, labels, reduction="sum")
    if loss == "softmax_cross_entropy":  # the reference code's softmax-then-cross-entropy
        return F.cross_entropy(torch.softmax(logits, dim=1), labels, reduction="sum")
    if loss == "mse":
        one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return ((logits - one_hot) ** 2).mean(dim=1).sum()
    raise ValueError(f"unknown loss {loss!r}; accepted: {', '.join(LOSSES)}")


def batch_rows(model: MeasuredModel, data: Dataset, plan: RowPlan, index: torch.Tensor):
    samples, elements = plan.rows(index)
    samples = samples.to(data.images.device)
    x = data.images[samples]
    if bool((elements != 0).any()):
        x = model.transform_inputs(x, elements.to(x.device))
    return x, data.labels[samples]


def accumulate_gradient(model: MeasuredModel, data: Dataset, plan: RowPlan, loss: str, chunk_size: int,
                        rows: torch.Tensor | None = None) -> float:
    """Set .grad to the gradient of the mean loss over ``rows`` (default: all rows of the plan)."""
    for p in model.parameters():
        p.grad = None
    if rows is None:
        rows = torch.arange(plan.num_rows)
    total = 0.0
    for start in range(0, len(rows), chunk_size):
        x, y = batch_rows(model, data, plan, rows[start : start + chunk_size])
        chunk_loss = loss_sum(model(x), y, loss) / len(rows)
        chunk_loss.backward()
        total += chunk_loss.item()
    return total


@torch.no_grad()
def descend(model: MeasuredModel, lr: float, mode: str) -> float:
    """One gradient step (projected for Equi); returns the norm of the gradient that was applied."""
    if mode == "equi":
        model.project_gradients_()
    squared = 0.0
    for p in model.parameters():
        if p.grad is not None:
            squared += float(p.grad.pow(2).sum())
            p.sub_(p.grad, alpha=lr)
    return squared**0.5


def full_batch_epoch(model, data, mode, augmentation, lr, loss, chunk_size, generator) -> float:
    """One step of gradient descent on the mode's whole objective; returns the gradient norm."""
    plan = RowPlan(len(data), mode, augmentation, model.group_order, generator)
    accumulate_gradient(model, data, plan, loss, chunk_size)
    return descend(model, lr, mode)


def sgd_epoch(model, data, mode, augmentation, lr, loss, batch_size, generator, on_step=None) -> float:
    """One pass of minibatch SGD over the shuffled rows of the mode's objective (for Aug-orbit: the
    shuffled augmented set). Returns the last step's gradient norm."""
    plan = RowPlan(len(data), mode, augmentation, model.group_order, generator)
    order = torch.randperm(plan.num_rows, generator=generator)
    grad_norm = 0.0
    for start in range(0, plan.num_rows, batch_size):
        accumulate_gradient(model, data, plan, loss, chunk_size=batch_size, rows=order[start : start + batch_size])
        grad_norm = descend(model, lr, mode)
        if on_step is not None:
            on_step()
    return grad_norm


@torch.no_grad()
def evaluate(model: MeasuredModel, data: Dataset, loss: str, chunk_size: int) -> tuple[float, float]:
    """Mean loss and accuracy on the untransformed data."""
    total, correct = 0.0, 0
    for start in range(0, len(data), chunk_size):
        x, y = data.images[start : start + chunk_size], data.labels[start : start + chunk_size]
        logits = model(x)
        total += loss_sum(logits, y, loss).item()
        correct += int((logits.argmax(1) == y).sum())
    return total / len(data), correct / len(data)
