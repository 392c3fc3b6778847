"""Seed packing: k seeds of one Experiment C configuration trained together in one process.

A batch-100 step of the paper's CNN is far too small to keep an accelerator busy, and the 90-trial grid is
3 configurations x 30 seeds that differ only in the seed. :func:`run_packed` trains the seeds of one
configuration as one vectorised model and feeds every seed's sink exactly what :func:`pipeline.runner.run_trial`
would: packing changes how the arithmetic is batched, never which arithmetic is done, so each seed's metrics
equal its unpacked run to round-off (the kernels reduce in another order, so not bitwise).

How the k models are batched (:class:`PackedCNN`):

* The parameters of the k models are stacked along a leading seed dimension. Each seed keeps a real
  :class:`~pipeline.models.CNN` whose parameters are views into the stack, so measurements, snapshots and
  checkpoints go through the model's own code and always see the live weights.
* The per-seed kernels and head weights come from the model's own ``layer_weights`` under ``vmap``.
* A 3 x 3 convolution whose kernels lie in the span of a few fixed *atoms* (kernels with disjoint supports)
  is ``sum_j W_j (A_j * x)``: a cheap per-channel shift-and-add for each atom, then one matrix product with
  K = channels x atoms, batched over the seeds. For the Equi model the atoms are the rotation orbits in the
  support (2 for cross, 1 for skew), for the unconstrained models the 5 support pixels; a dense 3 x 3
  convolution spends 9. Activations are laid out (seed, channel, image, row, column) so that the product
  of one layer is the next layer's input without a transpose, and the input of a full-batch step, the same
  for every seed, is expanded once and multiplied by all seeds' weights in one product.

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
from .models.cnn import CNN
from .runner import EpochRecord, _check_fault, _phase_of, build_model, load_trial_data, run_trial
from .training import Augmentation, RowPlan, _batch, loss_sum, seeded_generator

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


class _LayerWeights(nn.Module):
    """``layer_weights()`` as a forward pass, so that ``functional_call`` can evaluate it per seed."""

    def __init__(self, model: CNN):
        super().__init__()
        self.model = model

    def forward(self):
        return self.model.layer_weights()


def _atoms(basis: torch.Tensor) -> list[list[tuple[int, int, float]]]:
    """Kernels with pairwise disjoint supports whose span contains every kernel of ``basis``.

    Each atom is its list of (row, column, value) taps. Disjoint supports make the atoms orthogonal, so a
    kernel's weight on atom j is <kernel, A_j> / <A_j, A_j>, and cheap: each input pixel enters one atom.
    """
    nonzero = basis != 0
    if bool((nonzero.sum(0) <= 1).all()):  # the Equi orbit basis and the one-hot unitary basis
        kernels = basis
    else:  # overlapping (non-unitary) basis kernels: fall back to the pixels of the support
        pixels = nonzero.any(0).nonzero().tolist()
        kernels = torch.zeros(len(pixels), 3, 3, dtype=basis.dtype)
        for j, (r, c) in enumerate(pixels):
            kernels[j, r, c] = 1.0
    return [[(r, c, float(kernel[r, c])) for r, c in (kernel != 0).nonzero().tolist()] for kernel in kernels]


class _ExpandAtoms(torch.autograd.Function):
    """(S, C, B, H, W) -> (S, C, J, B, H', W'): each channel convolved (padding 1) with each atom, and with
    ``pool`` also 2 x 2 average-pooled (H' = H / 2).

    Pooling is linear and per channel, so it commutes with the channel-mixing product that follows: pooling
    the C x J atom maps here instead of the layer's output means the full-resolution output of a
    convolution is never formed, and its product costs a quarter. A pooled atom tap is a stride-2 slice of
    the input's 2 x 2 box average, so pooling costs one pass over the input whatever the number of atoms.
    Written by hand because autograd's own backward of strided slices allocates and sums an input-sized
    zero-filled gradient per tap; here every tap adds into one buffer.
    """

    @staticmethod
    def forward(ctx, x, atoms, pool: bool):
        S, C, B, H, W = x.shape
        ctx.atoms, ctx.pool, ctx.shape = atoms, pool, x.shape
        source = F.pad(x, (1, 1, 1, 1))
        if pool:  # source[..., p, q] = mean of padded[..., p:p+2, q:q+2]
            source = F.avg_pool2d(source.view(S * C, B, H + 2, W + 2), 2, stride=1).view(S, C, B, H + 1, W + 1)
        out = x.new_empty(S, C, len(atoms), B, *_out_size(H, W, pool))
        for j, taps in enumerate(atoms):
            target = out[:, :, j]
            values = {v for _, _, v in taps}
            if len(values) == 1:  # orbit atoms share one value: add the shifts, scale once
                target.copy_(_tap(source, taps[0], H, W, pool))
                for tap in taps[1:]:
                    target.add_(_tap(source, tap, H, W, pool))
                if taps[0][2] != 1.0:
                    target.mul_(taps[0][2])
            else:
                target.zero_()
                for tap in taps:
                    target.add_(_tap(source, tap, H, W, pool), alpha=tap[2])
        return out

    @staticmethod
    def backward(ctx, grad):
        S, C, B, H, W = ctx.shape
        pool = ctx.pool
        source = grad.new_zeros(S, C, B, H + 2 - pool, W + 2 - pool)
        for j, taps in enumerate(ctx.atoms):
            for tap in taps:
                _tap(source, tap, H, W, pool).add_(grad[:, :, j], alpha=tap[2])
        if pool:
            padded = grad.new_zeros(S, C, B, H + 2, W + 2)
            for a in (0, 1):
                for b in (0, 1):
                    padded[..., a:a + H + 1, b:b + W + 1].add_(source)
            source = padded.mul_(0.25)
        return source[..., 1:H + 1, 1:W + 1], None, None


def _out_size(H: int, W: int, pool: bool) -> tuple[int, int]:
    return (H // 2, W // 2) if pool else (H, W)


def _tap(source: torch.Tensor, tap, H: int, W: int, pool: bool) -> torch.Tensor:
    """The view of ``source`` that one kernel pixel (row r, column c) multiplies, for every output pixel."""
    r, c, _ = tap
    if pool:
        return source[..., r:r + H:2, c:c + W:2]
    return source[..., r:r + H, c:c + W]


class PackedCNN:
    """k CNNs of one architecture and parametrisation, their parameters stacked along a leading seed axis.

    ``models[i]`` stays a working CNN for seed i: its parameters are views into ``params``, so anything
    written for one model (``layer_measurements``, ``snapshot``, ``state_dict``) reads the packed weights.
    """

    def __init__(self, models: list[CNN]):
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
        self.atoms = _atoms(template.convs[0].basis.detach().cpu().to(torch.float64))
        atom_kernels = torch.zeros(len(self.atoms), 3, 3, dtype=torch.float64)
        for j, taps in enumerate(self.atoms):
            for r, c, v in taps:
                atom_kernels[j, r, c] = v
        # Dual atoms: <kernel, dual_j> is the kernel's weight on atom j.
        dual = atom_kernels / atom_kernels.pow(2).sum((1, 2))[:, None, None]
        self.dual_atoms = dual.to(template.head_coefficients)

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (k, B, classes) for images x: (B, 1, H, W) shared by all seeds, or (k, B, 1, H, W)."""
        weights = self.layer_weights()
        k = self.k
        # (seed or 1, channel, image, row, column); a shared input stays a single copy.
        h = x[None].transpose(1, 2) if x.dim() == 4 else x.transpose(1, 2)
        for i in range(3):
            kernel = weights[f"conv{i + 1}"]  # (k, out, in, 3, 3)
            atom_weights = torch.einsum("koiuv,juv->koij", kernel, self.dual_atoms)
            out_channels = atom_weights.shape[1]
            # Blocks 1 and 2 pool after the convolution; pooling the atom maps instead is the same function.
            expanded = _ExpandAtoms.apply(h, self.atoms, i < 2)
            S, B, H, W = expanded.shape[0], *expanded.shape[-3:]
            expanded = expanded.reshape(S, -1, B * H * W)
            if S == 1 and k > 1:  # one input for all seeds: one product with every seed's weights
                h = atom_weights.reshape(k * out_channels, -1) @ expanded[0]
            else:
                h = torch.bmm(atom_weights.reshape(k, out_channels, -1), expanded)
            h = torch.tanh(h.reshape(k, out_channels, B, H, W))
            h = F.layer_norm(h, h.shape[-2:])
        head = weights["head"]  # (k, classes, channels, s, s)
        features = h.transpose(1, 2).reshape(k, h.shape[2], -1)
        return torch.bmm(features, head.reshape(k, head.shape[1], -1).transpose(1, 2))

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


def _backward_mean_loss(packed: PackedCNN, x: torch.Tensor, labels: list[torch.Tensor], num_rows: int) -> None:
    """Add to .grad the gradient of each seed's loss sum over this chunk, divided by ``num_rows``."""
    logits = packed(x)
    # Seeds share no parameter, so the gradient of the sum is each seed's own gradient.
    total = sum(loss_sum(logits[i], labels[i], "mse") for i in range(packed.k)) / num_rows
    total.backward()


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
        batches = [_batch(template, data, plan, order[start:start + batch_size]) for plan, order in zip(plans, orders)]
        packed.zero_grad()
        x = torch.stack([x for x, _ in batches])
        _backward_mean_loss(packed, x, [y for _, y in batches], x.shape[1])
        grad_norms = packed.descend(lr)
        if on_step is not None:
            on_step()
    return grad_norms


def packed_full_batch_epoch(packed: PackedCNN, data: Dataset, mode: str, augmentation: Augmentation | None,
                            lr: float, chunk_size: int) -> list[float]:
    """:func:`pipeline.training.full_batch_epoch` (MSE loss) for every seed. The rows (the orbit, or the
    plain data) are the same for every seed, so each chunk is read and expanded once for all of them.

    ``chunk_size`` bounds the rows in flight over all seeds together (each forward holds
    ``chunk_size // k`` rows of each seed), so packing k seeds needs no more memory than one trial.
    Returns each seed's gradient norm."""
    template = packed.models[0]
    plan = RowPlan(len(data), mode, augmentation, template.group_order)
    if plan.kind not in ("orbit", "identity"):
        raise ValueError(f"a packed full-batch epoch needs rows that do not depend on the seed, got {plan.kind!r}")
    rows = torch.arange(plan.num_rows)
    step = max(1, chunk_size // packed.k)
    packed.zero_grad()
    for start in range(0, plan.num_rows, step):
        x, y = _batch(template, data, plan, rows[start:start + step])
        _backward_mean_loss(packed, x, [y] * packed.k, plan.num_rows)
    return packed.descend(lr)


@torch.no_grad()
def packed_evaluate(packed: PackedCNN, data: Dataset, chunk_size: int) -> list[tuple[float, float]]:
    """:func:`pipeline.training.evaluate` (MSE loss) for every seed: (mean loss, accuracy) per seed."""
    totals, corrects = [0.0] * packed.k, [0] * packed.k
    step = max(1, chunk_size // packed.k)
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


def run_packed(trials: list[CNNTrial], sinks: list) -> None:
    """Run CNN trials that differ only in their seed as one packed training, each into its own sink.

    Every sink sees the calls ``run_trial`` would make, in the same order per sink: ``resume_point``,
    ``begin``, ``write_epoch`` for epoch 0 (fresh runs) and every trained epoch, ``write_steps`` after
    every phase-2 optimizer step, ``finish``. A record's ``seconds`` is the wall time of the packed epoch
    (all k seeds together). Sinks that resume from different epochs are run one after the other, unpacked.
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
    packed = PackedCNN(models)
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
            sink.write_epoch(EpochRecord(epoch, _phase_of(t, epoch), loss, accuracy, seconds, grad_norms[i],
                                         **measured[i]), packed.models[i], checkpoint_of(i))

    if how == "fresh":
        record([float("nan")] * len(trials), time.perf_counter())

    while epoch < trial.total_epochs:
        started = time.perf_counter()
        next_epoch = epoch + 1
        for t in trials:
            _check_fault(t, next_epoch)
        if _phase_of(trial, next_epoch) == 2 and packed.parametrization == "equivariant":
            packed = PackedCNN([model.transferred(CONFIGS[trial.config][1], trial.basis_seed)
                                for model in packed.models])
            initials = [model.snapshot() for model in packed.models]

        def on_step():
            for i, sink in enumerate(sinks):
                sink.write_steps(next_epoch, packed.models[i].layer_measurements(initials[i])["dist_E"].cpu())

        grad_norms = _train_packed_epoch(trials, packed, data, next_epoch, on_step)
        epoch = next_epoch
        record(grad_norms, started)
    for sink in sinks:
        sink.finish()


def _train_packed_epoch(trials: list[CNNTrial], packed: PackedCNN, data: Dataset, epoch: int, on_step) -> list[float]:
    """:func:`pipeline.runner._train_one_epoch` for the CNN, every seed with its own generator."""
    trial = trials[0]
    generators = [seeded_generator(t.seed, epoch, "data order and augmentation") for t in trials]
    if _phase_of(trial, epoch) == 1:
        return packed_sgd_epoch(packed, data, "equi", None, trial.phase1_lr, trial.phase1_batch, generators)
    orbit = Augmentation("orbit")
    if trial.phase2_optimizer == "sgd":
        return packed_sgd_epoch(packed, data, trial.phase2_mode, orbit, trial.phase2_lr, trial.phase2_batch,
                                generators, on_step=on_step)
    # Orbit and plain rows draw nothing from the generator, so the seeds' generators are not needed here.
    grad_norms = packed_full_batch_epoch(packed, data, trial.phase2_mode, orbit, trial.phase2_lr, trial.chunk_size)
    on_step()
    return grad_norms
