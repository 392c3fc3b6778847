"""Checks before the queue (pipeline/launch/checks.py, pipeline/launch/storage.py): a grid whose device contradicts its
profile, that does not fit where OUT lives, or that would run for hours on a login node is refused in one line
before anything is written or queued; retrying in the same folder is not blocked by what a refusal left."""

import contextlib
import json
import re
import subprocess
import sys
import uuid

import pytest

from helpers import ROOT
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.launch import checks, storage
from pipeline.launch.backends.slurm import check_partition
from pipeline.launch.grid import load_grid
from pipeline.launch.profiles import load_profile
from pipeline.trialfile.manifest import read_manifest, write_manifest

TINY = ["--set", "groups=rot", "--set", "modes=nom", "--set", "configs=cross"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_grid_on_the_cpu_is_refused_on_a_gpu_profile_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        assert main(["submit", "--exp", "smoke", "--cluster", "t4", "--out", str(out), "--set", "device=cpu",
                     *TINY, *dry]) == 2
        err = one_line_error(capsys)
        assert "set device='cpu'" in err and "profile t4 requests GPUs" in err and "--set device=auto" in err
    assert not out.exists()  # nothing written: the retry below is not blocked by a stale manifest


def test_cuda_on_a_cpu_slurm_profile_is_refused_and_the_presets_follow_the_profile(tmp_path, capsys):
    assert main(["submit", "--exp", "smoke", "--cluster", "testcluster", "--out", str(tmp_path / "o"),
                 "--set", "device=cuda", "--dry-run", *TINY]) == 2
    assert "profile testcluster requests no GPU" in one_line_error(capsys)
    # No preset pins a device: each follows the profile it is submitted on.
    for preset in ("smoke", "demo", "stability", "stability-smoke", "stability-control", "cluster-smoke"):
        assert {t.settings.device for t in load_grid(preset).trials()} == {"auto"}, preset
        checks.check_devices(load_grid(preset).trials(), load_profile("t4"), visible_gpus=[])


def test_a_folder_whose_trials_were_placed_on_the_cpu_takes_the_corrected_device(tmp_path):
    """The manifest an older submission left (device=cpu for a GPU profile) does not block the retry with
    device=auto: the device says where a trial runs, not what it is."""
    out = tmp_path / "out"
    old = load_grid("smoke", {"groups": "rot", "modes": "nom", "configs": "cross", "device": "cpu"})
    write_manifest(out, old, old.trials())
    new = load_grid("smoke", {"groups": "rot", "modes": "nom", "configs": "cross"})
    resolved = write_manifest(out, new, new.trials())
    assert [t.trial_id for t in resolved] == [t.trial_id for t in old.trials()]  # the same trials, not new ones
    assert {entry["settings"]["device"] for entry in read_manifest(out)["trials"]} == {"auto"}
    other = load_grid("smoke", {"groups": "rot", "modes": "nom", "configs": "cross", "lr": "0.5"})
    with pytest.raises(ConfigError, match="other settings .*lr="):
        write_manifest(out, other, other.trials())  # what a trial computes still may not change


@contextlib.contextmanager
def small_file_system(tmp_path, monkeypatch, free_bytes: int):
    """A folder on a file system with ``free_bytes`` free: a real tmpfs where this machine lets us mount one
    (root), else the free-space lookup is told the number (the same check, without the kernel's word)."""
    point = tmp_path / "small"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={free_bytes}", "tmpfs", str(point)],
                             capture_output=True).returncode == 0
    if not mounted:
        monkeypatch.setattr(storage, "free_bytes", lambda path: free_bytes)
    try:
        yield point, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_grid_that_does_not_fit_its_file_system_is_refused_before_anything_is_queued(tmp_path, monkeypatch, capsys):
    with small_file_system(tmp_path, monkeypatch, 64 << 20) as (point, mounted):
        out = point / "out"
        # One trial at the paper's width keeps two snapshots of 163 MB: far more than 64 MiB.
        argv = ["submit", "--exp", "paper-lite", "--out", str(out), "--set", "groups=rot", "--set", "modes=nom",
                "--set", "seeds=1", "--allow-long-local"]
        assert main(argv) == 2
        err = one_line_error(capsys)
        assert "write about 326 MB of weight snapshots" in err and re.search(r"has 6\d\.\d MB free", err), err
        assert ("tmpfs at" in err) == mounted
        assert "--out on scratch" in err and "weights_every=0" in err
        assert not out.exists()
        # The dry run says the same, as what a submission would do, and submits nothing.
        assert main([*argv, "--dry-run"]) == 0
        assert "a submission would be refused: the trials to run write about 326 MB" in capsys.readouterr().out
        # What fits is submitted, with its line.
        assert main(["submit", "--exp", "smoke", "--out", str(out), *TINY]) == 0
        assert re.search(r"storage: about [\d.]+ kB to write into \S+ \((tmpfs|ext4|\w+) at ", capsys.readouterr().out)


def test_quotas_are_read_from_the_sites_tools_and_unknown_is_said(tmp_path):
    lfs = ("Disk quotas for usr alice (uid 1000):\n     Filesystem  kbytes   quota   limit   grace   files\n"
           "  /lustre/scratch  1000*  0  3000  -  10  0  0  -\n")
    assert storage.parse_lfs_quota(lfs, "/lustre/scratch").left == 2000 * 1024
    wrapped = "/very/long/lustre/mount/point\n   500  1000  2000  -  1  0  0  -\n"
    assert storage.parse_lfs_quota(wrapped, "/very/long/lustre/mount/point").left == 500 * 1024  # the soft limit
    assert storage.parse_lfs_quota("/lustre  5  0  0  -", "/lustre").left is None  # no limit set
    quota = ("Disk quotas for user alice (uid 1000):\n     Filesystem  blocks   quota   limit   grace   files\n"
             "      /dev/sdb1  400000  500000  550000            12       0       0\n")
    assert storage.parse_quota(quota, "/dev/sdb1").left == 100000 * 1024
    assert storage.parse_quota("Disk quotas for user alice (uid 1000): none\n").known
    absent = storage.quota_of(tmp_path, which=lambda name: None)
    assert not absent.known and absent.words.startswith("unknown (neither `quota` nor `lfs quota`")
    silent = storage.quota_of(tmp_path, which=lambda name: f"/usr/bin/{name}", run=lambda command: None)
    assert not silent.known and "did not answer" in silent.words
    # A quota that leaves less than the grid writes refuses it, though the disk has room.
    grid = load_grid("paper-lite", {"groups": "rot", "modes": "nom", "seeds": "1"})
    tight = storage.Quota(10 << 20, True, "10.5 MB left (quota)")
    with pytest.raises(ConfigError, match="your quota on .* has 10.5 MB left"):
        checks.storage_check(tmp_path / "out", grid.trials(), free=1 << 40, quota=tight)
    line = checks.storage_check(tmp_path / "out", grid.trials(), free=1 << 40, quota=absent)
    assert line.startswith("storage: about 326 MB to write") and "quota unknown" in line


def test_forgetting_the_cluster_does_not_start_the_paper_grid_on_this_machine(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(checks, "_visible", lambda given: [] if given is None else list(given))
    out = tmp_path / "pg"
    assert main(["submit", "--exp", "paper-groups", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "480 trials estimated at" in err and "CPU-hours would run on this machine" in err
    assert "--cluster t4" in err and "--allow-long-local" in err
    assert not out.exists()
    assert main(["submit", "--exp", "paper-groups", "--out", str(out), "--dry-run"]) == 0
    assert "a submission would be refused: 480 trials estimated at" in capsys.readouterr().out


def test_a_partition_or_gpu_this_slurm_lacks_is_refused_in_one_line():
    here = {"debug*": []}  # what sinfo says on the single-node SLURM of this machine: no GPU
    check_partition(load_profile("testcluster"), here)
    with pytest.raises(ConfigError, match="asks for partition 'gpu', but this SLURM has debug"):
        check_partition(load_profile("t4"), here)
    gpu_here = load_profile("testcluster")
    gpu_here.gpus, gpu_here.gpu_type = 1, "t4"
    with pytest.raises(ConfigError, match=r"requests 1 x t4 per task, but partition 'debug' .* no such GPU"):
        check_partition(gpu_here, here)
    check_partition(gpu_here, {"debug*": ["gpu:t4:4(S:0)"]})
    with pytest.raises(ConfigError, match="no such GPU"):
        check_partition(gpu_here, {"debug*": ["gpu:a100:4"]})
    check_partition(load_profile("t4"), None)  # sinfo did not answer: sbatch judges


def test_the_gpu_request_prints_as_sbatch_reads_it(capsys):
    assert load_profile("t4").gpu_request_words() == "--gres=gpu:t4:1 (1 x T4 per task)"
    assert load_profile("a40").gpu_request_words() == "--gpus-per-node=A40:1 (1 x A40 per task)"
    assert main(["submit", "--exp", "smoke", "--cluster", "a40", "--out", "/tmp/never-written", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "GPU request: --gpus-per-node=A40:1 (1 x A40 per task)" in printed and "{'" not in printed


@pytest.mark.slurm
def test_a_gpu_smoke_on_this_slurm_is_refused_before_queueing(slurm_cluster, tmp_path):
    """make smoke CLUSTER=<a GPU profile> on the local SLURM (no GPU): one line, nothing queued."""
    profile = tmp_path / "gpu-here.toml"
    profile.write_text((ROOT / "slurm" / "profiles" / "testcluster.toml").read_text()
                       .replace("gpus = 0", 'gpus = 1\ngpu_type = "t4"'))
    out = tmp_path / f"smoke-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(["make", "smoke", f"CLUSTER={profile}", f"SMOKE_OUT={out}", f"PY={sys.executable}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "requests 1 x t4 per task, but partition 'debug'" in errors[0], result.stderr
    assert not out.exists()  # nothing written, not even the folder


def test_submission_records_keep_the_options_they_ran_with(tmp_path):
    out = tmp_path / "out"
    assert main(["submit", "--exp", "smoke", "--out", str(out), "--trials-per-task", "3", *TINY]) == 0
    record = json.loads((out / "submissions.jsonl").read_text().splitlines()[-1])
    assert record["options"] == {"sinks": [], "trials_per_task": 3, "pack_seeds": False, "workers": None,
                                 "overrides": {"configs": "cross", "groups": "rot", "modes": "nom"}}
