"""Time limits by cost: estimates per GPU type that say what they rest on, tasks and job arrays that follow
them, the partition's maximum, and the profile keys that shape them (no SLURM needed)."""

import re
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.launch import layout, throughput
from pipeline.launch.grid import load_grid
from pipeline.launch.profiles import load_profile
from pipeline.launch.submission import plan_submission
from pipeline.settings import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def plan_of(grid: str, profile, overrides=None):
    g = load_grid(grid, overrides)
    trials = g.trials()
    return plan_submission(None, [t.index for t in trials], profile, g.launch.get("trials_per_task"), None,
                           bool(g.launch.get("pack_seeds", False)), trials=trials, name=g.name), trials


def profile_file(tmp_path, base: str, **changes) -> str:
    text = (ROOT / "slurm" / "profiles" / f"{base}.toml").read_text()
    for key, value in changes.items():
        line = f"{key} = {value}"
        text = re.sub(rf"^{key} = .*$", line, text, flags=re.M) if re.search(rf"^{key} = ", text, re.M) else \
            text.replace('executor = "slurm"\n', f'executor = "slurm"\n{line}\n')
    path = tmp_path / f"{base}-changed.toml"
    path.write_text(text)
    return str(path)


def test_the_h200_table_explains_what_gpu_check_measured():
    """Per trial on one H200 (closing note of issue 10): rototrans exact orbit 42.24 min, trans exact orbit
    10.35 min, every other cell 0.13-1.34 min; paper-cnn 1.49 GPU-hours packed."""
    rate = throughput.speed("H200", "groups").rate
    assert throughput.speed("H200", "groups").basis == "measured"
    minutes = {}
    for trial in load_grid("paper-groups").trials():
        minutes.setdefault(layout.cell_of(trial), throughput.trial_seconds(trial.settings, rate) / 60)
    assert minutes["rototrans-aug-orbit"] == pytest.approx(42.24, rel=0.05)
    assert minutes["trans-aug-orbit"] == pytest.approx(10.35, rel=0.05)
    others = [m for cell, m in minutes.items() if cell not in ("rototrans-aug-orbit", "trans-aug-orbit")]
    assert 0.13 * 0.85 <= min(others) and max(others) <= 1.34 * 1.15
    cnn = throughput.speed("H200", "cnn", packed=True).rate
    hours = sum(throughput.trial_seconds(t.settings, cnn) for t in load_grid("paper-cnn").trials()) / 3600
    assert hours == pytest.approx(1.49, rel=0.05)


def test_an_estimate_says_whether_it_was_measured_scaled_or_assumed():
    t4 = throughput.speed("T4", "groups")
    assert t4.basis == "scaled" and "H200" in t4.words and "8.1 / 67" in t4.words
    assert t4.rate.gflops == pytest.approx(throughput.MEASURED[("H200", "groups", False)].gflops * 8.1 / 67)
    assert throughput.speed("A40", "stability").basis == "assumed"
    unknown = throughput.speed("V100", "groups")
    assert "V100" in unknown.words and unknown.rate.gflops == t4.rate.gflops  # taken as the slowest card known
    assert throughput.MARGIN["measured"] < throughput.MARGIN["scaled"] < throughput.MARGIN["assumed"]


def test_gpu_check_measurements_of_this_site_override_the_table(tmp_path, monkeypatch):
    rates = tmp_path / "gpu_rates.csv"
    rates.write_text("gpu,experiment,packed,gflops,epoch_overhead_s,measured_at\n"
                     "NVIDIA A40,groups,0,12345.0,0.2,2026-12-01\n")
    monkeypatch.setattr(throughput, "GPU_RATES", rates)
    found = throughput.speed("A40", "groups")
    assert found.basis == "measured" and found.rate.gflops == 12345.0 and "2026-12-01" in found.words
    assert throughput.speed("T4", "groups").basis == "scaled"  # other cards keep the table's H200 figure
    assert throughput.gpu_key("NVIDIA A100-SXM4-80GB") == "A100" and throughput.gpu_key("t4") == "T4"


def test_fitting_measured_trials_recovers_rate_and_overhead():
    points = [(flops, epochs, flops / 2e13 + epochs * 0.1) for flops, epochs in
              ((1e14, 50), (3e15, 50), (2.4e16, 50), (5e14, 300), (1e17, 50))]
    gflops, overhead = throughput.fit_rate(points)
    assert gflops == pytest.approx(20_000, rel=1e-6) and overhead == pytest.approx(0.1, rel=1e-6)


def test_paper_groups_on_t4_gets_time_limits_that_follow_cost():
    plan, trials = plan_of("paper-groups", load_profile("t4"))
    by_index = {t.index: t for t in trials}
    limits = [array.time_min for array in plan.arrays]
    assert len(limits) >= 3 and limits == sorted(limits, reverse=True) and len(set(limits)) == len(limits)
    assert all(limit <= 1440 for limit in limits)
    for array in plan.arrays:
        for task in array.tasks:
            # never below a task's estimate unless warned
            assert task.seconds <= 60 * array.time_min or task in array.over_limit
    longest = plan.arrays[0]
    assert {layout.cell_of(by_index[i]) for task in longest.tasks for i in task.indices} == {"rototrans-aug-orbit"}
    # cheap trials are packed several to a task; the expensive ones run alone
    cheap = [task for task in plan.arrays[-1].tasks if len(task.indices) > 1]
    assert cheap and all(len(task.indices) == 1 for task in longest.tasks)
    assert sorted(i for task in plan.tasks for i in task) == list(range(480))  # every trial exactly once
    assert sum(array.parallelism for array in plan.arrays) <= 64 and not plan.warnings


def test_an_estimate_above_the_partition_maximum_warns_naming_the_trials_and_the_requeues(tmp_path):
    profile = load_profile(profile_file(tmp_path, "t4", max_time_min=240))
    plan, _ = plan_of("paper-groups", profile)
    assert max(array.time_min for array in plan.arrays) == 240
    (warning,) = [w for w in plan.warnings if "rototrans-aug-orbit" in w]
    assert "rototrans-aug-orbit-s000" in warning and "(30 trials)" in warning and "requeue" in warning
    assert "240 min" in warning and "resume from the last checkpointed epoch" in warning


def test_a_dry_run_shows_every_array_and_its_limit(capsys, tmp_path):
    assert main(["submit", "--exp", "paper-groups", "--cluster", "t4", "--out", str(tmp_path / "x"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    times = re.findall(r"#SBATCH --time=(\d+)", printed)
    arrays = re.findall(r"^  array \d+: (\d+) task", printed, re.M)
    assert len(times) == len(arrays) >= 3 and len(set(times)) == len(times)
    assert "scaled from H200" in printed and "float32 peak" in printed


def test_the_profiles_fixed_minutes_per_trial_still_work(tmp_path):
    """A profile written before estimates ([time_limit_min]) keeps its minutes per trial."""
    path = tmp_path / "old.toml"
    path.write_text('executor = "slurm"\npartition = "gpu"\ngpu_type = "t4"\ngpus = 1\n\n[time_limit_min]\n'
                    'groups = 360\ncnn = 720\n')
    plan, _ = plan_of("paper-groups", load_profile(str(path)), {"groups": "rot"})
    assert [array.time_min for array in plan.arrays] == [360] and len(plan.tasks) == 120
    assert "fixed at 360 min per trial" in plan.estimates[0]


@pytest.mark.parametrize("line,message", [
    ("max_time_min = 0", "max_time_min in cluster profile"),
    ('min_task_min = "ten"', "min_task_min in cluster profile"),
    ("[time_limit_min]\ngroups = -5", "time_limit_min.groups in cluster profile"),
    ("max_time = 60", "unknown key 'max_time'"),
])
def test_bad_time_keys_in_a_profile_are_one_line(tmp_path, capsys, line, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'executor = "slurm"\n{line}\n')
    with pytest.raises(ConfigError) as error:
        load_profile(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_mail_on_end_and_fail_reaches_the_sbatch_script(tmp_path, capsys):
    profile = tmp_path / "mail.toml"
    profile.write_text((ROOT / "slurm" / "profiles" / "t4.toml").read_text()
                       + 'additional = { mail_type = "END,FAIL", mail_user = "me@example.org" }\n')
    assert main(["submit", "--exp", "smoke", "--cluster", str(profile), "--out", str(tmp_path / "x"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "#SBATCH --mail-type=END,FAIL" in printed and "#SBATCH --mail-user=me@example.org" in printed


def test_plan_on_a_cluster_is_a_summary_of_at_most_a_screen(capsys):
    assert main(["plan", "--exp", "paper-groups", "--cluster", "t4"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) <= 45
    header = next(line for line in printed if line.startswith("cell"))
    assert "GPU-hours" in header and "time/trial" in header and "snapshots" in header
    total = next(line for line in printed if line.startswith("total"))
    assert " 480 " in total and float(total.split()[-3]) > 100  # GPU-hours on T4
    assert any(line.startswith("  array 1:") and "rototrans-aug-orbit" in line for line in printed)
    assert main(["plan", "--exp", "paper-groups", "--cluster", "t4", "--trials"]) == 0
    listing = capsys.readouterr().out
    assert "rototrans-aug-orbit-s029" in listing and listing.count("-s0") >= 480


def test_packing_is_decided_once_and_handed_to_the_tasks(tmp_path):
    """The submission's units are what the tasks run: seeds packed in the plan train together, others alone."""
    from pipeline.launch.task import ArrayTask

    plan, trials = plan_of("demo", load_profile("testcluster"))
    by_index = {t.index: t for t in trials}
    packs = [unit for array in plan.arrays for task in array.tasks for unit in task.units if unit.packed]
    assert packs and all({by_index[i].experiment for i in unit.indices} == {"cnn"} for unit in packs)
    task = plan.arrays[0].tasks[0]
    array_task = ArrayTask(tmp_path, [list(u.indices) for u in task.units])
    assert array_task.units == [list(u.indices) for u in task.units] and array_task.indices == task.indices
