"""Data as users have it, checked before any method runs: a :class:`~qevo_lite.core.data.Split`, an
``(inputs, targets)`` pair, a tensor of inputs, a ``torch.utils.data.Dataset`` or a ``DataLoader``.

A dataset or loader is read once, in order, into one in-memory split (every method here fits the whole
search split; bounding memory by one batch is issue 21's streaming step, not done yet). Each item or batch is
either a tensor of inputs or a sequence whose first two entries are ``(inputs, targets)``; further entries
(sample weights, file names) are ignored.

Every check raises ``ValueError`` or ``TypeError`` saying what is wrong and what to pass instead, so that a
user never meets torch's errors from deep inside a method.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .data import Split

ACCEPTED = ("a qv.Split, an (inputs, targets) pair of tensors, a tensor of inputs, a torch Dataset or a "
            "DataLoader")


def _batches(data) -> DataLoader:
    """A loader over ``data`` (a Dataset gets one in order, 256 items a batch)."""
    return data if isinstance(data, DataLoader) else DataLoader(data, batch_size=256, shuffle=False)


def _collect(data, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets or None)`` of every batch of a Dataset or DataLoader, concatenated."""
    xs, ys = [], []
    for batch in _batches(data):
        if isinstance(batch, torch.Tensor):
            xs.append(batch)
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor):
            xs.append(batch[0])
            ys.append(torch.as_tensor(batch[1]))
        else:
            raise TypeError(f"{what}: each batch of the loader must be a tensor of inputs or an (inputs, targets, "
                            f"...) sequence, got {type(batch).__name__}.")
    if not xs:
        raise ValueError(f"{what} holds no samples: pass a loader or dataset with at least one item.")
    if ys and len(ys) != len(xs):
        raise ValueError(f"{what}: some batches have targets and some do not; give every batch the same form.")
    return torch.cat(xs), (torch.cat(ys) if ys else None)


def as_inputs_and_targets(data, what: str = "data") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets or None)`` of any accepted form, checked: at least one sample, floating-point inputs
    with no NaN or inf, as many targets as inputs. ``what`` names the argument in the messages."""
    if isinstance(data, Split):
        x, y = data.x, data.y
    elif isinstance(data, (DataLoader, Dataset)):
        x, y = _collect(data, what)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(v) for v in data)
    elif isinstance(data, torch.Tensor):
        x, y = data, None
    else:
        raise TypeError(f"{what} must be {ACCEPTED}; got {type(data).__name__}.")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{what} holds no samples: pass at least one input (shape (N, ...) with N >= 1).")
    if not torch.is_floating_point(x):
        raise TypeError(f"{what}'s inputs are {x.dtype}; pass floating-point inputs (e.g. x.float() / 255, "
                        "normalised as the model was trained).")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{what}'s inputs hold {bad} NaN or inf values; drop or repair those samples first.")
    if y is not None and len(y) != len(x):
        raise ValueError(f"{what} has {len(x)} inputs but {len(y)} targets; pass one target per input.")
    return x, y


def check_class_labels(y: torch.Tensor, num_classes: int, what: str = "data") -> None:
    """Refuse labels a cross-entropy over ``num_classes`` outputs cannot score: not integers, not one per
    sample, or outside ``[0, num_classes)``."""
    if torch.is_floating_point(y) or y.dtype == torch.bool or y.ndim != 1:
        raise ValueError(f"{what}'s targets are {y.dtype} of shape {tuple(y.shape)}, but the cross-entropy needs "
                         f"one integer class index per sample (shape (N,)); pass y.long(), or loss='output_mse' "
                         "or a callable loss for other targets.")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"{what}'s labels run from {lo} to {hi}, but the model has {num_classes} outputs: labels "
                         f"must lie in [0, {num_classes - 1}].")
