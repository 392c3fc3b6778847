"""Print the ratios that tests/test_theory.py asserts, for every group and CNN configuration.

    .venv/bin/python bench/theory_ratios.py

Same small configurations as the tests: every mode of a seed starts from the same A0 in E and takes
several full-batch steps with a learning rate large enough to move the weights by O(1).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from test_theory import SMALL_CNN, SMALL_GROUPS, train  # noqa: E402

from pipeline.experiments.groups import GROUP_NAMES  # noqa: E402


def ratios(sink) -> tuple[float, float]:
    last = sink.records[-1]
    worst_rel = max(float(r.dist_E.norm() / r.norm.norm()) for r in sink.records)
    return worst_rel, float(last.dist_E.norm() / last.dist_init.norm())


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
