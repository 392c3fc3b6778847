"""The three training modes (docs/science.md §2) as plain gradient descent, for one model or k packed ones.

Every objective here is a mean over *rows*, a row being one sample seen through one group element:
Nom and Equi use each sample once with the identity; Aug-orbit uses every (sample, element) pair;
Aug-sampled uses P passes, each minibatch of a pass seen through one random element. A ``RowLayout`` maps
a row number to its (sample, element) lazily, so the 784-element rototranslation orbit of 10,000
samples costs no memory, and a full-batch gradient is accumulated over memory-sized chunks of rows.

The epochs are written once, against a *stepper*: what holds the model(s) being trained and knows how to
run a forward-backward pass, take a step and evaluate. :class:`SingleStepper` trains one model; the CNN's
seed packing (``pipeline.core.packing``) trains k seeds of one setting together behind the same interface.

Random choices (sampled elements, minibatch order) come from generators seeded by (seed, epoch,
purpose), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import torch
from torch.nn import functional as F

from pipeline import stopping
from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.settings import LOSSES, Augmentation


def seeded_generator(*purpose: object) -> torch.Generator:
    """A CPU generator whose seed is a stable hash of ``purpose`` (seed, epoch, what it is for)."""
    digest = hashlib.sha256(repr(purpose).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def applied_augmentation(mode: str, augmentation: Augmentation | None) -> Augmentation | None:
    """The augmentation an epoch of ``mode`` applies: Aug's own; none for Equi and Nom."""
    if mode != "aug":
        return None
    if augmentation is None:
        raise ValueError("an Aug epoch needs its augmentation")
    return augmentation


class RowLayout:
    """Which (sample, group element) each row of one epoch's objective is."""

    def __init__(self, num_samples: int, mode: str, augmentation: Augmentation | None, group_order: int,
                 generator: torch.Generator | None = None):
        self.num_samples = num_samples
        augmentation = applied_augmentation(mode, augmentation)
        self.kind = augmentation.kind if augmentation is not None else "identity"
        if self.kind == "orbit":
            self.num_rows = num_samples * group_order
        elif augmentation is not None and self.kind == "sampled":
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

    def plain_rows(self, rows_per_forward: int) -> int:
        """How many leading rows are the untransformed data in whole forward passes: the identity rows of
        the exact orbit come first, so when they fill whole passes, those passes measure the loss and
        accuracy of the current point as an evaluation would (0: they do not)."""
        if self.kind == "identity":
            return self.num_rows
        if self.kind == "orbit" and self.num_samples % rows_per_forward == 0:
            return self.num_samples
        return 0


# A real-valued target rather than a class: the squared error of a one-output model (Experiment S's
# two-input controls, docs/science.md §5). Not a choice of the classification experiments' ``loss``.
SQUARED_ERROR = "squared_error"


def loss_sum(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == SQUARED_ERROR:
        return ((logits.squeeze(1) - labels) ** 2).sum()
    if loss == "cross_entropy":
        return F.cross_entropy(logits, labels, reduction="sum")
    if loss == "softmax_cross_entropy":  # the reference code's softmax-then-cross-entropy
        return F.cross_entropy(torch.softmax(logits, dim=1), labels, reduction="sum")
    if loss == "mse":
        one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return ((logits - one_hot) ** 2).mean(dim=1).sum()
    raise ValueError(f"unknown loss {loss!r}; accepted: {', '.join(LOSSES)}")


def correct_count(logits: torch.Tensor, labels: torch.Tensor, loss: str = "") -> float:
    """Correctly classified rows; NaN for a regression target, which has no classes to be right about."""
    if loss == SQUARED_ERROR:
        return float("nan")
    return int((logits.argmax(1) == labels).sum())


def batch_rows(model: MeasuredModel, data: Dataset, layout: RowLayout,
               index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    samples, elements = layout.rows(index)
    samples = samples.to(data.images.device)
    x = data.images[samples]
    if bool((elements != 0).any()):
        x = model.transform_inputs(x, elements.to(x.device))
    return x, data.labels[samples]


@torch.no_grad()
def add_regularisation_gradient_(model: MeasuredModel, reg: float) -> None:
    """Add the gradient of (reg/2) ||theta - Pi_E theta||^2, reg * (theta - Pi_E theta), to .grad."""
    named = dict(model.named_parameters())
    projected = model.project_parameters({name: p.detach() for name, p in named.items()})
    for name, p in named.items():
        assert p.grad is not None, "the regulariser's gradient is added to a backward pass's"
        p.grad.add_(p.detach() - projected[name], alpha=reg)


@torch.no_grad()
def descend(model: MeasuredModel, lr: float, mode: str, reg: float = 0.0) -> float:
    """One gradient step (projected for Equi); returns the norm of the gradient that was applied."""
    if mode == "equi":
        model.project_gradients_()
    if reg > 0:
        add_regularisation_gradient_(model, reg)
    squared = 0.0
    for p in model.parameters():
        if p.grad is not None:
            squared += float(p.grad.pow(2).sum())
            p.sub_(p.grad, alpha=lr)
    return squared**0.5


@torch.no_grad()
def evaluate(model: MeasuredModel, data: Dataset, loss: str, chunk_size: int) -> tuple[float, float]:
    """Mean loss and accuracy on the untransformed data."""
    total = 0.0
    correct: float = 0  # NaN where there are no classes (a regression)
    for start in range(0, len(data), chunk_size):
        x, y = data.images[start : start + chunk_size], data.labels[start : start + chunk_size]
        logits = model(x)
        total += loss_sum(logits, y, loss).item()
        correct += correct_count(logits, y, loss)
    return total / len(data), correct / len(data)


class Stepper(Protocol):
    """What trains the models of a run together (one model, or k seeds packed), as the runner sees it."""

    models: list  # one MeasuredModel per trial, whose weights are the live ones
    seeds: list[int]
    # Whether it has a state of its own that a checkpoint keeps (an optimizer's memory: L-BFGS).
    resumable: bool

    @property
    def template(self) -> MeasuredModel:
        """The model that transforms inputs and knows the group: the same for all packed models."""
        ...

    def evaluate(self, data: Dataset, loss: str, chunk_size: int) -> list[tuple[float, float]]:
        """(mean loss, accuracy) per model on the untransformed data."""
        ...

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


class GradientStepper(Stepper, Protocol):
    """A stepper that the epochs of this module drive: forward-backward passes, then a step."""

    def zero_grad(self) -> None:
        ...

    def backward(self, x: torch.Tensor, labels: list[torch.Tensor], num_rows: int, loss: str,
                 stats: bool = False) -> list[tuple[float, float]] | None:
        """Add to .grad the gradient of the loss summed over these rows, divided by ``num_rows``; with
        ``stats``, also return the (loss sum, correct predictions) of the rows per model. ``x``: (B, ...)
        shared by every model, or one batch per model, (k, B, ...)."""
        ...

    def descend(self, lr: float, mode: str, reg: float = 0.0) -> list[float]:
        """One step per model (projected for Equi); each model's norm of the gradient applied."""
        ...

    def rows_per_forward(self, chunk_size: int) -> int:
        ...


class SingleStepper:
    """Trains one model (a :class:`GradientStepper`). ``seeds`` are the trials' seeds (one here), which draw
    their random rows."""

    resumable = False  # plain gradient steps: the model is the whole state

    def __init__(self, model: MeasuredModel, seeds: list[int]):
        self.models = [model]
        self.seeds = list(seeds)

    @property
    def template(self) -> MeasuredModel:
        return self.models[0]

    def zero_grad(self) -> None:
        for p in self.models[0].parameters():
            p.grad = None

    def backward(self, x: torch.Tensor, labels: list[torch.Tensor], num_rows: int, loss: str,
                 stats: bool = False) -> list[tuple[float, float]] | None:
        logits = self.models[0](x)
        total = loss_sum(logits, labels[0], loss)
        (total / num_rows).backward()
        return [(total.item(), correct_count(logits, labels[0]))] if stats else None

    def descend(self, lr: float, mode: str, reg: float = 0.0) -> list[float]:
        return [descend(self.models[0], lr, mode, reg)]

    def evaluate(self, data: Dataset, loss: str, chunk_size: int) -> list[tuple[float, float]]:
        return [evaluate(self.models[0], data, loss, chunk_size)]

    def rows_per_forward(self, chunk_size: int) -> int:
        return chunk_size

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EpochHooks:
    """What the runner wants to hear from inside an epoch.

    ``before_update(measured)`` is called once, before the epoch's first parameter update, with the
    (mean loss, accuracy) per model at the current point when the gradient pass measured them (its rows
    were the untransformed data), else None; ``after_step()`` after every optimizer step."""

    def before_update(self, measured: list[tuple[float, float]] | None) -> None:
        pass

    def after_step(self) -> None:
        pass

    def without_steps(self) -> EpochHooks:
        """The same hooks, but deaf to single steps: for epochs whose steps an experiment does not record."""
        return _WithoutSteps(self)


class _WithoutSteps(EpochHooks):
    def __init__(self, hooks: EpochHooks):
        self.hooks = hooks

    def before_update(self, measured: list[tuple[float, float]] | None) -> None:
        self.hooks.before_update(measured)


def full_batch_epoch(stepper: GradientStepper, data: Dataset, mode: str, augmentation: Augmentation | None, lr: float,
                     loss: str, chunk_size: int, generators: list[torch.Generator], hooks: EpochHooks = EpochHooks(),
                     reg: float = 0.0) -> list[float]:
    """One step of gradient descent on the mode's whole objective; returns each model's gradient norm.

    Packed models share the rows of a full batch, so these must not depend on the seed (orbit or plain)."""
    layouts = [RowLayout(len(data), mode, augmentation, stepper.template.group_order, g) for g in generators]
    layout = layouts[0]
    if len(layouts) > 1 and layout.kind not in ("orbit", "identity"):
        raise ValueError(f"a packed full-batch epoch needs rows that do not depend on the seed, got {layout.kind!r}")
    step = stepper.rows_per_forward(chunk_size)
    plain = layout.plain_rows(step)
    rows = torch.arange(layout.num_rows)
    totals = [0.0] * len(layouts)
    corrects: list[float] = [0] * len(layouts)  # NaN where there are no classes
    stepper.zero_grad()
    for start in range(0, layout.num_rows, step):
        stopping.check()  # ...or between chunks of a long epoch: the epoch is redone on resumption
        x, y = batch_rows(stepper.template, data, layout, rows[start : start + step])
        measured = stepper.backward(x, [y] * len(layouts), layout.num_rows, loss, stats=start < plain)
        for i, (total, correct) in enumerate(measured or []):
            totals[i] += total
            corrects[i] += correct
    samples = len(data)
    hooks.before_update([(t / samples, c / samples) for t, c in zip(totals, corrects)] if plain else None)
    return stepper.descend(lr, mode, reg)


def sgd_epoch(stepper: GradientStepper, data: Dataset, mode: str, augmentation: Augmentation | None, lr: float, loss: str,
              batch_size: int, generators: list[torch.Generator], hooks: EpochHooks = EpochHooks(),
              reg: float = 0.0) -> list[float]:
    """One pass of minibatch SGD over the shuffled rows of the mode's objective (for Aug-orbit: the
    shuffled augmented set), each model with its own generator: its own minibatch order and augmentation.
    Returns each model's last gradient norm."""
    layouts = [RowLayout(len(data), mode, augmentation, stepper.template.group_order, g) for g in generators]
    orders = [torch.randperm(layout.num_rows, generator=g) for layout, g in zip(layouts, generators)]
    hooks.before_update(None)  # the point before the epoch is not what any minibatch sees
    grad_norms = [0.0] * len(layouts)
    for start in range(0, layouts[0].num_rows, batch_size):
        stopping.check()  # ...or between optimizer steps: the epoch is redone on resumption
        batches = [batch_rows(stepper.template, data, layout, order[start : start + batch_size])
                   for layout, order in zip(layouts, orders)]
        stepper.zero_grad()
        x = batches[0][0] if len(batches) == 1 else torch.stack([x for x, _ in batches])
        stepper.backward(x, [y for _, y in batches], len(batches[0][1]), loss)
        grad_norms = stepper.descend(lr, mode, reg)
        hooks.after_step()
    return grad_norms


def minibatch_epoch(stepper: GradientStepper, data: Dataset, mode: str, augmentation: Augmentation | None,
                    lr: float, loss: str, batch_size: int, chunk_size: int, generators: list[torch.Generator],
                    hooks: EpochHooks = EpochHooks(), reg: float = 0.0) -> list[float]:
    """One epoch of minibatch SGD over shuffled *samples* (Experiment G's extension); returns the last
    gradient norm.

    Each pass shuffles the samples into minibatches of ``batch_size`` and takes a step on each. Nom and
    Equi see the samples as they are (Equi's steps projected onto E); sampled Aug sees each minibatch through
    one random group element, for ``passes`` passes an epoch (the paper's sampling scheme); orbit Aug sees
    each minibatch through every element, in chunks of ``chunk_size`` rows, so that each step is the exact
    Aug gradient of its samples. One model only: packed seeds would each need their own minibatches."""
    if len(generators) != 1:
        raise ValueError(f"minibatch epochs train one model, got {len(generators)}")
    generator = generators[0]
    model = stepper.template
    applied = applied_augmentation(mode, augmentation)
    kind = applied.kind if applied is not None else "identity"
    order = model.group_order
    passes = applied.passes if applied is not None and kind == "sampled" else 1
    hooks.before_update(None)  # the point before the epoch is not what any minibatch sees
    grad_norms = [0.0]
    for _ in range(passes):
        shuffled = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), batch_size):
            stopping.check()  # ...or between optimizer steps: the epoch is redone on resumption
            samples = shuffled[start:start + batch_size]
            if kind == "orbit":  # sample-major within each element: (element 0: every sample), (element 1: ...)
                elements = torch.arange(order).repeat_interleave(len(samples))
                samples = samples.repeat(order)
            elif kind == "sampled":
                elements = torch.randint(order, (1,), generator=generator).expand(len(samples))
            else:
                elements = torch.zeros(len(samples), dtype=torch.long)
            stepper.zero_grad()
            for first in range(0, len(samples), chunk_size):
                rows = samples[first:first + chunk_size].to(data.images.device)
                x = data.images[rows]
                chosen = elements[first:first + chunk_size]
                if bool((chosen != 0).any()):
                    x = model.transform_inputs(x, chosen.to(x.device))
                stepper.backward(x, [data.labels[rows]], len(samples), loss)
            grad_norms = stepper.descend(lr, mode, reg)
            hooks.after_step()
    return grad_norms
