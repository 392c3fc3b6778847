"""Experiment S as trials: the search streams and resumes, the measurements at A* land in the trial file
under the documented schema, and the analysis turns them into verdicts on claims 1 and 3."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from helpers import assert_same_results
from pipeline.launch.grid import load_grid
from pipeline.run.execute import execute
from pipeline.run.faults import FAULT_VARIABLE, InjectedFault
from pipeline.trialfile.files import inspect, open_h5
from pipeline.trialfile.manifest import select, write_manifest

ROOT = Path(__file__).resolve().parents[2]
RESULT_ARRAYS = {"spectrum/E/lowest", "spectrum/E/lowest_residuals", "spectrum/perp/lowest",
                 "spectrum/perp/lowest_residuals", "eigenvectors/E", "eigenvectors/perp", "perturbation/lowest",
                 "perturbation/random", "perturbation/lowest_regularised", "perturbation/random_regularised",
                 "parameters/names", "parameters/sizes"}


def run(out, index, sets=None):
    grid = load_grid("stability-smoke", sets or {})
    trial = select(write_manifest(out, grid, grid.trials()), index)
    execute(out, [trial], checkpoint_every_s=0)
    return out / "trials" / f"{trial.trial_id}.h5"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("stability")
    grid = load_grid("stability-smoke", {"seeds": "2"})
    for trial in write_manifest(out, grid, grid.trials()):
        execute(out, [trial])
    return out


def test_a_trial_records_its_search_and_its_measurements_at_a_star(smoke):
    path = smoke / "trials" / "stab-rot-s000.h5"
    state = inspect(path)
    assert state.status == "complete"
    with open_h5(path) as f:
        rows = f["metrics/epoch"].shape[0]
        assert rows == state.attrs["total_epochs"] + 1  # a search that ended early says how far it went
        grads = f["metrics/grad_norm"][()]
        assert math.isnan(grads[0]) and (grads[1:] > 0).all()  # ||Pi_E grad R|| after every block
        assert float(f["metrics/dist_E"][-1].max()) <= 1e-12 * float(f["metrics/norm"][-1].max())  # in E
        assert list(f["weights/epochs"][()]) == [0, rows - 1]  # A0 and A*
        results = f["results"]
        names = set()
        results.visititems(lambda name, obj: names.add(name) if hasattr(obj, "shape") else None)
        assert names == RESULT_ARRAYS
        attrs = dict(results.attrs)
        dim = int(attrs["dimension"])
        assert results["eigenvectors/perp"].shape == (3, dim)  # 2 lowest and the largest
        assert int(np.sum(results["parameters/sizes"][()])) == dim
        assert attrs["identity_residual_vs_plain"] <= 1e-12 and attrs["start_identity_residual"] <= 1e-12
        assert attrs["block_off_diagonal"] <= 1e-10 and attrs["premises_hold"]
        assert attrs["lambda_max"] >= attrs["lambda_max_perp"] > attrs["lambda_min_perp"]
        # The regularised run shifts H_perp by gamma: its predicted factor is that of the shifted eigenvalue.
        lr, gamma, low = attrs["lr"], attrs["gamma"], attrs["lambda_min_perp"]
        assert attrs["lowest_regularised_predicted"] == pytest.approx(abs(1 - lr * (low + gamma)))
        assert attrs["lowest_regularised_measured"] == pytest.approx(attrs["lowest_regularised_predicted"], rel=1e-2)


def test_where_the_premises_fail_the_identity_fails_and_a_star_is_not_stationary_for_aug(smoke):
    with open_h5(smoke / "trials" / "stab-cnn-skew-s000.h5") as f:
        attrs = dict(f["results"].attrs)
    assert not attrs["premises_hold"]
    assert attrs["start_identity_residual"] >= 1e-2
    assert attrs["aug_grad_off_E"] >= 1e-2 * attrs["projected_grad_norm"]


def test_the_console_names_a_row_by_its_block_and_the_stage_that_made_it(smoke):
    """The search runs in its own loop (``pipeline.experiments.stability_loop``): its rows are blocks of
    first-order iterations, then Newton steps, and the console says so, not "epoch"."""
    log = (smoke / "logs" / "stab-rot-s000.log").read_text()
    rows = [line.split("stab-rot-s000 ", 1)[1] for line in log.splitlines() if "stab-rot-s000 block " in line]
    assert rows[0].startswith("block 0/") and "(A⁰)" in rows[0]
    assert re.match(r"block 1/\d+ \(first order, iteration 10\) ‖Π_E∇R‖ ", rows[1])
    assert any(re.match(r"block \d+/\d+ \(Newton step 1\)", row) for row in rows)
    assert "search ended: " in rows[-1] and all("search ended" not in row for row in rows[:-1])
    assert not re.search(r"stab-rot-s000 epoch \d", log)
    with open_h5(smoke / "trials" / "stab-rot-s000.h5") as f:
        assert f["metrics/epoch"].shape[0] == len(rows)  # a console row per row of the file


# A fault before block 2 interrupts the first-order stage; before block 4, the Newton stage (stab-rot-s000 of
# stability-smoke: two blocks of L-BFGS, then Newton steps).
@pytest.mark.parametrize("row", [2, 4])
def test_an_interrupted_search_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, row):
    reference = run(tmp_path / "reference", 0)  # stab-rot-s000
    monkeypatch.setenv(FAULT_VARIABLE, f"stab-rot-s000@{row}")
    with pytest.raises(InjectedFault):
        run(tmp_path / "resumed", 0)
    path = tmp_path / "resumed" / "trials" / "stab-rot-s000.h5"
    assert inspect(path).status == "failed"
    monkeypatch.delenv(FAULT_VARIABLE)
    run(tmp_path / "resumed", 0)
    assert f"resuming after epoch {row - 1}" in (tmp_path / "resumed" / "logs" / "stab-rot-s000.log").read_text()
    assert_same_results(reference, path)  # the L-BFGS memory and the trust region were checkpointed with the model


def test_the_analysis_gives_verdicts_on_claims_1_and_3_with_the_spectra(smoke):
    result = analysis.aggregate(smoke, log=lambda line: None)
    lines = result.verdict_lines
    claim1 = [v for v in result.verdicts if v.claim.startswith("claim 1")]
    claim3 = [v for v in result.verdicts if v.claim.startswith("claim 3")]
    assert len(claim1) == len(claim3) == 1
    assert claim1[0].outcome == "holds" and "5 of 5 networks" in claim1[0].evidence
    assert claim3[0].outcome in ("demonstrated", "not observed")
    skew = [v for v in result.verdicts if v.subject.endswith("cnn-skew")]
    assert [v.outcome for v in skew] == ["holds"] and "departs from Equi's" in skew[0].claim
    report = (smoke / "aggregate" / "report.md").read_text()
    assert "## Stationary points and their stability" in report and "λ_min(H_⊥) ≤ (÷λ_max)" in report
    assert "stability_spectra.png" in report and "stability_perturbations_log.png" in report
    figures = smoke / "aggregate" / "figures"
    assert (figures / "stability_spectra.png").exists() and (figures / "stability_perturbations_log.pdf").exists()
    assert not (figures / "stability_dist_vs_epoch_log.png").exists()  # dist_E is 0 on E: nothing to draw
    table = analysis.read_results(smoke).tables["perturbations"]
    assert set(table["run"]) == {"lowest", "random", "lowest_regularised", "random_regularised"}
    assert any("claim 3" in line for line in lines)
    # Every search ended by its criterion, a stall or its budget, and the report says which, trial by trial;
    # the claims table gives claim 3 per network, seeds out of seeds.
    trials = pd.read_csv(smoke / "aggregate" / "stationary_points_trials.csv")
    assert set(trials["search_ending"]) <= {"criterion", "stall", "budget"} and trials["search_end"].notna().all()
    assert "Every trial: how its search ended" in report
    for trial_id in trials["trial_id"]:
        assert f"| {trial_id} |" in report
    claims_row = next(line for line in report.splitlines() if line.startswith("| **claim 3**"))
    assert "per network, of its seeds: rot: claim 3 in " in claims_row and "of 2 converged" in claims_row


def test_regularised_augmentation_pulls_aug_training_towards_E():
    from pipeline.experiments import make_trial
    from pipeline.run.runner import CollectingSink, run_trial

    common = dict(group="rot", mode="aug", augment="sampled:2", n="6", channels="4", n_samples="64", epochs="4",
                  lr="0.5", aug_batch="8", dtype="float64", data_source="vendored", device="cpu")
    distances = {}
    for reg in ("0", "2"):
        sink = CollectingSink()
        run_trial(make_trial("groups", {**common, "reg": reg}), sink)
        distances[reg] = float(sink.records[-1].dist_E.norm())
    assert distances["2"] < 0.5 * distances["0"]
