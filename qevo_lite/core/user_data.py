"""Data as users have it, checked before any method runs: a :class:`~qevo_lite.core.data.Split`, an
``(inputs, targets)`` pair, a tensor of inputs, a ``torch.utils.data.Dataset`` or a ``DataLoader``.

Tensors and pairs are checked here whole (:func:`as_inputs_and_targets`); a dataset or loader is streamed
(:class:`~qevo_lite.core.streaming.StreamedSplit`), each batch checked by the same :func:`check_inputs` in one
pass before any method runs. Each item or batch is either a tensor of inputs or a sequence whose first two
entries are ``(inputs, targets)`` (or ``(inputs,)`` alone, as ``TensorDataset(x)`` gives); further entries
(sample weights, file names) are ignored.

Every check raises ``ValueError`` or ``TypeError`` saying what is wrong and what to pass instead, so that a
user never meets torch's errors from deep inside a method.
"""
from __future__ import annotations

import torch

from .data import Split

ACCEPTED = ("a qv.Split, an (inputs, targets) pair of tensors, a tensor of inputs, a torch Dataset or a "
            "DataLoader")


def split_batch(batch, what: str) -> tuple[torch.Tensor, object]:
    """``(inputs, targets or None)`` of one item or batch of a dataset or loader."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1 and isinstance(batch[0], torch.Tensor):
        return batch[0], (batch[1] if len(batch) >= 2 else None)    # (inputs,) as TensorDataset(x) gives
    raise TypeError(f"{what}: each batch of the loader must be a tensor of inputs or an (inputs, targets, ...) "
                    f"sequence, got {type(batch).__name__}.")


def check_inputs(x: torch.Tensor, y: torch.Tensor | None, what: str = "data") -> None:
    """Refuse inputs (N, ...) the methods cannot use: no samples, not floating-point, NaN or inf, or a count of
    targets ``y`` other than N. ``what`` names the argument in the messages."""
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


def as_inputs_and_targets(data, what: str = "data") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(inputs, targets or None)`` of a Split, a pair or a tensor, checked (:func:`check_inputs`)."""
    if isinstance(data, Split):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(v) for v in data)
    elif isinstance(data, torch.Tensor):
        x, y = data, None
    else:
        raise TypeError(f"{what} must be {ACCEPTED}; got {type(data).__name__}.")
    check_inputs(x, y, what)
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
