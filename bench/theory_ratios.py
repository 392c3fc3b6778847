"""Print the ratios that tests/core/test_theory.py asserts, for every group and CNN configuration.

    .venv/bin/python bench/theory_ratios.py

The small configurations that tests/core/test_theory.py runs (it imports them from here): every mode of a seed
starts from the same A0 in E and takes several full-batch steps with a learning rate large enough to move
the weights by O(1).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.experiments import make_trial  # noqa: E402
from pipeline.experiments.groups import GROUP_NAMES  # noqa: E402
from pipeline.run.runner import CollectingSink, run_trial  # noqa: E402
from pipeline.schema import DIST_E, DIST_INIT, NORM  # noqa: E402

SMALL_GROUPS = dict(n="6", channels="4", n_samples="64", epochs="5", lr="0.5", aug_batch="8",
                    data_source="vendored", device="cpu")
SMALL_CNN = dict(n_samples="64", cnn_channels="3,4,4", phase1_epochs="1", phase2_epochs="3", phase1_lr="0.05",
                 phase2_lr="0.05", dtype="float64", device="cpu", data_source="vendored")


def train(experiment: str, **settings: str) -> CollectingSink:
    sink = CollectingSink()
    run_trial(make_trial(experiment, {k: str(v) for k, v in settings.items()}), sink)
    return sink


def ratios(sink: CollectingSink) -> tuple[float, float]:
    last = sink.records[-1].values
    worst_rel = max(float(r.values[DIST_E].norm() / r.values[NORM].norm()) for r in sink.records)
    return worst_rel, float(last[DIST_E].norm() / last[DIST_INIT].norm())


def main() -> None:
    print(f"{'case':<44} {'max dist_E/|A|':>15} {'final dist_E/|A-A0|':>20}")
    for group in GROUP_NAMES:
        for label, mode, augment, dtype in [("Equi", "equi", "orbit", "float32"), ("Aug-orbit", "aug", "orbit", "float64"),
                                            ("Aug-sampled:3", "aug", "sampled:3", "float64"),
                                            ("Nom", "nom", "orbit", "float64")]:
            rel, travelled = ratios(train("groups", **SMALL_GROUPS, group=group, mode=mode, augment=augment, dtype=dtype))
            print(f"{group + ' ' + label + ' (' + dtype + ')':<44} {rel:>15.2e} {travelled:>20.2e}")
    for config in ("cross", "skew", "nonunitary"):
        rel, travelled = ratios(train("cnn", **SMALL_CNN, variant=config))
        print(f"{'cnn ' + config + ' phase 2 Aug-orbit (float64)':<44} {rel:>15.2e} {travelled:>20.2e}")


if __name__ == "__main__":
    main()
