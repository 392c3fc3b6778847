"""MNIST for both experiments.

Where the data comes from, in order:
1. the official MNIST test split (the paper trains on it) through torchvision, if its files are already
   under the data root;
2. the same, downloaded into the data root, unless downloads are switched off (``download=False`` or
   ``PIPELINE_OFFLINE=1``);
3. the 10,000 real MNIST digits vendored in ``data/mnist/`` (see the README for their provenance), so a
   machine with no internet still runs the demo and the tests.
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from pipeline.settings import DATA_SOURCES, ConfigError, quoted

VENDORED_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"
DEFAULT_ROOT = Path(os.environ.get("PIPELINE_DATA_ROOT", Path.home() / ".cache" / "pipeline-mnist"))


class DataUnavailable(ConfigError):
    """No MNIST where a trial may look for it: a problem of the machine's setup, reported as one line."""


@dataclass(frozen=True)
class Dataset:
    images: torch.Tensor  # (S, 1, size, size), float32
    labels: torch.Tensor  # (S,), int64
    source: str
    files: tuple[str, ...] = ()  # the files read: their checksums go into each trial file (pipeline.trialfile.provenance)

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str | None, dtype: torch.dtype | None) -> Dataset:
        return Dataset(self.images.to(device=device, dtype=dtype), self.labels.to(device), self.source, self.files)


def _read_idx(path: Path) -> torch.Tensor:
    """An unsigned-byte IDX file (the MNIST format): magic 0x00000800 + ndim, big-endian dims, data."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:
        raise DataUnavailable(f"{quoted(path)} is not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.reshape(shape)


def _vendored() -> tuple[torch.Tensor, torch.Tensor, str, tuple[str, ...]]:
    images = VENDORED_DIR / "t10k-images-idx3-ubyte.gz"
    labels = VENDORED_DIR / "t10k-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise DataUnavailable(f"vendored MNIST missing under {VENDORED_DIR}")
    return (_read_idx(images), _read_idx(labels).long(), f"vendored MNIST digits ({VENDORED_DIR})",
            (str(images), str(labels)))


def _official_files(root: Path) -> tuple[Path, Path] | None:
    raw = root / "MNIST" / "raw"
    for suffix in ("", ".gz"):
        images, labels = raw / f"t10k-images-idx3-ubyte{suffix}", raw / f"t10k-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return images, labels
    return None


def _official(root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor, str, tuple[str, ...]]:
    files = _official_files(root)
    if files is None and download:
        from torchvision.datasets import MNIST  # deferred: torchvision, needed only to download

        try:
            MNIST(str(root), train=False, download=True)
        except Exception as error:  # URLError, RuntimeError or HTTPError depending on the failure
            raise DataUnavailable(f"official MNIST not under {quoted(root)} and not downloadable ({error})") from error
        files = _official_files(root)
    if files is None:
        raise DataUnavailable(f"official MNIST not under {quoted(Path(root) / 'MNIST' / 'raw')} (downloads off)")
    images, labels = files
    return (_read_idx(images), _read_idx(labels).long(), f"official MNIST test split ({root})",
            (str(images), str(labels)))


@functools.lru_cache(maxsize=8)
def _raw(source: str, root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor, str, tuple[str, ...]]:
    attempts = []
    if source in ("auto", "official"):
        try:
            return _official(Path(root), download)
        except DataUnavailable as error:
            attempts.append(str(error))
            if source == "official":
                raise
    try:
        return _vendored()
    except DataUnavailable as error:
        attempts.append(str(error))
    raise DataUnavailable(
        "no MNIST found: " + "; ".join(attempts) + ". Put the official IDX files under "
        f"{root}/MNIST/raw (or set PIPELINE_DATA_ROOT), or restore data/mnist/ from the repository."
    )


def load_mnist(
    n_samples: int | None = None,
    size: int = 28,
    normalize: bool = False,
    source: str = "auto",
    root: str | Path | None = None,
    download: bool | None = None,
) -> Dataset:
    """The first ``n_samples`` digits, resized to size x size (bilinear, antialiased), in [0, 1];
    with ``normalize`` standardised by the loaded set's pixel mean and standard deviation."""
    if source not in DATA_SOURCES:
        raise ConfigError(f"unknown data source {source!r}; accepted: {', '.join(DATA_SOURCES)}")
    if download is None:
        download = os.environ.get("PIPELINE_OFFLINE", "0") != "1"
    images, labels, origin, files = _raw(source, str(root or DEFAULT_ROOT), download)
    if n_samples is not None:
        if not 1 <= n_samples <= len(labels):
            raise ValueError(f"n_samples={n_samples} out of range; accepted: 1..{len(labels)} ({origin})")
        images, labels = images[:n_samples], labels[:n_samples]
    x = images.to(torch.float32)[:, None] / 255.0
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if normalize:
        x = (x - x.mean()) / x.std()
    return Dataset(images=x.contiguous(), labels=labels.clone(), source=origin, files=files)
