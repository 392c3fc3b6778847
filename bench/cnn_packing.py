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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import experiments  # noqa: E402
from pipeline.core import numerics  # noqa: E402
from pipeline.core.data import Dataset  # noqa: E402
from pipeline.core.packing import PackedCNN, PackedStepper  # noqa: E402
from pipeline.core.training import SingleStepper, full_batch_epoch, seeded_generator, sgd_epoch  # noqa: E402
from pipeline.settings import Augmentation  # noqa: E402
from timing import timed  # noqa: E402

BATCH = 100
LR = 1e-6  # small enough that repeated timing runs stay near the initial point


def _head(data: Dataset, n: int) -> Dataset:
    return Dataset(data.images[:n], data.labels[:n], data.source)


def _is_out_of_memory(error: RuntimeError) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower() \
        or "can't allocate" in str(error).lower() or "not enough memory" in str(error).lower()


def rows(k_values=(1, 4, 8, 30), n_samples: int = 250, channels: str = "32,64,64", repeats: int = 3,
         phase1_steps: int = 10, device: str = "cpu", vectorize: bool | None = None) -> list[dict]:
    numerics.configure()
    device = numerics.resolve_device(device)
    dtype = torch.float32
    cnn = experiments.get("cnn")
    trial = cnn.make_settings({"cnn_channels": channels, "n_samples": max(n_samples, BATCH * phase1_steps),
                               "dtype": "float32", "device": str(device), "data_source": "vendored"})
    data = cnn.load_data(trial, device, dtype)
    phase1_data, phase2_data = _head(data, BATCH * phase1_steps), _head(data, n_samples)
    warm_up_data = _head(data, BATCH)  # one step: warms the allocator and kernels without a full run
    orbit = Augmentation("orbit")
    images = {1: BATCH * phase1_steps, 2: 4 * n_samples}

    def models(k: int, phase: int):
        built = [cnn.build_model(cnn.make_settings({"cnn_channels": channels, "seed": seed})).to(device=device, dtype=dtype)
                 for seed in range(k)]
        return built if phase == 1 else [model.transferred("unitary") for model in built]

    def generators(k: int):
        return [seeded_generator(seed, 1, "data order and augmentation") for seed in range(k)]

    def workload(phase: int, k: int | None):
        """A function that runs the phase's work (and one that runs a single step of it, to warm up)."""
        seeds = list(range(1 if k is None else k))
        stepper = SingleStepper(models(1, phase)[0], seeds) if k is None \
            else PackedStepper(PackedCNN(models(k, phase), vectorize), seeds)
        if phase == 1:
            def run(d=phase1_data):
                sgd_epoch(stepper, d, "equi", None, LR, "mse", BATCH, generators(len(seeds)))
        else:
            def run(d=phase2_data):
                full_batch_epoch(stepper, d, "aug", orbit, LR, "mse", trial.chunk_size, generators(len(seeds)))
        return run, lambda: run(warm_up_data)

    results = []
    for phase in (1, 2):
        runs = {}
        for k in (None, *k_values):
            try:
                run, warm_up = workload(phase, k)
                warm_up()
                runs[k] = run
            except RuntimeError as error:
                if k is None or not _is_out_of_memory(error):
                    raise
                print(f"cnn packing: phase {phase} k={k} skipped: out of memory", file=sys.stderr)
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        # Rounds alternate between the reference and every k, and each keeps its fastest: a burst of other
        # load on the machine then slows one round of everything rather than one row.
        best = {k: float("inf") for k in runs}
        for _ in range(repeats):
            for k, run in list(runs.items()):
                try:
                    best[k] = min(best[k], timed(run, device))
                except RuntimeError as error:
                    if k is None or not _is_out_of_memory(error):
                        raise
                    print(f"cnn packing: phase {phase} k={k} skipped: out of memory", file=sys.stderr)
                    del runs[k], best[k]
        reference = images[phase] / best[None]
        for k in k_values:
            if k in best:
                per_seed = images[phase] * k / best[k]
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
