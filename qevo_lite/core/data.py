"""Datasets and the train / search / test splits.

Every dataset is returned as in-memory tensors, because the evolution strategy
evaluates the same few thousand images thousands of times and slicing a tensor
is far cheaper than a ``DataLoader``.

Splits (see DESIGN.md):

* ``train``  -- pretraining only;
* ``search`` -- the ES fitness set, drawn from the *training* split, disjoint
  from ``train``;
* ``test``   -- the official test split; reported, never used to select.

Datasets:

* ``fashion_mnist`` (default): torchvision's FashionMNIST. Files already on disk first, then the
  Debian package ``dataset-fashion-mnist``, then a download when online.
* ``digits``: scikit-learn's bundled 8x8 digits, upsampled to 28x28; always
  available, the embedded fallback.
* ``cifar10``: torchvision's CIFAR10 (full profile, downloaded once when online).

``download`` everywhere: ``None`` (the default) downloads a missing dataset when the machine is online and
otherwise raises :class:`DatasetUnavailable` with what to do; ``True`` downloads (a failure raises
torchvision's error); ``False`` never downloads.
* ``folder:<path>``: any dataset in torchvision's ``ImageFolder`` layout
  (``<path>/train/<class>/*.png`` and ``<path>/test/<class>/*.png``), e.g. a
  small stand-in for CIFAR-10 when offline.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DATASETS = ("fashion_mnist", "digits", "cifar10")
SEARCH_POOL = 8192  # training images held back from pretraining whatever search_size is (see load_splits)


class DatasetUnavailable(RuntimeError):
    """Raised when a dataset is neither on disk nor downloadable; the message says how to get it."""


def default_root() -> Path:
    """Dataset root: ``$QEVO_DATA`` if set, else ``data/`` next to the package (a source checkout),
    else ``~/.cache/qevo_lite``."""
    if os.environ.get("QEVO_DATA"):
        return Path(os.environ["QEVO_DATA"])
    repo_data = Path(__file__).resolve().parents[2] / "data"
    if repo_data.is_dir():
        return repo_data
    return Path.home() / ".cache" / "qevo_lite"


@dataclass
class Split:
    """One split: images ``x`` float32 (N, C, H, W), normalised; labels ``y`` int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int) -> "Split":
        """The first ``n`` samples (the splits are already shuffled)."""
        return Split(self.x[:n], self.y[:n])


@dataclass
class Splits:
    """The three splits of one dataset plus what a model needs to know about it."""

    name: str
    train: Split
    search: Split
    test: Split
    classes: tuple
    train_indices: torch.Tensor   # indices into the official training split
    search_indices: torch.Tensor  # indices into the official training split

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------- raw loaders
def prepare_fashion_mnist(root: Path | str | None = None, download: bool | None = None) -> Path:
    """Make ``<root>/FashionMNIST/raw/*-ubyte`` exist and return ``root``.

    Order: files already there; the Debian package's files (decompressed, since
    the package re-compressed them and torchvision's md5 check would fail on the
    ``.gz``); a torchvision download unless ``download`` is False. When none works
    (offline) raises :class:`DatasetUnavailable` naming the commands that fix it.
    """
    root = Path(root) if root is not None else default_root()
    raw = root / "FashionMNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if all((raw / n).exists() for n in names):
        return root
    if all((DEBIAN_FASHION_MNIST / f"{n}.gz").exists() for n in names):
        raw.mkdir(parents=True, exist_ok=True)
        for n in names:
            with gzip.open(DEBIAN_FASHION_MNIST / f"{n}.gz", "rb") as src, open(raw / n, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return root
    message = (f"Fashion-MNIST is not in {raw} and the Debian package is not installed.\n"
               "Get it with one of:\n"
               "  sudo apt-get install -y dataset-fashion-mnist      (offline-friendly, Debian/Ubuntu)\n"
               "  connect to the internet: it downloads by itself (about 30 MB)\n"
               "or use the embedded fallback dataset 'digits'.")
    if download is False:
        raise DatasetUnavailable(message)
    from torchvision.datasets import FashionMNIST
    try:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    except (RuntimeError, OSError) as exc:   # torchvision: "Error downloading ..." (no network, blocked)
        if download:
            raise
        raise DatasetUnavailable(f"{message}\n(A download was tried and failed: {str(exc).splitlines()[0]})") from exc
    return root


def _fashion_mnist_arrays(root: Path | None, download: bool | None):
    from torchvision.datasets import FashionMNIST
    root = prepare_fashion_mnist(root, download)
    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    return (train.data.unsqueeze(1), train.targets.long(),
            test.data.unsqueeze(1), test.targets.long(), FASHION_MNIST_CLASSES)


def _digits_arrays():
    """scikit-learn's 1,797 8x8 digits, upsampled to 28x28; a seeded 70/30 official split."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) * (255.0 / 16.0)
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(d.target).long()
    g = torch.Generator().manual_seed(12345)  # fixed: the "official" test split never moves
    perm = torch.randperm(len(y), generator=g)
    n_test = int(0.3 * len(y))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test], tuple(str(i) for i in range(10))


def _cifar10_arrays(root: Path | None, download: bool | None):
    from torchvision.datasets import CIFAR10
    root = Path(root) if root is not None else default_root()
    message = (f"CIFAR-10 is not in {root}. It downloads by itself once (about 170 MB) when the machine is "
               "online; or put torchvision's cifar-10-batches-py folder there.")
    try:
        train = CIFAR10(str(root), train=True, download=download is not False)
        test = CIFAR10(str(root), train=False, download=download is not False)
    except (RuntimeError, OSError) as exc:  # not found (download=False) or the download failed (offline)
        if download:
            raise
        raise DatasetUnavailable(f"{message}\n({str(exc).splitlines()[0]})") from exc
    to_t = lambda a: torch.from_numpy(np.asarray(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return (to_t(train.data), torch.tensor(train.targets), to_t(test.data), torch.tensor(test.targets),
            tuple(train.classes))


def _folder_arrays(path: Path):
    """A dataset in ImageFolder layout: ``path/train/<class>/*`` and ``path/test/<class>/*``."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor
    if not (path / "train").is_dir() or not (path / "test").is_dir():
        raise DatasetUnavailable(f"{path} must contain train/<class>/ and test/<class>/ image folders.")
    out = []
    for part in ("train", "test"):
        ds = ImageFolder(str(path / part))  # default loader gives RGB PIL images
        xs = torch.stack([pil_to_tensor(img) for img, _ in ds])
        out += [xs, torch.tensor(ds.targets)]
    return (*out, tuple(ImageFolder(str(path / "train")).classes))


def load_arrays(name: str, root: Path | str | None = None, download: bool | None = None):
    """Raw uint8 arrays ``(x_train, y_train, x_test, y_test, classes)`` of a dataset by name."""
    if name == "fashion_mnist":
        return _fashion_mnist_arrays(root, download)
    if name == "digits":
        return _digits_arrays()
    if name == "cifar10":
        return _cifar10_arrays(root, download)
    if name.startswith("folder:"):
        return _folder_arrays(Path(name.split(":", 1)[1]))
    raise ValueError(f"Unknown dataset {name!r}; choose one of {DATASETS} or 'folder:<path>'.")


def load_splits(name: str = "fashion_mnist", search_size: int = 2048, train_size: int | None = None,
                test_size: int | None = None, seed: int = 0, root: Path | str | None = None,
                download: bool | None = None) -> Splits:
    """Load a dataset as seeded, disjoint train / search / test splits.

    Args:
        name: ``fashion_mnist``, ``digits``, ``cifar10`` or ``folder:<path>``.
        search_size: images drawn from the official *training* split for the ES fitness.
        train_size: cap on the pretraining images (default: all the training images outside
            the first ``max(search_size, min(SEARCH_POOL, n/3))`` of the shuffle, which are reserved).
        test_size: cap on the held-out test images (default: the whole official test split).
        seed: seeds the shuffling that decides which training images become ``search``.
        download: None (default): download a missing dataset when online, else raise a clear
            :class:`DatasetUnavailable`; True: download; False: never download.
    """
    if not isinstance(search_size, int) or search_size < 1:
        raise ValueError(f"search_size must be a positive int, got {search_size!r}")
    x_tr, y_tr, x_te, y_te, classes = load_arrays(name, root, download)
    if search_size >= len(y_tr):
        raise ValueError(f"search_size={search_size} leaves no training images (the split has {len(y_tr)}).")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_tr), generator=g)
    # The first `reserve` shuffled training images never enter pretraining, so every search split of
    # up to SEARCH_POOL images (same seed) is unseen by a pretrained model, whatever its size.
    reserve = max(search_size, min(SEARCH_POOL, len(y_tr) // 3))
    search_idx = perm[:search_size]
    train_idx = perm[reserve:] if train_size is None else perm[reserve:reserve + train_size]
    # Normalisation constants (per channel) come from the training split alone.
    x_train_f = x_tr.float().div(255.0)
    mean = x_train_f.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train_f.std(dim=(0, 2, 3), keepdim=True)
    del x_train_f
    norm = lambda a: (a.float().div(255.0) - mean) / std  # noqa: E731
    test_x, test_y = norm(x_te), y_te
    if test_size is not None:
        test_x, test_y = test_x[:test_size], test_y[:test_size]
    return Splits(name=name,
                  train=Split(norm(x_tr[train_idx]), y_tr[train_idx]),
                  search=Split(norm(x_tr[search_idx]), y_tr[search_idx]),
                  test=Split(test_x, test_y),
                  classes=classes, train_indices=train_idx, search_indices=search_idx)
