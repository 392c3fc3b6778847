"""Seed packing of the Experiment C CNN: training throughput per seed, k seeds packed vs one seed unpacked.

Paper width (channels 32,64,64, 28 x 28 MNIST), float32. Two workloads, a fixed amount of work each rather
than whole epochs:

* phase 1: ``phase1_steps`` Equi SGD steps of batch 100 (``sgd_epoch`` over 100 x steps images);
* phase 2: one full-batch gradient-descent step over the C4 orbit of ``n_samples`` images (4 x n_samples rows),
  in the unitary (cross) parametrisation, with the pipeline's default chunk_size of 1000 rows.

The reference is one seed through the normal path (``SingleStepper`` + ``sgd_epoch`` / ``full_batch_epoch``).
``images_per_s_per_seed`` for k packed seeds is (images each seed trains on) / (packed wall time / k): the
rate at which the grid's work gets done, per seed, directly comparable to the unpacked number. Each timing
is the fastest of ``repeats`` runs after a one-step warm-up, the least disturbed by other load on the machine.

Both paths compute blocks 1 and 2 as one stride-2 convolution with the pooled kernel
(:func:`pipeline.core.models.cnn.pooled_kernel`), so the rows measure what packing adds and nothing else. On a
CPU a batch of 100 already keeps the cores busy, so the gain is small there; on a GPU a batch-100 step of
this CNN leaves the device mostly idle and grouped convolutions over k seeds are what fill it.
``vectorize`` picks how the seeds are run (see :class:`pipeline.core.packing.PackedCNN`; default: grouped
convolutions on CUDA, seed after seed on CPU). Both go through the same epochs as a trial
(``pipeline.core.training``), with :class:`~pipeline.core.packing.PackedStepper` instead of the single one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import experiments  # noqa: E402
from pipeline.core import numerics  # noqa: E402
from pipeline.core.data import Dataset  # noqa: E402
from pipeline.core.models import CNN  # noqa: E402
from pipeline.core.packing import PackedCNN, PackedStepper  # noqa: E402
from pipeline.core.training import (  # noqa: E402
    GradientStepper,
    SingleStepper,
    full_batch_epoch,
    seeded_generator,
    sgd_epoch,
)
from pipeline.settings import Augmentation  # noqa: E402
from timing import timed  # noqa: E402

BATCH = 100
K_VALUES = (1, 4, 8, 30)  # seeds packed, besides the unpacked reference
LR = 1e-6  # small enough that repeated timing runs stay near the initial point


def _head(data: Dataset, n: int) -> Dataset:
    return Dataset(data.images[:n], data.labels[:n], data.source)


def _is_out_of_memory(error: RuntimeError) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower() \
        or "can't allocate" in str(error).lower() or "not enough memory" in str(error).lower()


# One timed workload: the function that runs it, and one that runs a single step of it (to warm up).
Workload = tuple[Callable[[], None], Callable[[], None]]


class _PackingBench:
    """The data, settings and models of one benchmark run; ``k=None`` is the unpacked reference."""

    def __init__(self, n_samples: int, channels: str, phase1_steps: int, device: torch.device,
                 vectorize: bool | None):
        self.channels, self.device, self.vectorize = channels, device, vectorize
        self.dtype = torch.float32
        self.cnn = experiments.get("cnn")
        self.settings = self.cnn.make_settings({
            "cnn_channels": channels, "n_samples": max(n_samples, BATCH * phase1_steps), "dtype": "float32",
            "device": str(device), "data_source": "vendored"})
        data = self.cnn.load_data(self.settings, device, self.dtype)
        self.phase_data = {1: _head(data, BATCH * phase1_steps), 2: _head(data, n_samples)}
        self.warm_up_data = _head(data, BATCH)  # one step: warms the allocator and kernels without a full run
        self.images = {1: BATCH * phase1_steps, 2: 4 * n_samples}

    def models(self, k: int, phase: int) -> list[CNN]:
        built = [cast(CNN, self.cnn.build_model(self.cnn.make_settings({"cnn_channels": self.channels, "seed": seed})))
                 .to(device=self.device, dtype=self.dtype) for seed in range(k)]
        return built if phase == 1 else [model.transferred("unitary") for model in built]

    def workload(self, phase: int, k: int | None) -> Workload:
        seeds = list(range(1 if k is None else k))
        # A packed stepper reads the attributes that the protocol declares settable (as CNNExperiment.stepper).
        stepper = cast(GradientStepper, SingleStepper(self.models(1, phase)[0], seeds) if k is None
                       else PackedStepper(PackedCNN(self.models(k, phase), self.vectorize), seeds))

        def run_on(d: Dataset) -> None:
            generators = [seeded_generator(seed, 1, "data order and augmentation") for seed in seeds]
            if phase == 1:
                sgd_epoch(stepper, d, "equi", None, LR, "mse", BATCH, generators)
            else:
                full_batch_epoch(stepper, d, "aug", Augmentation("orbit"), LR, "mse", self.settings.chunk_size,
                                 generators)

        return lambda: run_on(self.phase_data[phase]), lambda: run_on(self.warm_up_data)

    def warmed_runs(self, phase: int, k_values: tuple[int, ...]) -> dict[int | None, Callable[[], None]]:
        """Every packing that fits in memory, warmed up (the reference must fit)."""
        runs: dict[int | None, Callable[[], None]] = {}
        for k in (None, *k_values):
            try:
                run, warm_up = self.workload(phase, k)
                warm_up()
                runs[k] = run
            except RuntimeError as error:
                _skip_if_out_of_memory(error, phase, k)
            finally:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return runs

    def fastest(self, phase: int, runs: dict[int | None, Callable[[], None]], repeats: int) -> dict[int | None, float]:
        """Rounds alternate between the reference and every k, and each keeps its fastest: a burst of other load
        on the machine then slows one round of everything rather than one row."""
        best = {k: float("inf") for k in runs}
        for _ in range(repeats):
            for k, run in list(runs.items()):
                try:
                    best[k] = min(best[k], timed(run, self.device))
                except RuntimeError as error:
                    _skip_if_out_of_memory(error, phase, k)
                    del runs[k], best[k]
        return best


def _skip_if_out_of_memory(error: RuntimeError, phase: int, k: int | None) -> None:
    """A packing that runs out of memory is skipped, said on stderr; the reference, or any other error, raises."""
    if k is None or not _is_out_of_memory(error):
        raise error
    print(f"cnn packing: phase {phase} k={k} skipped: out of memory", file=sys.stderr)


def rows(k_values: tuple[int, ...] = K_VALUES, n_samples: int = 250, channels: str = "32,64,64",
         repeats: int = 3, phase1_steps: int = 10, device: str = "cpu",
         vectorize: bool | None = None) -> list[dict[str, Any]]:
    numerics.configure()
    bench = _PackingBench(n_samples, channels, phase1_steps, numerics.resolve_device(device), vectorize)
    results = []
    for phase in (1, 2):
        best = bench.fastest(phase, bench.warmed_runs(phase, k_values), repeats)
        reference = bench.images[phase] / best[None]
        for k in k_values:
            if k in best:
                per_seed = bench.images[phase] * k / best[k]
                results.append({"row": "cnn packing", "phase": phase, "k": k, "images_per_s_per_seed": per_seed,
                                "speedup_vs_unpacked": per_seed / reference, "unpacked_images_per_s": reference,
                                "vectorize": "per input" if vectorize is None else vectorize})
    return results


if __name__ == "__main__":
    started = time.perf_counter()
    table = rows()
    print(f"{'phase':>5} {'k':>3} {'images/s per seed':>18} {'unpacked':>10} {'speedup':>8}")
    for r in table:
        print(f"{r['phase']:>5} {r['k']:>3} {r['images_per_s_per_seed']:>18.1f} {r['unpacked_images_per_s']:>10.1f} "
              f"{r['speedup_vs_unpacked']:>8.2f}")
    print(f"({time.perf_counter() - started:.0f} s on {torch.get_num_threads()} threads)")
