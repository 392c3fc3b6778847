"""Seed packing: k seeds of one Experiment C configuration trained together in one process.

A batch-100 step of the paper's CNN is far too small to keep an accelerator busy, and the 90-trial grid is
3 configurations x 30 seeds that differ only in the seed. :func:`run_packed` trains the seeds of one
configuration in one process as one packed model and feeds every seed's sink exactly what
:func:`pipeline.runner.run_trial` would. Every seed computes the same function, gradient and step as its
unpacked run, with its own minibatches; only the grouping and the order of the sums differ, so each seed's
metrics equal the unpacked ones to round-off, not bitwise: tests/test_packing.py holds them to 1e-12
relative in float64 and 1e-6 in float32, except a float32 minibatch gradient norm, whose cancellations make
the unpacked value itself only about 1e-6 accurate.

How the k models are batched (:class:`PackedCNN`):

* The parameters of the k models are stacked along a leading seed axis. Each seed keeps a real
  :class:`~pipeline.models.CNN` whose parameters are views into the stack, so measurements, snapshots and
  checkpoints go through the model's own code and always see the live weights; the optimizer step updates
  all seeds with one operation per parameter.
* The kernels and head weights come from the model's own ``layer_weights`` (under ``vmap`` for all seeds).
* The forward pass is the CNN's (blocks 1 and 2 as one stride-2 convolution with the pooled 4 x 4
  kernel, see :func:`pipeline.models.cnn.pooled_kernel`), with the seeds as convolution groups.
* ``vectorize=True`` runs the k seeds as grouped convolutions (seeds as groups; an input shared by all
  seeds, as in full-batch phase 2 and evaluation, is read once): the way to fill a GPU (the default on
  CUDA; correctness is tested on the CPU, speed has not been measured on a GPU yet). On a CPU a
  batch of 100 already keeps the cores busy and k seeds' activations only evict each other from cache,
  so by default the seeds go one after the other through the same code.

Resuming: if no sink has a resume point the seeds run packed from scratch; if every sink resumes from the
same epoch they resume packed; otherwise (a mix) each trial runs on its own through ``run_trial``, which
resumes it from its own checkpoint. Checkpoints are in ``run_trial``'s format, so a packed trial can be
resumed unpacked and vice versa.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from . import numerics
from .config import CNNTrial
from .data import Dataset
from .models import CONFIGS
from .models.base import MeasuredModel
from .models.cnn import CNN, pooled_kernel
from .runner import EpochRecord, check_fault, phase_of, build_model, load_trial_data, run_trial
from .training import Augmentation, RowPlan, batch_rows, loss_sum, seeded_generator

__all__ = ["PackedCNN", "check_packable", "packed_evaluate", "packed_full_batch_epoch", "packed_sgd_epoch",
           "run_packed"]


def check_packable(trials: list[CNNTrial]) -> None:
    """Raise ValueError unless the trials are CNN trials that differ in their seed and nothing else."""
    if not trials:
        raise ValueError("nothing to pack: no trials given")
    for trial in trials:
        if not isinstance(trial, CNNTrial):
            raise ValueError(f"only Experiment C (cnn) trials can be packed, got {type(trial).__name__} "
                             f"{getattr(trial, 'trial_id', '')!r}")
    reference = dataclasses.asdict(trials[0])
    for trial in trials[1:]:
        for name, value in dataclasses.asdict(trial).items():
            if name != "seed" and value != reference[name]:
                raise ValueError(f"packed trials must differ only in seed, but {trial.trial_id} has "
                                 f"{name}={value!r} and {trials[0].trial_id} has {name}={reference[name]!r}")
    seeds = [trial.seed for trial in trials]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"packed trials must have distinct seeds, got {seeds}")


def pack_key(trial) -> str | None:
    """Trials with the same key can be packed together (CNN trials equal but for the seed)."""
    if not isinstance(trial, CNNTrial):
        return None
    settings = dataclasses.asdict(trial)
    settings.pop("seed")
    return repr(sorted(settings.items()))


def packs(items: list[tuple[int, object]], size: int) -> list[list[tuple[int, object]]]:
    """Split (index, trial) items into units of work: packable trials in packs of at most ``size``, the
    others alone; in the order of the items' first appearance."""
    groups: dict = {}
    for index, trial in items:
        key = pack_key(trial)
        groups.setdefault(key if key is not None else ("alone", index), []).append((index, trial))
    units = []
    for members in groups.values():
        units += [members[i : i + max(1, size)] for i in range(0, len(members), max(1, size))]
    return units


class _LayerWeights(nn.Module):
    """``layer_weights()`` as a forward pass, so that ``functional_call`` can evaluate it per seed."""

    def __init__(self, model: CNN):
        super().__init__()
        self.model = model

    def forward(self):
        return self.model.layer_weights()


def _convolved(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the forward pass multiplies with, from the seed-first layer weights: blocks 1 and 2 convolve
    with their pooled kernels."""
    return {"conv1": pooled_kernel(weights["conv1"]), "conv2": pooled_kernel(weights["conv2"]),
            "conv3": weights["conv3"], "head": weights["head"]}


def _forward(kernels: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """:meth:`CNN.forward <pipeline.models.cnn.CNN.forward>` for k seeds at once, as grouped convolutions.

    ``kernels`` come from :func:`_convolved`, seed-first; ``x`` is (B, 1, H, W), the same for every seed, or
    (k, B, 1, H, W). Activations are (B, k x channels, H, W): the seeds are the groups. Returns logits
    (k, B, classes).
    """
    k = kernels["head"].shape[0]
    if x.dim() == 5:
        h, groups = x.transpose(0, 1).reshape(x.shape[1], k * x.shape[2], *x.shape[-2:]), k
    else:
        h, groups = x, 1  # one input: every seed's first-layer filters read the same channel
    for i in range(3):
        kernel = kernels[f"conv{i + 1}"]  # (k, out, in, size, size)
        stride = 2 if i < 2 else 1  # blocks 1 and 2: convolution and pooling in one (see models.cnn.pooled_kernel)
        h = F.conv2d(h, kernel.reshape(-1, *kernel.shape[2:]), stride=stride, padding=1, groups=groups)
        groups = k
        h = torch.tanh(h)
        h = F.layer_norm(h, h.shape[-2:])
    head = kernels["head"]  # (k, classes, channels, s, s)
    features = h.reshape(h.shape[0], k, -1).transpose(0, 1)
    return torch.bmm(features, head.reshape(k, head.shape[1], -1).transpose(1, 2))


class PackedCNN:
    """k CNNs of one architecture and parametrisation, their parameters stacked along a leading seed axis.

    ``models[i]`` stays a working CNN for seed i: its parameters are replaced (in place) by views into
    ``params``, so anything written for one model (``layer_measurements``, ``snapshot``, ``state_dict``) reads
    the packed weights. Train through the PackedCNN only: the views do not require gradients.

    ``vectorize``: run the k seeds as one grouped convolution (the default on CUDA, where one seed's step
    leaves the device idle), or one seed after the other through the same code (the default on CPU, where a
    batch of 100 already keeps the cores busy and the seeds' activations would crowd each other out of cache).
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
        device = template.head_coefficients.device
        self.vectorize = device.type == "cuda" if vectorize is None else vectorize

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (k, B, classes) for images x: (B, 1, H, W) shared by all seeds, or (k, B, 1, H, W)."""
        kernels = _convolved(self.layer_weights())
        if self.vectorize:
            return _forward(kernels, x)
        return torch.cat([_forward({name: v[i:i + 1] for name, v in kernels.items()}, self._seed_inputs(x, i))
                          for i in range(self.k)])

    def backward_loss(self, x: torch.Tensor, labels: list[torch.Tensor], num_rows: int) -> None:
        """Add to .grad the gradient of each seed's MSE loss sum over these rows, divided by ``num_rows``."""
        kernels = _convolved(self.layer_weights())
        if self.vectorize:
            logits = _forward(kernels, x)
            # Seeds share no parameter, so the gradient of the sum is each seed's own gradient.
            (sum(loss_sum(logits[i], labels[i], "mse") for i in range(self.k)) / num_rows).backward()
            return
        # Seed after seed, each backward while its activations are still in cache, on detached copies of its
        # kernels; then one backward takes all seeds' kernel gradients to the parameters, so the small ops
        # that build kernels from coefficients run once per step rather than once per seed.
        kernel_grads = {name: torch.empty_like(v) for name, v in kernels.items()}
        for i in range(self.k):
            leaves = {name: v[i:i + 1].detach().requires_grad_() for name, v in kernels.items()}
            logits = _forward(leaves, self._seed_inputs(x, i))
            (loss_sum(logits[0], labels[i], "mse") / num_rows).backward()
            for name, leaf in leaves.items():
                kernel_grads[name][i] = leaf.grad[0]
        torch.autograd.backward(list(kernels.values()), list(kernel_grads.values()))

    def rows_per_forward(self, chunk_size: int) -> int:
        """Rows of each seed per forward pass, so that the activations alive at once stay those of
        ``chunk_size`` rows of one trial: chunk_size // k when the seeds run together."""
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


def packed_sgd_epoch(packed: PackedCNN, data: Dataset, mode: str, augmentation: Augmentation | None, lr: float,
                     batch_size: int, generators: list[torch.Generator], on_step=None) -> list[float]:
    """:func:`pipeline.training.sgd_epoch` (MSE loss) for every seed, each with its own generator: its own
    minibatch order and augmentation. Returns each seed's last gradient norm."""
    template = packed.models[0]
    plans = [RowPlan(len(data), mode, augmentation, template.group_order, g) for g in generators]
    orders = [torch.randperm(plan.num_rows, generator=g) for plan, g in zip(plans, generators)]
    num_rows = plans[0].num_rows
    grad_norms = [0.0] * packed.k
    for start in range(0, num_rows, batch_size):
        batches = [batch_rows(template, data, plan, order[start:start + batch_size])
                   for plan, order in zip(plans, orders)]
        packed.zero_grad()
        x = torch.stack([x for x, _ in batches])
        packed.backward_loss(x, [y for _, y in batches], x.shape[1])
        grad_norms = packed.descend(lr)
        if on_step is not None:
            on_step()
    return grad_norms


def packed_full_batch_epoch(packed: PackedCNN, data: Dataset, mode: str, augmentation: Augmentation | None,
                            lr: float, chunk_size: int) -> list[float]:
    """:func:`pipeline.training.full_batch_epoch` (MSE loss) for every seed. The rows (the orbit, or the
    plain data) are the same for every seed, so each chunk is gathered and rotated once for all of them.

    ``chunk_size`` bounds the rows in flight over all seeds together (see :meth:`PackedCNN.rows_per_forward`),
    so packing k seeds needs no more activation memory than one trial. Returns each seed's gradient norm."""
    template = packed.models[0]
    plan = RowPlan(len(data), mode, augmentation, template.group_order)
    if plan.kind not in ("orbit", "identity"):
        raise ValueError(f"a packed full-batch epoch needs rows that do not depend on the seed, got {plan.kind!r}")
    rows = torch.arange(plan.num_rows)
    step = packed.rows_per_forward(chunk_size)
    packed.zero_grad()
    for start in range(0, plan.num_rows, step):
        x, y = batch_rows(template, data, plan, rows[start:start + step])
        packed.backward_loss(x, [y] * packed.k, plan.num_rows)
    return packed.descend(lr)


@torch.no_grad()
def packed_evaluate(packed: PackedCNN, data: Dataset, chunk_size: int) -> list[tuple[float, float]]:
    """:func:`pipeline.training.evaluate` (MSE loss) for every seed: (mean loss, accuracy) per seed."""
    totals, corrects = [0.0] * packed.k, [0] * packed.k
    step = packed.rows_per_forward(chunk_size)
    for start in range(0, len(data), step):
        x, y = data.images[start:start + step], data.labels[start:start + step]
        logits = packed(x)
        for i in range(packed.k):
            totals[i] += loss_sum(logits[i], y, "mse").item()
            corrects[i] += int((logits[i].argmax(1) == y).sum())
    return [(total / len(data), correct / len(data)) for total, correct in zip(totals, corrects)]


def _resume_plan(sinks: list) -> tuple[str, list]:
    """'fresh', 'resume' (all sinks at one epoch) or 'separate' (anything else), with the resume points."""
    points = [sink.resume_point() for sink in sinks]
    if all(point is None for point in points):
        return "fresh", points
    if all(point is not None for point in points) and len({
            (point["epoch"], point.get("parametrization", "equivariant")) for point in points}) == 1:
        return "resume", points
    return "separate", points


def run_packed(trials: list[CNNTrial], sinks: list, vectorize: bool | None = None) -> None:
    """Run CNN trials that differ only in their seed as one packed training, each into its own sink.

    Every sink sees the calls ``run_trial`` would make, in the same order per sink: ``resume_point``,
    ``begin``, ``write_epoch`` for epoch 0 (fresh runs) and every trained epoch, ``write_steps`` after
    every phase-2 optimizer step, ``finish``. A record's ``seconds`` is the wall time of the packed epoch
    (all k seeds together). Sinks that resume from different epochs are run one after the other, unpacked.
    An error in any seed (an injected fault included) stops the whole pack; each sink keeps what it wrote.
    ``vectorize`` is passed to :class:`PackedCNN` (default: grouped on CUDA, seed after seed on CPU).
    """
    check_packable(trials)
    if len(sinks) != len(trials):
        raise ValueError(f"one sink per trial: {len(trials)} trials but {len(sinks)} sinks")
    how, points = _resume_plan(sinks)
    if how == "separate":
        for trial, sink in zip(trials, sinks):
            run_trial(trial, sink)
        return

    numerics.configure()
    trial = trials[0]
    device, dtype = numerics.resolve_device(trial.device), numerics.resolve_dtype(trial.dtype)
    data = load_trial_data(trial, device, dtype)
    chunk = trial.chunk_size

    if how == "fresh":
        models = [build_model(t).to(device=device, dtype=dtype) for t in trials]
        epoch = 0
        initials = [model.snapshot() for model in models]
    else:
        epoch = points[0]["epoch"]
        parametrization = points[0].get("parametrization", "equivariant")
        models, initials = [], []
        for t, point in zip(trials, points):
            model = build_model(t, parametrization).to(device=device, dtype=dtype)
            model.load_state_dict(point["model"])
            models.append(model)
            initials.append({k: v.to(device=device, dtype=dtype) for k, v in point["initial"].items()})
    packed = PackedCNN(models, vectorize)
    for t, sink in zip(trials, sinks):
        sink.begin(t, list(packed.models[0].layer_weights()), device, data)

    def checkpoint_of(i: int):
        def checkpoint():
            model = packed.models[i]
            return {
                "epoch": epoch,
                "parametrization": model.parametrization,
                "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
                "initial": {k: v.to("cpu", copy=True) for k, v in initials[i].items()},
            }
        return checkpoint

    def record(grad_norms: list[float], started: float) -> None:
        evaluated = packed_evaluate(packed, data, chunk)
        measured = [{k: v.cpu() for k, v in model.layer_measurements(initial).items()}
                    for model, initial in zip(packed.models, initials)]
        seconds = time.perf_counter() - started
        for i, (t, sink) in enumerate(zip(trials, sinks)):
            loss, accuracy = evaluated[i]
            sink.write_epoch(EpochRecord(epoch, phase_of(t, epoch), loss, accuracy, seconds, grad_norms[i],
                                         **measured[i]), packed.models[i], checkpoint_of(i))

    if how == "fresh":
        record([float("nan")] * len(trials), time.perf_counter())

    while epoch < trial.total_epochs:
        started = time.perf_counter()
        next_epoch = epoch + 1
        for t in trials:
            check_fault(t, next_epoch)
        if phase_of(trial, next_epoch) == 2 and packed.parametrization == "equivariant":
            packed = PackedCNN([model.transferred(CONFIGS[trial.config][1], trial.basis_seed)
                                for model in packed.models], vectorize)
            initials = [model.snapshot() for model in packed.models]

        def on_step():
            for i, sink in enumerate(sinks):
                sink.write_steps(next_epoch, packed.models[i].layer_measurements(initials[i])["dist_E"].cpu())

        grad_norms = _train_packed_epoch(trials, packed, data, next_epoch, on_step)
        epoch = next_epoch
        record(grad_norms, started)
    for sink in sinks:
        sink.finish()


def _train_packed_epoch(trials: list[CNNTrial], packed: PackedCNN, data: Dataset, epoch: int,
                        on_step) -> list[float]:
    """:func:`pipeline.runner._train_one_epoch` for the CNN, every seed with its own generator."""
    trial = trials[0]
    generators = [seeded_generator(t.seed, epoch, "data order and augmentation") for t in trials]
    if phase_of(trial, epoch) == 1:
        return packed_sgd_epoch(packed, data, "equi", None, trial.phase1_lr, trial.phase1_batch, generators)
    orbit = Augmentation("orbit")
    if trial.phase2_optimizer == "sgd":
        return packed_sgd_epoch(packed, data, trial.phase2_mode, orbit, trial.phase2_lr, trial.phase2_batch,
                                generators, on_step=on_step)
    # Orbit and plain rows draw nothing from the generator, so the seeds' generators are not needed here.
    grad_norms = packed_full_batch_epoch(packed, data, trial.phase2_mode, orbit, trial.phase2_lr, trial.chunk_size)
    on_step()
    return grad_norms
