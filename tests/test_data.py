import gzip

import numpy as np
import pytest
import torch

import qevo_lite
import qevo_lite.core.data as qdata
from qevo_lite import DatasetUnavailable, load_splits
from qevo_lite.core.data import load_arrays, prepare_fashion_mnist


def test_splits_are_disjoint_and_search_comes_from_training_split(digits):
    x_tr, y_tr, x_te, y_te, _ = load_arrays("digits")
    train, search = set(digits.train_indices.tolist()), set(digits.search_indices.tolist())
    assert not train & search
    assert len(search) == len(digits.search) == 256
    assert len(train) == len(digits.train)
    assert max(train | search) < len(y_tr)
    # the search images are exactly those training images (after the same normalisation) ...
    assert torch.equal(digits.search.y, y_tr[digits.search_indices])
    assert torch.equal(digits.train.y, y_tr[digits.train_indices])
    # ... and test is the whole official test split, untouched by the shuffle
    assert torch.equal(digits.test.y, y_te)
    mean, std = x_tr.float().div(255).mean(), x_tr.float().div(255).std()
    expected = (x_tr[digits.search_indices].float().div(255) - mean) / std
    assert torch.allclose(digits.search.x, expected, atol=1e-5)


def test_search_images_are_never_pretraining_images_whatever_the_search_size():
    small, large = load_splits("digits", search_size=64, seed=3), load_splits("digits", search_size=300, seed=3)
    # the reserved block is the same, so the larger search split contains the smaller one ...
    assert set(small.search_indices.tolist()) <= set(large.search_indices.tolist())
    # ... and neither search split overlaps either training split
    for a in (small, large):
        for b in (small, large):
            assert not set(a.search_indices.tolist()) & set(b.train_indices.tolist())


def test_same_seed_same_splits_different_seed_different():
    a, b, c = (load_splits("digits", search_size=128, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.search_indices, b.search_indices) and torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.search_indices, c.search_indices)
    assert torch.equal(a.test.y, c.test.y)  # the official test split does not depend on the seed


def test_digits_fallback_shapes_and_normalisation(digits):
    assert digits.name == "digits" and digits.num_classes == 10 and digits.in_channels == 1
    assert digits.train.x.shape[1:] == (1, 28, 28) and digits.train.x.dtype == torch.float32
    assert digits.train.y.dtype == torch.int64 and set(digits.train.y.tolist()) == set(range(10))
    assert abs(float(digits.train.x.mean())) < 0.1 and abs(float(digits.train.x.std()) - 1) < 0.1
    sub = digits.test.subset(10)
    assert len(sub) == 10 and torch.equal(sub.y, digits.test.y[:10])


def test_sizes_and_bad_arguments():
    s = load_splits("digits", search_size=100, train_size=50, test_size=20)
    assert (len(s.search), len(s.train), len(s.test)) == (100, 50, 20)
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_splits("imagenet")
    with pytest.raises(ValueError, match="search_size"):
        load_splits("digits", search_size=0)
    with pytest.raises(ValueError, match="leaves no training images"):
        load_splits("digits", search_size=100_000)


def test_missing_fashion_mnist_names_the_apt_package(monkeypatch, tmp_path):
    monkeypatch.setattr(qdata, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(qevo_lite.DatasetUnavailable) as err:
        load_splits("fashion_mnist", root=tmp_path / "empty")
    msg = str(err.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert "downloads by itself" in msg and "digits" in msg


def test_missing_fashion_mnist_downloads_by_default_and_never_with_download_false(monkeypatch, tmp_path):
    """The default (download=None) tries torchvision's download when the files are missing; an offline failure
    becomes the clear DatasetUnavailable; download=False never tries."""
    import torchvision.datasets
    monkeypatch.setattr(qdata, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    calls = []

    class OfflineFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append(download)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", OfflineFashionMNIST)
    with pytest.raises(qevo_lite.DatasetUnavailable, match="A download was tried and failed"):
        load_splits("fashion_mnist", root=tmp_path / "a")
    assert calls == [True]
    with pytest.raises(qevo_lite.DatasetUnavailable) as err:
        load_splits("fashion_mnist", root=tmp_path / "b", download=False)
    assert calls == [True] and "tried" not in str(err.value)
    with pytest.raises(RuntimeError, match="no network"):       # download=True: torchvision's own error
        load_splits("fashion_mnist", root=tmp_path / "c", download=True)


def test_fashion_mnist_debian_files_are_decompressed(monkeypatch, tmp_path):
    debian = tmp_path / "debian"
    debian.mkdir()
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for i, n in enumerate(names):
        with gzip.open(debian / f"{n}.gz", "wb") as f:
            f.write(bytes([i]) * 16)
    monkeypatch.setattr(qdata, "DEBIAN_FASHION_MNIST", debian)
    root = prepare_fashion_mnist(tmp_path / "root")
    for i, n in enumerate(names):
        assert (root / "FashionMNIST" / "raw" / n).read_bytes() == bytes([i]) * 16


def test_fashion_mnist_download_is_passed_to_torchvision(monkeypatch, tmp_path):
    import torchvision.datasets
    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train=True, download=False):
            calls.append((train, download))

    monkeypatch.setattr(qdata, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    prepare_fashion_mnist(tmp_path / "root", download=True)
    assert calls == [(True, True), (False, True)]


class FakeCIFAR10:
    """Stands in for torchvision's CIFAR10: 'downloads' a tiny random dataset when asked to."""

    calls = []

    def __init__(self, root, train=True, download=False):
        FakeCIFAR10.calls.append({"root": root, "train": train, "download": download})
        if not download:
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        n = 40 if train else 12
        rng = np.random.default_rng(0 if train else 1)
        self.data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]
        self.classes = [f"class{i}" for i in range(10)]


def test_cifar10_download_flag_is_passed_through(monkeypatch, tmp_path):
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls = []
    s = load_splits("cifar10", search_size=8, root=tmp_path, download=True)
    assert [c["download"] for c in FakeCIFAR10.calls] == [True, True]
    assert {c["root"] for c in FakeCIFAR10.calls} == {str(tmp_path)}
    assert s.in_channels == 3 and s.train.x.shape[1:] == (3, 32, 32)
    assert (len(s.search), len(s.test), s.num_classes) == (8, 12, 10)


def test_cifar10_without_download_raises_with_the_command(monkeypatch, tmp_path):
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    FakeCIFAR10.calls = []
    with pytest.raises(DatasetUnavailable) as err:
        load_splits("cifar10", root=tmp_path, download=False)
    assert FakeCIFAR10.calls[0]["download"] is False
    assert "downloads by itself" in str(err.value)


def _write_image_folder(root, n_per_class):
    from PIL import Image
    rng = np.random.default_rng(0)
    for part, n in n_per_class.items():
        for cls in ("cat", "dog"):
            d = root / part / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")


def test_folder_dataset(tmp_path):
    _write_image_folder(tmp_path / "ds", {"train": 6, "test": 3})
    s = load_splits(f"folder:{tmp_path / 'ds'}", search_size=4, seed=0)
    assert s.classes == ("cat", "dog") and s.in_channels == 3
    assert s.train.x.shape[1:] == (3, 8, 8)
    assert len(s.search) == 4 and len(s.test) == 6
    assert not set(s.train_indices.tolist()) & set(s.search_indices.tolist())
    assert sorted(s.test.y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_folder_dataset_without_test_folder_raises(tmp_path):
    _write_image_folder(tmp_path / "ds", {"train": 2})
    with pytest.raises(DatasetUnavailable, match="train/<class>/ and test/<class>/"):
        load_splits(f"folder:{tmp_path / 'ds'}", search_size=1)
