import pytest
import torch

from pipeline.core import data
from pipeline.core.data import DataUnavailable, load_mnist


def test_vendored_digits_are_the_documented_set():
    d = load_mnist(source="vendored")
    assert d.images.shape == (10000, 1, 28, 28)
    assert d.labels.bincount().tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert abs(float(d.images.mean()) - 0.1311) < 1e-3 and abs(float(d.images.std()) - 0.3087) < 1e-3


def test_resize_to_14_stays_in_unit_range_and_normalization_standardises():
    small = load_mnist(500, size=14, source="vendored")
    assert small.images.shape == (500, 1, 14, 14)
    assert float(small.images.min()) >= 0.0 and float(small.images.max()) <= 1.0
    normed = load_mnist(500, normalize=True, source="vendored")
    assert abs(float(normed.images.mean())) < 1e-5 and abs(float(normed.images.std()) - 1) < 1e-5


def test_auto_falls_back_to_the_vendored_digits_offline(tmp_path):
    d = load_mnist(10, source="auto", root=tmp_path, download=False)
    assert "vendored" in d.source
    with pytest.raises(DataUnavailable, match="official MNIST not under"):
        load_mnist(10, source="official", root=tmp_path, download=False)


def test_official_files_under_the_root_are_used(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    import gzip
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((data.VENDORED_DIR / f"{name}.gz").read_bytes()))
    d = load_mnist(10, source="official", root=tmp_path, download=False)
    assert "official" in d.source
    assert torch.equal(d.labels, load_mnist(10, source="vendored").labels)


def test_no_source_gives_one_error_saying_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "VENDORED_DIR", tmp_path / "gone")
    data._raw.cache_clear()
    with pytest.raises(DataUnavailable) as error:
        load_mnist(10, root=tmp_path / "root", download=False)
    message = str(error.value)
    assert str(tmp_path / "root") in message and str(tmp_path / "gone") in message and "\n" not in message
    data._raw.cache_clear()


def test_bad_sample_count_names_the_accepted_range():
    with pytest.raises(ValueError, match=r"n_samples=0 out of range; accepted: 1..10000"):
        load_mnist(0, source="vendored")
