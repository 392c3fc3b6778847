"""The analysis package on trial files written through the project's own store, with known metrics.

One results folder is built and aggregated once per module (figures dominate the cost). Its cells are
chosen so that every verdict outcome occurs: claims that hold, that do not, and cells with too few
complete trials; plus a missing, a running, a failed and a damaged trial, side files, a cell whose
training does not learn, and a CNN variant trained by SGD (several optimizer steps per epoch). Smaller
folders test swept settings, unknown modes and the files of earlier schemas without drawing every figure.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import image as mpimg

import analysis
from analysis.__main__ import main as analysis_main
from pipeline.experiments import make_trial
from pipeline.run.runner import EpochRecord
from pipeline.trialfile.manifest import entry_of
from pipeline.trialfile.store import CheckpointClock, TrialFile

GROUP_LAYERS = ["A0", "A1", "A2"]
CNN_LAYERS = ["conv1", "conv2", "conv3", "head"]
GROUP_EPOCHS, PHASE1, PHASE2 = 3, 2, 2


def groups_trial(group, mode, seed, augment="orbit", dtype="float32"):
    return make_trial("groups", {"group": group, "mode": mode, "seed": str(seed), "epochs": str(GROUP_EPOCHS),
                                 "n": "6", "channels": "2", "n_samples": "8", "weights_every": "0",
                                 "augment": augment, "dtype": dtype})


def cnn_trial(variant, seed, **extra):
    return make_trial("cnn", {"variant": variant, "seed": str(seed), "phase1_epochs": str(PHASE1),
                              "phase2_epochs": str(PHASE2), "cnn_channels": "2,3,3", "n_samples": "8",
                              "weights_every": "0", **extra})


# -- the constructed metrics ------------------------------------------------------------------------------
# Layer l of a trial with seed s at epoch e: dist_E = base * e * (l+1) * f, dist_init = 0.1 * e * (l+1) * f,
# norm = 10 + l, f = 1 + s/10. So dist_E / dist_init = 10 * base whatever the epoch, layer or seed.
# The CNN: phase 1 (epochs <= PHASE1) has dist_E = 0; phase 2 counts e - PHASE1 (the store's reference
# point is reset when phase 2 starts), norm = 3 + l.

def seed_factor(seed):
    return 1 + seed / 10


def groups_layer_values(base, seed, epoch):
    f = seed_factor(seed)
    scale = np.array([layer + 1 for layer in range(3)], dtype=float) * epoch * f
    return base * scale, 0.1 * scale, 10.0 + np.arange(3)


def cnn_layer_values(base, seed, epoch):
    f = seed_factor(seed)
    ladder = np.arange(1, 5, dtype=float) * f
    if epoch <= PHASE1:
        return np.zeros(4), 0.1 * epoch * ladder, 3.0 + np.arange(4)
    return base * (epoch - PHASE1) * ladder, 0.1 * (epoch - PHASE1) * ladder, 3.0 + np.arange(4)


def loss_of(seed, epoch):
    return 2.0 - 0.1 * epoch + 0.01 * seed


def accuracy_of(seed, epoch):
    return 0.1 + 0.1 * epoch + 0.01 * seed


# The trans trials and the CNN skew trials do not learn: their accuracy stays at chance (0.1 for ten classes).
# Experiment G's cells are probes near A⁰ (not meant to learn); the CNN's are training runs.
NOT_LEARNING = {"trans", "skew"}


def chance_accuracy_of(seed, epoch):
    return 0.1 + 0.001 * epoch


def record(epoch, phase, seed, values, learns=True):
    dist_E, dist_init, norm = (torch.tensor(v, dtype=torch.float64) for v in values)
    accuracy = accuracy_of(seed, epoch) if learns else chance_accuracy_of(seed, epoch)
    return EpochRecord(epoch, phase, {"loss": loss_of(seed, epoch), "accuracy": accuracy, "seconds": 0.01,
                                      "grad_norm": 1.0, "dist_E": dist_E, "dist_init": dist_init, "norm": norm,
                                      "step_perp": torch.zeros_like(dist_E)})


# Where the trial files say their data came from: a machine-local path the report must not repeat.
DATA_SOURCE = "vendored MNIST digits (/machine/local/checkout/data/mnist)"


def write_trial(out, index, trial, base, epochs_written=None, end="complete"):
    """Write a trial file through TrialFile; end is 'complete', 'running' or 'failed'."""
    is_cnn = trial.experiment == "cnn"
    layers = CNN_LAYERS if is_cnn else GROUP_LAYERS
    trial = dataclasses.replace(trial, index=index)
    store = TrialFile(out, trial, log=lambda line: None, clock=CheckpointClock(1e9))
    assert store.prepare() == "fresh"
    store.begin(trial, layers, torch.device("cpu"), SimpleNamespace(source=DATA_SOURCE))
    model = SimpleNamespace(snapshot=lambda: {name: torch.zeros(2) for name in layers})
    total = (PHASE1 + PHASE2) if is_cnn else GROUP_EPOCHS
    last = total if epochs_written is None else epochs_written - 1
    for epoch in range(last + 1):
        if is_cnn:
            values = cnn_layer_values(base, trial.settings.seed, epoch)
            phase = 2 if epoch > PHASE1 else 1
            if phase == 2 and trial.settings.phase2_optimizer == "sgd":  # two minibatch steps per epoch
                before = cnn_layer_values(base, trial.settings.seed, epoch - 1)[0]
                store.write_steps(epoch, torch.tensor((before + values[0]) / 2))
                store.write_steps(epoch, torch.tensor(values[0]))
            elif phase == 2:  # full-batch GD: one step per phase-2 epoch, its dist_E that of the epoch
                store.write_steps(epoch, torch.tensor(values[0]))
        else:
            values, phase = groups_layer_values(base, trial.settings.seed, epoch), 1
        learns = getattr(trial.settings, "group", getattr(trial.settings, "variant", None)) not in NOT_LEARNING
        store.write_epoch(record(epoch, phase, trial.settings.seed, values, learns), model, checkpoint=lambda: {})
    if end == "complete":
        store.finish()
    elif end == "failed":
        store.mark_failed("RuntimeError: constructed failure")


# (trial, base or None for no file, how it ends)
def planned_trials():
    plan = []
    for seed in range(4):
        plan.append((groups_trial("rot", "equi", seed), None if seed == 3 else 1e-8, "complete"))
    for seed in range(4):
        plan.append((groups_trial("rot", "aug", seed), 1e-9, "failed" if seed == 3 else "complete"))
    for seed in range(4):
        end = {2: "running", 3: "damaged"}.get(seed, "complete")
        plan.append((groups_trial("rot", "nom", seed), 0.05, end))
    for seed in range(2):
        plan.append((groups_trial("trans", "equi", seed), 1e-3, "complete"))  # far from E: fails
    for seed in range(2):
        plan.append((groups_trial("trans", "nom", seed), 1e-3, "complete"))  # ratio 0.01 < 0.05: fails
    plan.append((groups_trial("trans1d", "equi", 0), 1e-8, "complete"))  # one seed: too few
    for seed in range(2):
        plan.append((groups_trial("trans1d", "aug", seed, augment="sampled:2"), 0.01, "complete"))
    for seed in range(2):
        plan.append((groups_trial("trans1d", "nom", seed, augment="sampled:2"), 0.05, "complete"))
    for seed in range(2):  # float64: 1e-8 relative is far above its round-off threshold
        plan.append((groups_trial("rototrans", "equi", seed, dtype="float64"), 1e-8, "complete"))
    for variant, base in (("cross", 1e-9), ("skew", 0.03)):
        for seed in range(2):
            plan.append((cnn_trial(variant, seed), base, "complete"))
    for seed in range(2):  # trained by SGD: its steps say more than its epochs
        plan.append((cnn_trial("nonunitary", seed, phase2_optimizer="sgd", phase2_batch="4"), 1e-9, "complete"))
    return plan


def sha256_of_folder(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def build_results_folder(out: Path) -> None:
    plan = planned_trials()
    write_manifest(out, [trial for trial, _, _ in plan])
    for index, (trial, base, end) in enumerate(plan):
        if base is None:
            continue
        if end == "damaged":
            (out / "trials" / f"{trial.trial_id}.h5").write_bytes(np.random.default_rng(0).bytes(4096))
        elif end == "complete":
            write_trial(out, index, trial, base)
        else:
            write_trial(out, index, trial, base, epochs_written=2, end=end)
    (out / "trials" / "rot-nom-s002.h5.damaged-20260101T000000").write_bytes(b"not hdf5")


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    build_results_folder(out)
    before = sha256_of_folder(out / "trials")
    lines = []
    result = analysis.aggregate(out, log=lines.append)
    return SimpleNamespace(out=out, result=result, before=before, log=lines)


def verdict(result, subject, claim_start):
    found = [v for v in result.verdicts if v.subject == subject and v.claim.startswith(claim_start)]
    assert len(found) == 1, [v.line for v in result.verdicts]
    return found[0]


# -- the tidy tables --------------------------------------------------------------------------------------

def test_epochs_table_holds_the_written_values_and_totals_are_norms_over_layers(aggregated):
    table = analysis.load(aggregated.out)
    assert list(table.columns) == ["trial_id", "experiment", "cell", "group", "variant", "network", "mode", "seed", "series",
                                   "status", "epoch", "phase", "layer", "dist_E", "dist_init", "norm", "step_perp",
                                   "loss", "accuracy", "grad_norm"]
    run = table[table["trial_id"] == "rot-nom-s001"]
    assert len(run) == (GROUP_EPOCHS + 1) * 4
    dist_E, dist_init, norm = groups_layer_values(0.05, 1, 2)
    at = run[run["epoch"] == 2].set_index("layer")
    for i, layer in enumerate(GROUP_LAYERS):
        assert at.loc[layer, "dist_E"] == pytest.approx(dist_E[i], rel=1e-12)
        assert at.loc[layer, "dist_init"] == pytest.approx(dist_init[i], rel=1e-12)
        assert at.loc[layer, "norm"] == norm[i]
    assert at.loc["total", "dist_E"] == pytest.approx(math.sqrt(np.sum(dist_E**2)), rel=1e-12)
    assert at.loc["total", "dist_init"] == pytest.approx(math.sqrt(np.sum(dist_init**2)), rel=1e-12)
    assert at.loc["total", "norm"] == pytest.approx(math.sqrt(100 + 121 + 144), rel=1e-12)
    assert list(at["loss"]) == pytest.approx([loss_of(1, 2)] * 4)
    assert list(at["accuracy"]) == pytest.approx([accuracy_of(1, 2)] * 4)
    assert set(run["group"]) == {"rot"} and set(run["variant"]) == {""} and set(run["phase"]) == {1}
    assert set(run["cell"]) == {"rot"} and set(run["series"]) == {"Nom"}
    assert set(run["status"]) == {"complete"} and set(run["mode"]) == {"nom"} and set(run["seed"]) == {1}


def test_cnn_rows_carry_variant_phase_and_phase2_distances(aggregated):
    table = analysis.load(aggregated.out)
    run = table[(table["trial_id"] == "cnn-skew-s001") & (table["layer"] == "total")].set_index("epoch")
    assert set(table.loc[table["experiment"] == "cnn", "group"]) == {""}
    assert set(table.loc[table["trial_id"] == "cnn-skew-s001", "variant"]) == {"skew"}
    assert set(table.loc[table["trial_id"] == "cnn-skew-s001", "series"]) == {"phase 2 Aug (C4 orbit)"}
    assert list(run["phase"]) == [1, 1, 1, 2, 2]
    dist_E, dist_init, _ = cnn_layer_values(0.03, 1, 4)
    assert run.loc[4, "dist_E"] == pytest.approx(math.sqrt(np.sum(dist_E**2)), rel=1e-12)
    assert run.loc[4, "dist_init"] == pytest.approx(math.sqrt(np.sum(dist_init**2)), rel=1e-12)
    assert run.loc[PHASE1, "dist_E"] == 0.0


def test_steps_table_numbers_phase2_steps_with_totals(aggregated):
    steps = analysis.load_steps(aggregated.out)
    run = steps[steps["trial_id"] == "cnn-skew-s000"]
    assert len(run) == PHASE2 * 5
    totals = run[run["layer"] == "total"]
    assert list(totals["step"]) == [0, 1] and list(totals["epoch"]) == [3, 4]
    assert list(totals["step_in_epoch"]) == [0, 0] and list(totals["phase"]) == [2, 2]
    expected = [math.sqrt(np.sum(cnn_layer_values(0.03, 0, e)[0] ** 2)) for e in (3, 4)]
    assert list(totals["dist_E"]) == pytest.approx(expected, rel=1e-12)
    conv2 = run[(run["layer"] == "conv2") & (run["epoch"] == 4)]["dist_E"].item()
    assert conv2 == pytest.approx(0.03 * 2 * 2)


def test_trial_table_reports_every_status(aggregated):
    trials = analysis.load_trials(aggregated.out).set_index("trial_id")
    assert trials.loc["rot-equi-s003", "status"] == "missing"
    assert trials.loc["rot-aug-s003", "status"] == "failed"
    assert "constructed failure" in trials.loc["rot-aug-s003", "error"]
    assert trials.loc["rot-nom-s002", "status"] == "running"
    assert trials.loc["rot-nom-s003", "status"] == "damaged"
    assert trials.loc["rot-equi-s000", "status"] == "complete" and trials.loc["rot-equi-s000", "device"] == "cpu"
    assert trials.loc["rot-equi-s000", "data_source"] == DATA_SOURCE
    assert (trials.loc["cnn-cross-s000", "cell"], trials.loc["cnn-cross-s000", "variant"]) == ("cross", "cross")
    assert len(trials) == len(planned_trials())
    written = pd.read_csv(aggregated.out / "aggregate" / "trials.csv")
    assert list(written.columns[:9]) == ["trial_id", "experiment", "cell", "group", "variant", "network", "mode", "seed",
                                         "series"]
    assert {"device", "data_source", "final_ratio", "max_rel_dist_E_phase2"} <= set(written.columns)


# -- summary statistics -----------------------------------------------------------------------------------

def cell(summary, experiment, setting, mode):
    rows = summary[(summary["experiment"] == experiment) & (summary["cell"] == setting) & (summary["mode"] == mode)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_summary_counts_and_quartiles(aggregated):
    summary = aggregated.result.summary
    equi = cell(summary, "groups", "rot", "equi")
    assert (equi["expected"], equi["complete"], equi["missing"]) == (4, 3, 1)
    aug = cell(summary, "groups", "rot", "aug")
    assert (aug["expected"], aug["complete"], aug["failed"]) == (4, 3, 1)
    nom = cell(summary, "groups", "rot", "nom")
    assert (nom["expected"], nom["complete"], nom["running"], nom["damaged"]) == (4, 2, 1, 1)

    # rot/equi complete seeds 0, 1, 2: final totals scale with f = 1.0, 1.1, 1.2.
    unit = 1e-8 * GROUP_EPOCHS * math.sqrt(14)
    assert equi["final_dist_E_median"] == pytest.approx(1.1 * unit, rel=1e-9)
    assert equi["final_dist_E_q25"] == pytest.approx(1.05 * unit, rel=1e-9)
    assert equi["final_dist_E_q75"] == pytest.approx(1.15 * unit, rel=1e-9)
    assert equi["final_dist_E_iqr"] == pytest.approx(0.1 * unit, rel=1e-6)
    assert equi["final_travelled_median"] == pytest.approx(1.1 * 0.1 * GROUP_EPOCHS * math.sqrt(14), rel=1e-9)
    assert equi["final_ratio_median"] == pytest.approx(1e-7, rel=1e-9)
    assert equi["final_loss_median"] == pytest.approx(loss_of(1, GROUP_EPOCHS))
    assert equi["final_accuracy_iqr"] == pytest.approx(0.01)
    # rot/nom: seeds 0 and 1 only (2 running, 3 damaged).
    assert nom["final_dist_E_median"] == pytest.approx(1.05 * 0.05 * GROUP_EPOCHS * math.sqrt(14), rel=1e-9)

    written = (aggregated.out / "aggregate" / "summary.csv").read_text().splitlines()
    assert len(written) == len(summary) + 1 and "final_dist_E_median" in written[0]


# -- verdicts -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("subject,claim,outcome", [
    ("rot", "Equi stays in E", "holds"),
    ("rot", "Aug (orbit) stays in E", "holds"),
    ("rot", "Nom leaves E", "holds"),
    ("trans", "Equi stays in E", "does not hold"),
    ("trans", "Nom leaves E", "does not hold"),
    ("trans1d", "Equi stays in E", "not enough complete trials"),
    ("trans1d", "Aug (sampled:2) leaves E less than Nom", "holds"),
    ("trans1d", "Nom leaves E", "holds"),
    ("rototrans", "Equi stays in E", "does not hold"),  # float64 threshold
    ("cnn cross (aug)", "phase 1 (Equi) stays in E", "holds"),
    ("cnn cross (aug)", "Aug stays in E in phase 2", "holds"),
    ("cnn skew (aug)", "Aug leaves E in phase 2", "holds"),
    ("cnn nonunitary (aug)", "Aug leaves E in phase 2", "does not hold"),
])
def test_verdicts(aggregated, subject, claim, outcome):
    found = verdict(aggregated.result, subject, claim)
    assert found.outcome == outcome
    assert found.line.startswith(f"{subject}: {claim}") and f"— {outcome} (" in found.line


def test_verdict_evidence_quotes_the_measured_number_and_threshold(aggregated):
    rot = verdict(aggregated.result, "rot", "Equi stays in E")
    norm_total = math.sqrt(100 + 121 + 144)
    assert f"{1.1 * 1e-8 * GROUP_EPOCHS * math.sqrt(14) / norm_total:.3g}" in rot.evidence
    assert "1e-05" in rot.evidence and rot.figure == "groups_dist_vs_travelled_log.png"
    assert "1e-12" in verdict(aggregated.result, "rototrans", "Equi stays in E").evidence
    assert len(aggregated.result.verdict_lines) == len(aggregated.result.verdicts) == 15


def test_minimum_of_complete_trials_is_a_parameter(aggregated):
    from analysis.loading import read_results
    from analysis.summary import trial_end_points

    results = read_results(aggregated.out)
    verdicts = analysis.check_claims(results.trials, trial_end_points(results), min_complete=1)
    trans1d = [v for v in verdicts if v.subject == "trans1d" and v.claim == "Equi stays in E"][0]
    assert trans1d.outcome == "holds"
    strict = analysis.check_claims(results.trials, trial_end_points(results), min_complete=3)
    assert verdict(SimpleNamespace(verdicts=strict), "rot", "Nom leaves E").outcome == "not enough complete trials"


# -- reports, problems and side files ---------------------------------------------------------------------

def test_missing_incomplete_and_damaged_trials_are_listed(aggregated):
    aggregate = aggregated.out / "aggregate"
    for document in (aggregate / "summary.md", aggregate / "report.md"):
        text = document.read_text()
        assert "rot-equi-s003: missing" in text
        assert "rot-aug-s003: incomplete (failed)" in text and "constructed failure" in text
        assert "rot-nom-s002: incomplete (running or interrupted): 1/3 epochs" in text
        assert "rot-nom-s003: damaged" in text and "skipped" in text
        assert "rot-nom-s002.h5.damaged-20260101T000000" in text
    assert any("rot-nom-s003: damaged" in line for line in aggregated.result.problems)
    assert any("rot-nom-s003" in line for line in aggregated.log)
    table = analysis.load(aggregated.out)
    assert "rot-nom-s003" not in set(table["trial_id"])
    assert set(table.loc[table["trial_id"] == "rot-nom-s002", "status"]) == {"running"}


def test_report_has_verdicts_thresholds_figures_and_provenance(aggregated):
    text = (aggregated.out / "aggregate" / "report.md").read_text()
    for needle in ("## The paper's claims", "## The claims, cell by cell", "**holds**", "**does not hold**",
                   "**not enough complete trials**",
                   "ROUNDOFF_THRESHOLD", "NOM_MIN_RATIO", "LEAVES_E_MIN_RATIO", "MIN_COMPLETE_TRIALS",
                   "groups_dist_vs_travelled.png", "cnn_steps_log.png", "Grid: `constructed`",
                   "`groups.epochs=3`", "Devices: `cpu`", "CPU ", "claim 1", "claim 3"):
        assert needle in text, needle


def test_report_is_self_contained(aggregated):
    text = (aggregated.out / "aggregate" / "report.md").read_text()
    assert "SCIENCE.md" not in text
    assert "docs/science.md#1-the-question" in text and "docs/science.md#7-how-claims-are-judged" in text
    assert "arXiv:2303.13458" in text and "TMLR" in text and "Nordenfors" in text
    # Claim sources point into docs/science.md, section and anchor.
    rot = verdict(aggregated.result, "rot", "Aug (orbit) stays in E")
    assert rot.science == "§1, claim 2 (`docs/science.md#1-the-question`)"
    # The data source in words, without the path of the machine that ran the trials, nor this folder's.
    assert "not the official test split" in text and "/machine/local" not in text
    assert str(aggregated.out) not in text
    # Every figure is embedded with its caption.
    for name, info in aggregated.result.figures.items():
        assert "![Figure" in text and f"(figures/{name}.png)" in text and info.caption in text
    table = analysis.load_trials(aggregated.out)
    readable = table[~table["status"].isin(["missing", "damaged"])]
    complete = int((readable["status"] == "complete").sum())
    assert f"| cpu | {len(readable)} | {complete} |" in text  # the devices table


def test_cells_meant_to_learn_that_did_not_are_flagged_and_probes_are_not(aggregated):
    summary = aggregated.result.summary.set_index(["experiment", "cell", "mode"])
    # Experiment G takes a few small full-batch steps from A⁰, as in the paper: a probe, never "did not learn".
    assert not summary.loc[("groups", "trans", "nom"), "meant_to_learn"]
    assert not summary.loc[("groups", "trans", "nom"), "not_learning"]
    assert summary.loc[("cnn", "skew", "aug"), "meant_to_learn"] and summary.loc[("cnn", "skew", "aug"), "not_learning"]
    assert summary.loc[("cnn", "skew", "aug"), "chance_accuracy"] == pytest.approx(0.1)
    assert not summary.loc[("cnn", "cross", "aug"), "not_learning"]
    text = (aggregated.out / "aggregate" / "report.md").read_text()
    assert "Cells that did not learn" in text and "| cnn | skew, phase 2 Aug (C4 orbit) | 0.104 | 0.1 | 2 |" in text
    assert "Experiment G: 9 of 9 cells are probes, not training runs." in text
    assert "trans ⚠" not in text and "| cnn skew (aug) ⚠ did not learn |" in text
    assert "⚠ did not learn" in (aggregated.out / "aggregate" / "summary.md").read_text()


def test_running_trials_are_drawn_dashed_and_said_so(aggregated):
    figures = aggregated.result.figures
    # rot-nom-s002 is running (2 of 4 epochs written); the CNN trials are all complete.
    assert figures["groups_dist_vs_travelled"].running == 1
    assert figures["groups_dist_vs_travelled"].complete == 19
    assert "1 running trial, drawn dashed up to their last epoch" in figures["groups_dist_vs_travelled"].caption
    assert figures["cnn_dist_vs_epoch_log"].running == 0 and "running" not in figures["cnn_dist_vs_epoch_log"].caption
    text = (aggregated.out / "aggregate" / "report.md").read_text()
    assert "figures also draw running trials, dashed up to their last epoch" in text


def test_no_claim_note_for_a_cell_without_one(aggregated):
    # Every cell of the constructed grid has a claim; the report says so rather than listing nothing.
    assert aggregated.result.notes == []
    assert "None: every cell has a claim." in (aggregated.out / "aggregate" / "report.md").read_text()


def test_science_sections_are_headings_of_docs_science_md():
    from analysis.science import SECTIONS, anchor, section_ref

    headings = [line[3:].strip() for line in (Path(__file__).resolve().parents[2] / "docs" / "science.md")
                .read_text().splitlines() if line.startswith("## ")]
    assert set(SECTIONS.values()) <= set(headings)
    assert anchor("5. Experiment S — stationary points and their stability") == \
        "5-experiment-s--stationary-points-and-their-stability"
    assert section_ref("3") == "docs/science.md#3-experiment-g"


def test_aggregation_never_changes_trial_files_and_leaves_no_temporary_files(aggregated):
    assert sha256_of_folder(aggregated.out / "trials") == aggregated.before
    written = {p.relative_to(aggregated.out / "aggregate").as_posix() for p in aggregated.result.paths}
    assert {"epochs.csv", "steps.csv", "trials.csv", "summary.csv", "summary.md", "report.md"} <= written
    leftovers = [p for p in (aggregated.out / "aggregate").rglob("*") if ".tmp" in p.name]
    assert leftovers == []


# -- figures ----------------------------------------------------------------------------------------------

# One panel per group or variant (two, loss and accuracy, in the training curves; one per layer in the
# layers figures); the CNN's dist_E has one row of panels (the phase-2 row repeated the first), and its
# steps figure exists because one variant was trained by SGD.
EXPECTED_PANELS = {
    "groups_dist_vs_travelled": 4, "groups_ratio_vs_epoch_log": 4, "groups_dist_vs_travelled_log": 4,
    "groups_dist_vs_travelled_layers_log": 12,
    "groups_training_curves": 8, "cnn_dist_vs_epoch_log": 3, "cnn_dist_vs_epoch_layers_log": 12,
    "cnn_steps_log": 3, "cnn_training_curves": 6,
}


def test_figures_are_valid_png_and_pdf_with_one_panel_per_group_or_config(aggregated):
    figures = aggregated.result.figures
    assert {name: info.panels for name, info in figures.items()} == EXPECTED_PANELS
    folder = aggregated.out / "aggregate" / "figures"
    expected_files = sorted(f"{name}.{ext}" for name in EXPECTED_PANELS for ext in ("png", "pdf"))
    assert sorted(p.name for p in folder.iterdir()) == expected_files
    for name in EXPECTED_PANELS:
        png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(png)
        assert pixels.shape[1] >= 1500 and pixels.shape[2] in (3, 4)  # 7 inches at 300 dpi
        assert pdf.read_bytes()[:5] == b"%PDF-"


# -- re-running ---------------------------------------------------------------------------------------------

def write_manifest(out: Path, trials) -> None:
    document = {"grid": "constructed", "source": "tests/analysis/test_analysis.py", "description": "known metrics",
                "overrides": {"groups.epochs": "3"}, "created_at": "2026-01-01T00:00:00+00:00",
                "git_commit": "abc123", "num_trials": len(trials),
                "trials": [entry_of(dataclasses.replace(t, index=i)) for i, t in enumerate(trials)]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(document))


def test_rerun_after_more_trials_finish_updates_the_outputs(tmp_path):
    # A CNN-only grid keeps this second folder's figures (the cost of aggregating) few.
    out = tmp_path / "results"
    trials = [cnn_trial("cross", 0), cnn_trial("cross", 1)]
    write_manifest(out, trials)
    write_trial(out, 0, trials[0], 1e-9)
    first = analysis.aggregate(out, log=lambda line: None, figures=False)
    assert verdict(first, "cnn cross (aug)", "Aug stays in E").outcome == "not enough complete trials"
    assert "cnn-cross-s001: missing" in (out / "aggregate" / "report.md").read_text()
    stale = out / "aggregate" / "figures" / "groups_dist_vs_travelled.png"  # as if from an earlier grid state
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"old")
    from analysis.outputs import Outputs

    Outputs(out).note_written([stale])  # as that run recorded it: only the pipeline's own outputs are swept

    write_trial(out, 1, trials[1], 1e-9)
    second = analysis.aggregate(out, log=lambda line: None)
    assert verdict(second, "cnn cross (aug)", "Aug stays in E").outcome == "holds"
    row = cell(second.summary, "cnn", "cross", "aug")
    assert (row["complete"], row["missing"]) == (2, 0)
    final = [math.sqrt(np.sum(cnn_layer_values(1e-9, seed, PHASE1 + PHASE2)[0] ** 2)) for seed in (0, 1)]
    assert row["final_dist_E_median"] == pytest.approx(np.mean(final), rel=1e-9)
    assert "cnn-cross-s001: missing" not in (out / "aggregate" / "report.md").read_text()
    assert set(pd.read_csv(out / "aggregate" / "epochs.csv")["trial_id"]) == {"cnn-cross-s000", "cnn-cross-s001"}
    assert not stale.exists()
    # Full-batch gradient descent takes one step per epoch: a steps figure would repeat the epochs' figure.
    assert "cnn_dist_vs_epoch_log" in second.figures and "cnn_steps_log" not in second.figures


def test_command_line_reports_a_folder_without_manifest(tmp_path, capsys):
    assert analysis_main([str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


# -- swept settings, unknown modes and experiments, earlier file formats ------------------------------------
# These folders are aggregated without figures (the costly part); single figures are built in memory.

def swept_trials():
    """rot Aug with the exact orbit and with sampled passes beside Nom, as a grid sweeping ``augment``
    expands them; and CNN cross with phase-2 Aug and Nom."""
    from pipeline.experiments import get
    from pipeline.launch.grid import expand_section

    section = {"group": "rot", "mode": ["aug", "nom"], "augment": ["orbit", "sampled:2"], "seed": [0, 1],
               "epochs": GROUP_EPOCHS, "n": 6, "channels": 2, "n_samples": 8, "weights_every": 0}
    trials = expand_section(get("groups"), section)
    for seed in range(2):
        nom = cnn_trial("cross", seed, phase2_mode="nom")
        trials += [cnn_trial("cross", seed), dataclasses.replace(nom, trial_id=f"cnn-cross-nom-s{seed:03d}")]
    return trials


SWEPT_BASES = {"orbit": 1e-9, "sampled:2": 0.01, "nom": 0.05}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("swept")
    trials = swept_trials()
    write_manifest(out, trials)
    for index, trial in enumerate(trials):
        mode = getattr(trial.settings, "mode", getattr(trial.settings, "phase2_mode", ""))
        base = SWEPT_BASES["nom"] if mode == "nom" else SWEPT_BASES.get(getattr(trial.settings, "augment", ""), 1e-9)
        write_trial(out, index, trial, base, epochs_written=2 if trial.trial_id == "rot-nom-s001" else None,
                    end="running" if trial.trial_id == "rot-nom-s001" else "complete")
    from analysis.loading import read_results

    result = analysis.aggregate(out, log=lambda line: None, figures=False)
    return SimpleNamespace(out=out, result=result, results=read_results(out))


def test_swept_settings_split_the_summary_and_name_the_series(swept):
    assert [t.trial_id for t in swept_trials()][:3] == ["rot-aug-orbit-s000", "rot-aug-orbit-s001",
                                                        "rot-aug-sampled2-s000"]
    summary = swept.result.summary
    groups = summary[summary["experiment"] == "groups"]
    assert list(groups["series"]) == ["Aug, exact orbit", "Aug, 2 sampled passes", "Nom"]
    assert list(groups["augment"]) == ["orbit", "sampled:2", ""]
    assert list(groups["complete"]) == [2, 2, 1] and list(groups["running"]) == [0, 0, 1]
    cnn = summary[summary["experiment"] == "cnn"]
    assert list(cnn["series"]) == ["phase 2 Aug (C4 orbit)", "phase 2 Nom"]
    epochs = pd.read_csv(swept.out / "aggregate" / "epochs.csv", keep_default_na=False)
    assert list(epochs.columns[:10]) == ["trial_id", "experiment", "cell", "group", "variant", "network", "mode", "augment",
                                        "seed", "series"]
    assert set(epochs.loc[epochs["trial_id"] == "rot-aug-sampled2-s001", "augment"]) == {"sampled:2"}
    assert verdict(swept.result, "rot", "Aug (orbit) stays in E").outcome == "holds"
    below = verdict(swept.result, "rot", "Aug (sampled:2) leaves E less than Nom")
    assert below.outcome == "not enough complete trials" and "Nom: 1 complete" in below.evidence


def legend_texts(figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def test_series_of_one_figure_are_worded_and_styled_apart(swept):
    from analysis.loading import experiment_of
    from analysis.trajectories import trajectory_figure

    results = swept.results
    figure, facts = trajectory_figure(results.epochs, results.trials, experiment_of("groups"), log=True)
    texts = legend_texts(figure)
    assert {"Aug, exact orbit", "Aug, 2 sampled passes", "Nom"} <= set(texts)
    assert not any("sampled:" in text or text in ("aug", "nom") for text in texts)
    handles = {h.get_label(): h for legend in figure.legends for h in legend.legend_handles}
    orbit, sampled = handles["Aug, exact orbit"], handles["Aug, 2 sampled passes"]
    assert orbit.get_color() != sampled.get_color() and orbit.get_linestyle() != sampled.get_linestyle()
    # Each series has its median drawn: a thick line in its colour, besides the thin lines of its seeds.
    thick = {line.get_color() for line in figure.axes[0].get_lines() if line.get_linewidth() == orbit.get_linewidth()}
    assert {orbit.get_color(), sampled.get_color(), handles["Nom"].get_color()} <= thick
    assert facts.running == 1 and facts.complete == 5 and "running trial (to its last epoch)" in texts

    figure, facts = trajectory_figure(results.epochs, results.trials, experiment_of("cnn"), log=True)
    texts = legend_texts(figure)
    assert {"phase 1 Equi", "phase 2 Aug (C4 orbit)", "phase 2 Nom"} <= set(texts)
    # Phase 1 is Equi in every trial: drawn in Equi's colour up to the boundary, never in a phase-2 colour.
    equi = handles_by_label(figure)["phase 1 Equi"].get_color()
    ax = figure.axes[0]
    in_equi = [line for line in ax.get_lines() if line.get_color() == equi and len(line.get_xdata()) > 1]
    assert in_equi and max(max(line.get_xdata()) for line in in_equi) == PHASE1
    later = [line for line in ax.get_lines() if line.get_color() != equi and len(line.get_xdata()) > 1
             and line.get_linestyle() != ":"]
    assert later and min(min(line.get_xdata()) for line in later) == PHASE1


def test_exact_orbit_and_sampled_aug_are_told_apart_at_a_glance(swept):
    """Not by a neighbouring hue alone: exact-orbit Aug has its own colour family and circles on its median,
    in the panels and in the legend; the legend words say which is which."""
    from analysis.loading import experiment_of
    from analysis.style import EXACT_AUG_COLOURS, EXACT_AUG_MARKER, MODE_COLOURS
    from analysis.trajectories import trajectory_figure

    figure, _ = trajectory_figure(swept.results.epochs, swept.results.trials, experiment_of("groups"))
    handles = handles_by_label(figure)
    orbit, sampled = handles["Aug, exact orbit"], handles["Aug, 2 sampled passes"]
    assert orbit.get_color() in EXACT_AUG_COLOURS and sampled.get_color() in MODE_COLOURS["aug"]
    assert orbit.get_marker() == EXACT_AUG_MARKER and sampled.get_marker() in ("None", "", None)
    medians = [line for line in figure.axes[0].get_lines() if line.get_color() == orbit.get_color()
               and line.get_linewidth() == orbit.get_linewidth()]
    assert medians and all(line.get_marker() == EXACT_AUG_MARKER for line in medians)
    # The CNN's phase-2 Aug is full-batch gradient descent on the whole C4 orbit: exact, and drawn so.
    figure, _ = trajectory_figure(swept.results.epochs, swept.results.trials, experiment_of("cnn"), log=True)
    assert handles_by_label(figure)["phase 2 Aug (C4 orbit)"].get_marker() == EXACT_AUG_MARKER


def test_the_ratio_figure_gives_every_seed_every_epoch_and_claim_5s_threshold(swept):
    from analysis.claims import NOM_MIN_RATIO
    from analysis.loading import experiment_of
    from analysis.trajectories import ratio_figure

    figure, facts = ratio_figure(swept.results.epochs, swept.results.trials, experiment_of("groups"))
    assert facts.panels == 1 and figure.axes[0].get_yscale() == "log" and facts.complete == 5
    nom = handles_by_label(figure)["Nom"]
    thick = [line for line in figure.axes[0].get_lines() if line.get_color() == nom.get_color()
             and line.get_linewidth() == nom.get_linewidth()]
    # The constructed runs have dist_E / dist_init = 10 * base at every epoch: Nom's median is 0.5 throughout,
    # drawn from the first step to the last epoch of its complete seed.
    assert len(thick) == 1 and list(thick[0].get_xdata()) == list(range(1, GROUP_EPOCHS + 1))
    assert np.allclose(thick[0].get_ydata(), 10 * SWEPT_BASES["nom"])
    assert any(np.allclose(line.get_ydata(), NOM_MIN_RATIO) for line in figure.axes[0].get_lines())
    assert f"claim 5: Nom at least {NOM_MIN_RATIO:g}" in legend_texts(figure)


def test_an_extension_arm_gets_figures_of_its_own_named_and_titled_as_such(tmp_path):
    """Experiment G's minibatch-SGD arm travels far farther than the paper's full-batch steps: its trials are
    drawn in figures of their own (groups_sgd_*), titled as the extension, and never in the paper's."""
    from analysis.figures import _figures_to_draw

    paper = [groups_trial("rot", mode, seed) for mode in ("equi", "nom") for seed in range(2)]
    extension = [make_trial("groups", {"group": "rot", "mode": mode, "seed": str(seed), "optimizer": "sgd",
                                       "epochs": str(GROUP_EPOCHS), "n": "6", "channels": "2", "n_samples": "8",
                                       "batch_size": "4", "weights_every": "0"}) for mode in ("equi", "nom")
                 for seed in range(2)]
    trials = paper + extension
    write_manifest(tmp_path, trials)
    for index, trial in enumerate(trials):
        write_trial(tmp_path, index, trial, 1e-9 if trial.settings.mode == "equi" else 0.05)
    from analysis.loading import read_results

    results = read_results(tmp_path)
    planned = _figures_to_draw(results.epochs, results.steps, results.trials)
    assert {"groups_dist_vs_travelled", "groups_sgd_dist_vs_travelled", "groups_sgd_ratio_vs_epoch_log",
            "groups_sgd_training_curves"} <= set(planned)
    for name, extension_figure in (("groups_dist_vs_travelled", False), ("groups_sgd_dist_vs_travelled", True)):
        build, shows, _, _ = planned[name]
        figure, facts = build()
        assert facts.complete == 4
        # Every series of the extension's figure is the extension: its legend says so once, above the entries.
        assert "Nom" in legend_texts(figure) and not any("SGD" in text for text in legend_texts(figure))
        heading = figure.legends[0].get_title().get_text()
        assert heading == ("extension: minibatch SGD" if extension_figure else "")
        assert ("extension: minibatch SGD" in figure.get_suptitle()) == extension_figure
        assert shows.startswith("Experiment G, extension: minibatch SGD:" if extension_figure else "Experiment G:")


def handles_by_label(figure) -> dict:
    return {h.get_label(): h for legend in figure.legends for h in legend.legend_handles}


def test_an_unknown_mode_or_experiment_is_drawn_with_a_default_style_and_named(swept):
    from analysis.loading import experiment_of
    from analysis.trajectories import trajectory_figure

    results = swept.results
    trials, epochs = results.trials.copy(), results.epochs.copy()
    for table in (trials, epochs):
        mystery = (table["experiment"] == "groups") & (table["mode"] == "nom")
        table.loc[mystery, ["mode", "series"]] = ["mystery", "mystery"]
    figure, _ = trajectory_figure(epochs, trials, experiment_of("groups"))
    assert "mystery" in legend_texts(figure)
    assessment = analysis.evaluate_claims(trials, pd.DataFrame(columns=["trial_id", "final_ratio"]))
    assert any("no claim applies to cell rot / mode mystery" in note.line for note in assessment.notes)

    for table in (trials, epochs):
        table.loc[table["experiment"] == "cnn", "experiment"] = "futuristic"
    unknown = experiment_of("futuristic")
    figure, facts = trajectory_figure(epochs, trials, unknown, log=True)
    assert facts.panels == 1 and "Experiment futuristic" in figure.get_suptitle()
    assert {"phase 2 Aug (C4 orbit)", "phase 2 Nom"} <= set(legend_texts(figure))
    notes = analysis.evaluate_claims(trials, pd.DataFrame(columns=["trial_id", "final_ratio"])).notes
    assert sum("no claim applies to cell cross" in note.line for note in notes) == 2


def test_median_follows_the_runs_along_the_distance_travelled():
    from analysis.medians import median_along_x

    # Three seeds that travel at different speeds: at epoch 1 the median distance travelled is seed a's
    # (2.0) and the median dist_E seed c's (0.3), a point that no run passes through.
    runs = {"a": ([0.0, 2.0, 4.0], [0.0, 2.0, 4.0]), "b": ([0.0, 1.0, 2.0], [0.0, 0.1, 0.2]),
            "c": ([0.0, 3.0, 6.0], [0.0, 0.3, 0.6])}
    naive = (np.median([x[1] for x, _ in runs.values()]), np.median([y[1] for _, y in runs.values()]))
    assert naive == (2.0, 0.3)
    assert all(not np.isclose(np.interp(naive[0], x, y), naive[1]) for x, y in runs.values())
    x, y = median_along_x([(np.array(rx), np.array(ry)) for rx, ry in runs.values()])
    assert x[0] == 0.0 and x[-1] == 4.0  # the range most seeds cover: b stops at 2, a at 4, c goes on alone
    for xi, yi in zip(x, y):
        covering = [(rx, ry) for rx, ry in runs.values() if rx[-1] >= xi]
        if len(covering) == 3:  # where every seed is, each point of the median lies on one of them
            assert any(np.isclose(np.interp(xi, rx, ry), yi) for rx, ry in covering)
        else:  # past b's end, the median of a and c
            assert len(covering) == 2 and np.isclose(yi, np.mean([np.interp(xi, rx, ry) for rx, ry in covering]))
    assert not any(np.isclose(xi, naive[0]) and np.isclose(yi, naive[1]) for xi, yi in zip(x, y))


def test_a_seed_that_travels_little_does_not_cut_the_median_short():
    """The demo's rot Equi: one seed travelled under a tenth of the others. The median goes on over the
    range most seeds cover (more than half); it needs a quorum, so a single seed never carries it alone."""
    from analysis.medians import median_along_x

    far = [(np.linspace(0, 0.37, 21), np.linspace(0, 0.01, 21) * k) for k in (1.0, 2.0)]
    near = (np.linspace(0, 0.035, 21), np.linspace(0, 0.02, 21))
    x, y = median_along_x([near, *far])
    assert x[-1] == pytest.approx(0.37) and len(x) > 21
    x, _ = median_along_x([near, far[0], (np.linspace(0, 0.2, 21), np.linspace(0, 1, 21))])
    assert x[-1] == pytest.approx(0.2)  # beyond 0.2 only one seed is left: no median there
    assert median_along_x([])[0].size == 0


def test_a_run_that_turns_back_is_read_at_its_first_passage():
    from analysis.medians import first_passage

    x, y = first_passage(np.array([0.0, 1.0, 0.5, 2.0]), np.array([0.0, 1.0, 9.0, 2.0]))
    assert list(x) == [0.0, 1.0, 2.0] and list(y) == [0.0, 1.0, 2.0]


def schema1(out: Path, trials) -> None:
    """Rewrite a folder written by this pipeline as the pipeline wrote it before labels were stored:
    manifest entries with the settings under "config" (the CNN's variant under "config" too), trial
    files with attrs ``config`` (JSON), ``cnn_config`` or ``group``, and no cell, swept or data source."""
    import h5py

    manifest = json.loads((out / "manifest.json").read_text())
    for entry, trial in zip(manifest["trials"], trials):
        settings = dataclasses.asdict(trial.settings)
        if "variant" in settings:
            settings["config"] = settings.pop("variant")
        for key in ("labels", "swept", "settings"):
            entry.pop(key)
        entry["config"] = settings
        with h5py.File(out / "trials" / f"{trial.trial_id}.h5", "a", locking=False) as f:
            for key in ("cell", "variant", "swept", "settings", "data_source", "pack_size"):
                if key in f.attrs:
                    del f.attrs[key]
            f.attrs["config"] = json.dumps({**settings, "experiment": trial.experiment}, sort_keys=True)
            f.attrs["schema_version"] = 1
            if trial.experiment == "cnn":
                f.attrs["cnn_config"] = settings["config"]
    manifest.pop("format", None)
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_folders_of_the_earlier_format_still_aggregate(tmp_path):
    out = tmp_path / "old"
    trials = [groups_trial("rot", "aug", seed) for seed in range(2)] + \
             [groups_trial("rot", "aug", seed, augment="sampled:2") for seed in (2, 3)] + \
             [cnn_trial("skew", seed) for seed in range(2)]
    trials = [dataclasses.replace(t, trial_id=f"{t.trial_id}-{i}") for i, t in enumerate(trials)]
    write_manifest(out, trials)
    for index, trial in enumerate(trials):
        write_trial(out, index, trial, 0.03 if trial.experiment == "cnn" else 1e-9)
    schema1(out, trials)
    assert "labels" not in json.loads((out / "manifest.json").read_text())["trials"][0]

    result = analysis.aggregate(out, log=lambda line: None, figures=False)
    table = analysis.load_trials(out).set_index("trial_id")
    assert set(table["status"]) == {"complete"}
    assert table.loc["cnn-skew-s000-4", "variant"] == "skew" and table.loc["cnn-skew-s000-4", "cell"] == "skew"
    assert table.loc["rot-aug-s000-0", "group"] == "rot" and table.loc["rot-aug-s000-0", "data_source"] == ""
    # Without a recorded sweep, the setting in which trials of one cell and mode differ is the swept one.
    assert list(result.summary["series"]) == ["Aug, exact orbit", "Aug, 2 sampled passes", "phase 2 Aug (C4 orbit)"]
    assert verdict(result, "rot", "Aug (orbit) stays in E").outcome == "holds"
    assert verdict(result, "cnn skew (aug)", "Aug leaves E in phase 2").outcome == "holds"
    assert any("sampled Aug is judged against Nom" in note.line for note in result.notes)
    report = (out / "aggregate" / "report.md").read_text()
    assert "not recorded (trial files written before the data source was stored)" in report
    assert "no claim applies: sampled Aug is judged against Nom" in report


def test_experiments_declare_which_claim_applies_to_which_cell():
    from pipeline.experiments import get
    from pipeline.experiments.claims import BELOW_REFERENCE, NO_CLAIM, STAYS_IN_E, GridCell

    def phase2(cells):
        return [(c.kind, c.claim) for c in get("cnn").claims(cells) if c.phase != 1]

    gd = GridCell("cross", "aug", {}, {"phase2_optimizer": ("gd",), "reg": (0.0,)})
    assert phase2([gd]) == [(STAYS_IN_E, "Aug stays in E in phase 2 (compatible, unitary)")]
    # Minibatches of the augmented data are not whole orbits: judged against Nom, as sampled Aug is.
    sgd = GridCell("cross", "aug", {"phase2_optimizer": "sgd"}, {"phase2_optimizer": ("sgd",), "reg": (0.0,)})
    nom = GridCell("cross", "nom", {"phase2_optimizer": "sgd"}, {"phase2_optimizer": ("sgd",), "reg": (0.0,)})
    assert phase2([sgd])[0][0] == NO_CLAIM
    declared = [c for c in get("cnn").claims([sgd, nom]) if c.cell == sgd and c.phase != 1]
    assert [c.kind for c in declared] == [BELOW_REFERENCE] and declared[0].reference == nom
    assert declared[0].subject == "cnn cross (aug, minibatch SGD)"
    regularised = GridCell("rot", "aug", {}, {"augment": ("orbit",), "reg": (0.5,)})
    assert [c.kind for c in get("groups").claims([regularised])] == [NO_CLAIM]
    mixed = GridCell("rot", "aug", {}, {"augment": ("orbit", "sampled:2"), "reg": (0.0,)})
    assert get("groups").claims([mixed])[0].kind == NO_CLAIM  # sampled runs and no Nom cell to compare with


def test_a_verdict_on_an_extension_cell_can_cite_the_extension_figure():
    from analysis.claims import evidence_figure
    from pipeline.experiments import get
    from pipeline.experiments.claims import LEAVES_E, STAYS_IN_E, GridCell

    groups = get("groups")
    sgd = GridCell("rot", "nom", {"optimizer": "sgd"}, {"optimizer": ("sgd",)})
    gd = GridCell("rot", "nom", {}, {"optimizer": ("gd",)})
    assert evidence_figure(groups, LEAVES_E, sgd) == "groups_sgd_dist_vs_travelled.png"
    assert evidence_figure(groups, STAYS_IN_E, sgd) == "groups_sgd_dist_vs_travelled_log.png"
    assert evidence_figure(groups, LEAVES_E, gd) == evidence_figure(groups, LEAVES_E) == "groups_dist_vs_travelled.png"
    assert evidence_figure(get("cnn"), STAYS_IN_E, gd) == "cnn_dist_vs_epoch_log.png"


def test_where_a_seed_stops_the_median_of_the_others_is_drawn_apart_and_paler():
    """No vertical stroke joins the median of three seeds to that of the two that go on: it is a new line,
    at a lower alpha, starting where the short seed stopped."""
    from matplotlib.figure import Figure

    from analysis.drawing import draw_panel
    from analysis.style import FEWER_SEEDS, SeriesStyle

    rows = []
    for seed, (reach, slope) in enumerate([(0.2, 3.0), (1.0, 1.0), (1.2, 0.2)]):
        for epoch, x in enumerate(np.linspace(0, reach, 6)):
            rows.append({"trial_id": f"t{seed}", "series": "Nom", "mode": "nom", "status": "complete", "phase": 1,
                         "epoch": epoch, "dist_init": x, "dist_E": slope * x})
    ax = Figure().subplots()
    facts = draw_panel(ax, pd.DataFrame(rows), "dist_init", "dist_E", {"Nom": SeriesStyle("Nom", "#009E73", "-")},
                       along_x=True)
    medians = [line for line in ax.get_lines() if line.get_linewidth() == 2.0]
    assert facts.fewer and len(medians) == 2
    whole, fewer = medians
    assert whole.get_alpha() is None and fewer.get_alpha() == FEWER_SEEDS["alpha"]
    assert max(whole.get_xdata()) == pytest.approx(0.2) and min(fewer.get_xdata()) == pytest.approx(0.2)
    assert max(fewer.get_xdata()) == pytest.approx(1.0)  # where only one seed is left, no median
    # All three: the middle slope (1.0); past 0.2 the mean of 1.0 and 0.2: the median changes seeds, not course.
    assert np.allclose(whole.get_ydata(), whole.get_xdata()) and np.allclose(fewer.get_ydata(), 0.6 * fewer.get_xdata())
