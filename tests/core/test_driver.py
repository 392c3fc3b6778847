"""The NVIDIA driver against torch's CUDA build (pipeline/core/driver.py): the level a driver serves decides, the
fix is one line, and a task on a GPU node names a driver too old instead of "no CUDA device"."""

import pytest

from pipeline.core import driver, numerics
from pipeline.core.numerics import DeviceUnavailable


@pytest.mark.parametrize("build, level, version, ok, words", [
    ("13.0", (13, 0), "580.65.06", True, "serves CUDA 13.0; torch is built for CUDA 13.0"),
    ("13.0", (13, 1), "590.10", True, "serves CUDA 13.1"),
    ("13.0", (12, 2), "535.104.05", False, "needs a driver >= 580.65.06: install the project's CUDA 12 build "
                                           "(make env CUDA=12, or conda env create -f environment-cuda12.yml)"),
    ("12.6", (12, 2), "535.104.05", True, "runs by CUDA's minor-version compatibility"),
    ("12.6", (12, 8), "570.26", True, "serves CUDA 12.8; torch is built for CUDA 12.6"),
    ("12.6", (11, 8), "520.61.05", False, "needs a driver >= 525.60.13: ask your site for a newer driver"),
    ("", (12, 2), "535.104.05", True, "CPU-only build"),
    ("13.0", None, "", True, "no NVIDIA driver found here"),
])
def test_a_driver_runs_the_builds_of_its_cuda_major_version_and_later_ones(build, level, version, ok, words):
    found = driver.check(build, level, version)
    assert found.ok == ok and words in found.line and "\n" not in found.line


def test_the_cuda_version_a_driver_reports_is_parsed():
    assert driver.parse_version("13.0") == (13, 0) and driver.parse_version("12.10") == (12, 10)
    assert driver.parse_version("") is None and driver.parse_version(None) is None


def test_a_gpu_task_under_a_driver_too_old_for_the_build_says_so_and_how_to_fix_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what torch says under a too old driver
    monkeypatch.setattr(driver, "check_here", lambda: driver.check("13.0", (12, 2), "535.104.05"))
    with pytest.raises(DeviceUnavailable) as refused:
        numerics.check_cuda("task of 5 trial(s) on a profile that requests GPUs")
    message = str(refused.value)
    assert message.startswith("task of 5 trial(s) on a profile that requests GPUs, but driver 535.104.05 serves CUDA "
                              "12.2 and this torch is built for CUDA 13.0, which needs a driver >= 580.65.06")
    assert "make env CUDA=12" in message and "\n" not in message
    # A driver that would do leaves the message it was: no device visible.
    monkeypatch.setattr(driver, "check_here", lambda: driver.check("13.0", (13, 0), "580.65.06"))
    with pytest.raises(DeviceUnavailable, match="no CUDA device is visible here"):
        numerics.check_cuda("task")
