"""Where the time of a trial's epoch goes beyond its gradient step: a paper-width Nom trial (the case of
bench row 1b) run into its HDF5 file under cProfile, the functions that took the most time printed.

    python bench/profile_trial.py --device cuda --epochs 8

On CUDA, time spent waiting for the device shows up in the call that synchronises (a ``.cpu()``, an
``.item()``), so read it together with the step time that row 1b prints.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.experiments import make_trial  # noqa: E402
from pipeline.run.execute import execute  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    trial = make_trial("groups", {"group": "rot", "mode": "nom", "channels": "32", "n": "14",
                                  "n_samples": str(args.samples), "epochs": str(args.epochs), "device": args.device,
                                  "data_source": "vendored", "lr": "1e-6", "weights_every": "0"})
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        profiler.enable()
        execute(Path(folder), [trial], checkpoint_every_s=60.0)
        profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
