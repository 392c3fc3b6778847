"""Seed packing: k seeds of one Experiment C setting trained together in one process.

A batch-100 step of the paper's CNN is far too small to keep an accelerator busy, and the 90-trial grid is
3 variants x 30 seeds that differ only in the seed. :class:`PackedStepper` trains such seeds as one packed
model behind the stepper interface of ``pipeline.core.training``, so the runner's one trial loop and the
training epochs serve one seed or k alike. Every seed computes the same function, gradient and step as its
unpacked run, with its own minibatches; only the grouping and the order of the sums differ, so each seed's
metrics equal the unpacked ones to round-off, not bitwise: tests/core/test_packing.py holds them to 1e-12
relative in float64 and 1e-6 in float32, except a float32 minibatch gradient norm, whose cancellations make
the unpacked value itself only about 1e-6 accurate.

How the k models are batched (:class:`PackedCNN`):

* The parameters of the k models are stacked along a leading seed axis. Each seed keeps a real
  :class:`~pipeline.core.models.CNN` whose parameters are views into the stack, so measurements, snapshots and
  checkpoints go through the model's own code and always see the live weights; the optimizer step updates
  all seeds with one operation per parameter.
* The kernels and head weights come from the model's own ``layer_weights`` (under ``vmap`` for all seeds),
  and the forward pass is the model's own, :func:`pipeline.core.models.cnn.forward_with` (what
  ``CNN.forward`` runs at the model's weights), under ``torch.func.vmap`` over the seed axis, which turns
  each convolution of the seeds into one grouped convolution. Nothing of the CNN's arithmetic is written
  here twice: a change to the network is a change to ``models/cnn.py`` alone.
* ``vectorize=True`` runs the k seeds as grouped convolutions (seeds as groups; an input shared by all
  seeds, as in full-batch phase 2 and evaluation, is read once); ``False`` runs them one after the other
  through the same code (a pack of one seed under ``vmap``, so that a seed's arithmetic is the same either
  way). The default decides per input, from what an H200 measured (``make gpu-check``, bench row 4): on
  CUDA, each seed's own minibatch of 100 runs grouped (phase 1 at k = 8: 4.1x the per-seed throughput of
  one seed), but a shared full batch runs seed after seed in chunks of ``chunk_size`` rows, which already
  fill the device (grouped, phase 2 at k = 8 fell to 0.65x). On a CPU a batch of 100 already keeps the
  cores busy and k seeds' activations only evict each other from cache, so there the seeds always go one
  after the other.

Checkpoints are those of the single-seed runner (one per seed, from its view model), so a packed trial can
be resumed unpacked and vice versa.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.func import functional_call, vmap

from pipeline.core.data import Dataset
from pipeline.core.models.base import MeasuredModel
from pipeline.core.models.cnn import CNN, forward_with
from pipeline.core.training import correct_count, loss_sum

__all__ = ["PackedCNN", "PackedStepper", "VECTORIZE"]

# How packed seeds run when a PackedCNN is not told: None decides per input (see PackedCNN); True or False
# forces one way (tests check both, benchmarks compare them).
VECTORIZE: bool | None = None


class _LayerWeights(nn.Module):
    """``layer_weights()`` as a forward pass, so that ``functional_call`` can evaluate it per seed."""

    def __init__(self, model: CNN):
        super().__init__()
        self.model = model

    def forward(self) -> dict[str, torch.Tensor]:
        return self.model.layer_weights()


def _seeds(weights: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Seed i's layer weights, from the seed-first ones, as a pack of one seed."""
    return {name: value[i:i + 1] for name, value in weights.items()}


def _vmapped(weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The CNN's forward (``models.cnn.forward_with``) for a pack of seeds: seed-first layer weights, images x
    (B, 1, H, W) shared by the seeds or (seeds, B, 1, H, W); logits (seeds, B, classes). ``vmap`` runs each
    convolution of all seeds as one grouped convolution. A pack of one seed runs the same way, so that a
    seed's arithmetic does not depend on whether its pack runs grouped or seed after seed."""
    return vmap(forward_with, in_dims=(0, 0 if x.dim() == 5 else None))(weights, x)


class PackedCNN:
    """k CNNs of one architecture and parametrisation, their parameters stacked along a leading seed axis.

    ``models[i]`` stays a working CNN for seed i: its parameters are replaced (in place) by views into
    ``params``, so anything written for one model (``layer_measurements``, ``snapshot``, ``state_dict``) reads
    the packed weights. Train through the PackedCNN only: the views do not require gradients.

    ``vectorize``: run the k seeds as one grouped convolution (True), or one seed after the other through
    the same code (False); None groups the seeds' own minibatches on CUDA, where one seed's step leaves the
    device idle, and runs everything else seed after seed (see the module's notes).
    """

    def __init__(self, models: list[CNN], vectorize: bool | None = None):
        template = models[0]
        if type(template).project_gradients_ is not MeasuredModel.project_gradients_:
            # The packed Equi step applies the raw gradient; that is only right for models parametrised in E.
            raise ValueError(f"{type(template).__name__} projects its Equi gradients; packing does not support it")
        for model in models[1:]:
            if model.parametrization != template.parametrization or not all(
                    torch.equal(a, b) for a, b in zip(model.buffers(), template.buffers())):
                raise ValueError("packed models must share their architecture, parametrisation and bases")
        self.models = list(models)
        self.names = [name for name, _ in template.named_parameters()]
        self.params = {
            name: torch.stack([model.get_parameter(name).detach() for model in models]).requires_grad_()
            for name in self.names
        }
        for i, model in enumerate(models):
            for name in self.names:
                owner, _, attribute = name.rpartition(".")
                module = model.get_submodule(owner) if owner else model
                setattr(module, attribute, nn.Parameter(self.params[name].detach()[i], requires_grad=False))
        self._weights = _LayerWeights(template)
        self.on_cuda = template.head_coefficients.device.type == "cuda"
        self.vectorize = VECTORIZE if vectorize is None else vectorize

    def _grouped(self, x: torch.Tensor) -> bool:
        """Whether the seeds run as one grouped convolution on these inputs ((k, B, ...) is one minibatch
        per seed, (B, ...) a batch they share)."""
        return self.vectorize if self.vectorize is not None else self.on_cuda and x.dim() == 5

    @property
    def k(self) -> int:
        return len(self.models)

    @property
    def parametrization(self) -> str:
        return self.models[0].parametrization

    def layer_weights(self) -> dict[str, torch.Tensor]:
        """Every seed's layer weights (seed-first), through the model's own ``layer_weights``."""
        params = {f"model.{name}": value for name, value in self.params.items()}
        return vmap(lambda p: functional_call(self._weights, p, ()))(params)

    def _seed_inputs(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        return x if x.dim() == 4 else x[seed:seed + 1]

    def _logits(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits (k, B, classes) of the CNN's own forward (``models.cnn.forward_with``) at every seed's weights,
        under ``vmap`` (the seeds become convolution groups), for all seeds at once or one after the other."""
        if self._grouped(x):
            return _vmapped(weights, x)
        return torch.cat([_vmapped(_seeds(weights, i), self._seed_inputs(x, i)) for i in range(self.k)])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (k, B, classes) for images x: (B, 1, H, W) shared by all seeds, or (k, B, 1, H, W)."""
        return self._logits(self.layer_weights(), x)

    def backward_loss(self, x: torch.Tensor, labels: list[torch.Tensor], num_rows: int, loss: str = "mse",
                      stats: bool = False) -> list[tuple[float, float]] | None:
        """Add to .grad the gradient of each seed's loss sum over these rows, divided by ``num_rows``; with
        ``stats``, return each seed's (loss sum, correct predictions) of the rows."""
        weights = self.layer_weights()
        if self._grouped(x):
            logits = self._logits(weights, x)
            sums = [loss_sum(logits[i], labels[i], loss) for i in range(self.k)]
            # Seeds share no parameter, so the gradient of the sum is each seed's own gradient.
            (cast(torch.Tensor, sum(sums)) / num_rows).backward()
            return [(s.item(), correct_count(logits[i], labels[i])) for i, s in enumerate(sums)] if stats else None
        # Seed after seed, each backward while its activations are still in cache, on detached copies of its
        # layer weights; then one backward takes all seeds' weight gradients to the parameters, so the small ops
        # that build the weights from coefficients run once per step rather than once per seed.
        weight_grads = {name: torch.empty_like(v) for name, v in weights.items()}
        measured = []
        for i in range(self.k):
            leaves = {name: v.detach().requires_grad_() for name, v in _seeds(weights, i).items()}
            logits = _vmapped(leaves, self._seed_inputs(x, i))[0]
            total = loss_sum(logits, labels[i], loss)
            (total / num_rows).backward()
            if stats:
                measured.append((total.item(), correct_count(logits, labels[i])))
            for name, leaf in leaves.items():
                assert leaf.grad is not None  # a leaf of the backward just taken
                weight_grads[name][i] = leaf.grad[0]
        torch.autograd.backward(list(weights.values()), list(weight_grads.values()))
        return measured if stats else None

    def rows_per_forward(self, chunk_size: int) -> int:
        """Rows of each seed per forward pass of a batch the seeds share (a full batch, an evaluation), so
        that the activations alive at once stay those of ``chunk_size`` rows of one trial: chunk_size // k
        when the seeds run grouped."""
        return max(1, chunk_size // self.k) if self.vectorize else chunk_size

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def descend(self, lr: float) -> list[float]:
        """One plain gradient step per seed; every seed's gradient norm, over all its parameters."""
        squared = torch.zeros(self.k, dtype=torch.float64, device=next(iter(self.params.values())).device)
        for p in self.params.values():
            if p.grad is not None:
                squared += p.grad.pow(2).flatten(1).sum(1).double()
                p.sub_(p.grad, alpha=lr)
        return squared.sqrt().tolist()


class PackedStepper:
    """The :class:`~pipeline.core.training.GradientStepper` of k packed seeds: every call acts on all of them at once."""

    resumable = False  # plain gradient steps: the models are the whole state

    def __init__(self, packed: PackedCNN, seeds: list[int]):
        if len(seeds) != packed.k:
            raise ValueError(f"one seed per packed model: {packed.k} models but seeds {seeds}")
        self.packed = packed
        self.seeds = list(seeds)

    @property
    def models(self) -> list[CNN]:
        return self.packed.models

    @property
    def template(self) -> CNN:
        return self.packed.models[0]

    def zero_grad(self) -> None:
        self.packed.zero_grad()

    def backward(self, x: torch.Tensor, labels: list[torch.Tensor], num_rows: int, loss: str,
                 stats: bool = False) -> list[tuple[float, float]] | None:
        return self.packed.backward_loss(x, labels, num_rows, loss, stats)

    def descend(self, lr: float, mode: str, reg: float = 0.0) -> list[float]:
        # Equi needs no projection here: PackedCNN only packs models parametrised inside E for it.
        if reg > 0:
            self._add_regularisation_gradient(reg)
        return self.packed.descend(lr)

    @torch.no_grad()
    def _add_regularisation_gradient(self, reg: float) -> None:
        params = self.packed.params
        for i, model in enumerate(self.packed.models):
            theta = {name: params[name].detach()[i] for name in self.packed.names}
            projected = model.project_parameters(theta)
            for name in self.packed.names:
                grad = params[name].grad
                assert grad is not None, "the regulariser's gradient is added to a backward pass's"
                grad[i].add_(theta[name] - projected[name], alpha=reg)

    @torch.no_grad()
    def evaluate(self, data: Dataset, loss: str, chunk_size: int) -> list[tuple[float, float]]:
        """(mean loss, accuracy) per seed on the untransformed data."""
        packed = self.packed
        totals = [0.0] * packed.k
        corrects: list[float] = [0] * packed.k  # NaN where there are no classes
        step = packed.rows_per_forward(chunk_size)
        for start in range(0, len(data), step):
            x, y = data.images[start:start + step], data.labels[start:start + step]
            logits = packed(x)
            for i in range(packed.k):
                totals[i] += loss_sum(logits[i], y, loss).item()
                corrects[i] += correct_count(logits[i], y)
        return [(total / len(data), correct / len(data)) for total, correct in zip(totals, corrects)]

    def rows_per_forward(self, chunk_size: int) -> int:
        return self.packed.rows_per_forward(chunk_size)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
