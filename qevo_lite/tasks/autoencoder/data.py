"""The autoencoder's splits: normal-class training images, a normal-class search split held back from
pretraining, and the official test split (every class, for the AUROC) with its normal-class part."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.data import SEARCH_POOL, Split, load_arrays, load_splits

DEFAULT_NORMAL_CLASSES = (0, 1, 2, 3, 4)


@dataclass
class AESplits:
    """The autoencoder's splits (see the module docstring); images normalised as by ``load_splits``.

    ``pixel_std``/``pixel_mean``: per-channel normalisation constants (C,), so that
    ``pixel = x * std + mean`` is on the [0, 1] scale. ``test_is_anomaly``: bool (N_test,).
    """

    dataset: str
    train: Split
    search: Split
    test: Split
    test_normal: Split
    normal_classes: tuple
    classes: tuple
    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor
    train_indices: torch.Tensor   # indices into the official training split
    search_indices: torch.Tensor  # indices into the official training split

    @property
    def test_is_anomaly(self) -> torch.Tensor:
        return ~is_normal(self.test.y, self.normal_classes)

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]


def is_normal(y: torch.Tensor, normal_classes) -> torch.Tensor:
    """Bool mask (N,): whether each label is one of ``normal_classes``."""
    return torch.isin(y, torch.tensor(list(normal_classes), dtype=y.dtype))


def _select(split: Split, mask: torch.Tensor) -> Split:
    return Split(split.x[mask], split.y[mask])


def ae_splits(dataset: str = "fashion_mnist", seed: int = 0, normal_classes=DEFAULT_NORMAL_CLASSES,
              search_size: int | None = None, test_size: int | None = None, download: bool | None = None) -> AESplits:
    """Load ``dataset`` as the autoencoder's splits (seeded by ``seed``, the checkpoint's split seed).

    ``search_size``: normal-class images of the search split (None: all in the reserved pool);
    ``test_size``: first images of the official test split (None: all). The reserved pool is
    ``min(SEARCH_POOL, n_train // 3)`` training images, the same whatever ``search_size`` is, so the
    pretraining images never depend on it.
    """
    normal_classes = tuple(int(c) for c in normal_classes)
    x_tr, y_tr, _, _, classes = load_arrays(dataset, download=download)
    bad = [c for c in normal_classes if not 0 <= c < len(classes)]
    if bad or not normal_classes or len(set(normal_classes)) == len(classes):
        raise ValueError(f"normal_classes must be a non-empty proper subset of 0..{len(classes) - 1}, "
                         f"got {normal_classes}.")
    pixels = x_tr.float().div(255.0)  # the normalisation constants of load_splits
    mean, std = pixels.mean(dim=(0, 2, 3)), pixels.std(dim=(0, 2, 3))
    pool = min(SEARCH_POOL, len(y_tr) // 3)
    del pixels, x_tr
    s = load_splits(dataset, search_size=pool, seed=seed, download=download)
    search = _select(s.search, is_normal(s.search.y, normal_classes))
    search_idx = s.search_indices[is_normal(s.search.y, normal_classes)]
    if search_size is not None:
        if search_size > len(search):
            raise ValueError(f"search_size={search_size} exceeds the {len(search)} normal-class images held back "
                             f"from pretraining.")
        search, search_idx = search.subset(search_size), search_idx[:search_size]
    train_mask = is_normal(s.train.y, normal_classes)
    test = s.test if test_size is None else s.test.subset(test_size)
    return AESplits(dataset, _select(s.train, train_mask), search, test,
                    _select(test, is_normal(test.y, normal_classes)), normal_classes, s.classes, mean, std,
                    s.train_indices[train_mask], search_idx)
