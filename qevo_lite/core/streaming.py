"""Search data read batch by batch from a ``DataLoader`` or ``Dataset``, never held whole.

:class:`StreamedSplit` is what ``qv.quantize`` makes of a loader or dataset: one checking pass at the start
(every batch's form, dtype, finiteness and target count, see :mod:`qevo_lite.core.user_data`), then as many
passes as the methods need, each yielding the same images in the same order in batches of :data:`BATCH`
whatever the loader's own batch size (so a loader gives exactly the numbers the same data gives as tensors).

What streams and what does not:

* sums over images stream, so memory is one batch plus each layer's statistics: the scale rule of nearest
  rounding (the loss over the data), GPTQ's input Hessians, the ES's local stage (each layer's quadratic form),
  the report's losses, and the float model's outputs used as targets for inputs alone;
* methods that revisit images hold them: AdaRound and block reconstruction their ``samples`` images' layer inputs
  (as they do for tensors), the ES's global stage every image of the data (it evaluates the whole network on
  them for every candidate), the Fisher weights their ``samples`` images' gradients. :func:`in_memory` reads
  those images once, in order.

Functions here take either form (a :class:`~qevo_lite.core.data.Split` or a :class:`StreamedSplit`), so a
method is written once. Their generators drop every reference to a batch before they read the next one (the
``del`` after each ``yield``), and so must their consumers: otherwise two batches are alive while the next is made.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .data import Split
from .user_data import check_inputs, split_batch

BATCH = 256   # images per batch of every pass (the in-memory paths slice tensors in batches of the same size)


class StreamedSplit:
    """A loader or dataset read again on every pass (see the module docstring).

    Args:
        data: a ``DataLoader`` (in a fixed order: ``shuffle=True`` is refused, because every pass must give the
            same images) or a ``Dataset`` (read 256 items a batch, in order). Each batch is a tensor of inputs
            or an ``(inputs, targets, ...)`` sequence (further entries ignored).
        what: the argument's name in error messages.
        targets_of: for inputs alone, ``inputs batch -> targets batch`` (e.g. the float model's outputs); None
            leaves ``y`` None.
    Attributes: ``labelled`` (the data has its own targets), ``n`` (images, counted by the checking pass).
    """

    def __init__(self, data, what: str = "data", targets_of: Callable | None = None):
        if isinstance(data, DataLoader):
            if isinstance(data.sampler, RandomSampler):
                raise ValueError(f"{what} is a DataLoader with shuffle=True; the methods read it several times and "
                                 "need the same images in the same order each time: pass shuffle=False.")
            self.loader = data
        elif isinstance(data, Dataset):
            self.loader = DataLoader(data, batch_size=BATCH, shuffle=False)
        else:
            raise TypeError(f"{what} must be a torch DataLoader or Dataset, got {type(data).__name__}.")
        self.what, self.targets_of = what, targets_of
        self.n, self.labelled = 0, None
        for x, y in self._raw():             # the checking pass: nothing is kept
            if self.labelled is None:
                self.labelled = y is not None
            elif self.labelled != (y is not None):
                raise ValueError(f"{what}: some batches have targets and some do not; give every batch the same "
                                 "form.")
            check_inputs(x, y, what)
            self.n += len(x)
            del x, y
        if self.n == 0:
            raise ValueError(f"{what} holds no samples: pass a loader or dataset with at least one item.")

    def __len__(self) -> int:
        return self.n

    def _raw(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for batch in self.loader:
            x, y = split_batch(batch, self.what)
            del batch
            yield x, (None if y is None else torch.as_tensor(y))
            del x, y

    def batches(self, n: int | None = None, size: int = BATCH,
                targets: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(inputs, targets)`` of the first ``n`` images (None: all), ``size`` a batch (the last may be
        smaller), CPU tensors; targets are the data's own, or ``targets_of(inputs)`` for inputs alone
        (``targets=False``: not made, the data's own or None)."""
        n = self.n if n is None else min(n, self.n)
        for x, y in recut(_first(self._raw(), n), lambda x, y: size):
            yield x, (self._targets(x, y) if targets else y)
            del x, y

    def _targets(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        return self.targets_of(x) if y is None and self.targets_of is not None else y

    def head(self, n: int | None = None) -> Split:
        """The first ``n`` images (None: all) read into memory as a :class:`~qevo_lite.core.data.Split`."""
        xs, ys = zip(*self.batches(n))
        return Split(torch.cat(xs), None if ys[0] is None else torch.cat(ys))


def _first(pairs, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The ``(inputs, targets or None)`` pairs of the first ``n`` images (the last pair cut short)."""
    seen = 0
    for x, y in pairs:
        if seen >= n:
            return
        keep = min(len(x), n - seen)
        seen += keep
        yield x[:keep], (None if y is None else y[:keep])
        del x, y


def recut(pairs, size_of: Callable) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(inputs, targets or None)`` pairs re-cut, in order, into pieces of ``size_of(first inputs, first
    targets)`` images (the last may be smaller): the pieces are the same whatever the sizes of the pairs. A piece
    within one pair is a view of it; a piece across pairs is joined from a copy of the first pair's rest, so no
    earlier pair stays alive while the next is read."""
    xs, ys, have, size = [], [], 0, None
    for x, y in pairs:
        size = size or size_of(x, y)
        start = 0
        if have:                                   # complete the piece begun by the earlier pairs
            start = min(size - have, len(x))
            xs.append(x[:start])
            ys.append(None if y is None else y[:start])
            have += start
            if have == size:
                yield _joined(xs, ys)
                xs, ys, have = [], [], 0
        while len(x) - start >= size:
            yield x[start:start + size], (None if y is None else y[start:start + size])
            start += size
        if start < len(x):                         # the rest begins the next piece (copied: x is dropped)
            xs.append(x[start:].clone())
            ys.append(None if y is None else y[start:].clone())
            have += len(x) - start
        del x, y
    if have:
        yield _joined(xs, ys)


def _joined(xs: list, ys: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The buffered pieces as one ``(inputs, targets or None)``."""
    x = torch.cat(xs) if len(xs) > 1 else xs[0]
    return x, (None if ys[0] is None else (torch.cat(ys) if len(ys) > 1 else ys[0]))


def in_memory(search, n: int | None = None) -> Split:
    """The first ``n`` images (None: all) of a Split (a view) or a :class:`StreamedSplit` (read once)."""
    if isinstance(search, StreamedSplit):
        return search.head(n)
    return search if n is None else search.subset(n)


def first_inputs(search, n: int | None = None):
    """What the layer-wise methods read their ``n`` images from: a Split's inputs ``x[:n]`` (a tensor), or a
    :class:`StreamedSplit` limited to ``n`` images; either goes to :func:`input_batches`."""
    if isinstance(search, StreamedSplit):
        return _Limited(search, n)
    return search.x if n is None else search.x[:n]


class _Limited:
    """A StreamedSplit's first ``n`` images (for :func:`input_batches`)."""

    def __init__(self, split: StreamedSplit, n: int | None):
        self.split, self.n = split, n

    def __len__(self) -> int:
        return len(self.split) if self.n is None else min(self.n, len(self.split))


def input_batches(x, size: int = BATCH) -> Iterator[torch.Tensor]:
    """Batches of inputs of ``size`` images: slices of a tensor, or a streamed split's batches
    (:func:`first_inputs`)."""
    if isinstance(x, _Limited):
        for bx, _ in x.split.batches(x.n, size, targets=False):
            del _
            yield bx
            del bx
    else:
        for i in range(0, len(x), size):
            yield x[i:i + size]


def split_batches(split, size: int = BATCH, against: str = "labels") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, targets)`` batches of a Split or a :class:`StreamedSplit`; ``against="inputs"`` gives the inputs
    as targets (a reconstruction loss, :class:`~qevo_lite.evaluators.base.Loss`)."""
    if isinstance(split, StreamedSplit):
        pairs = split.batches(size=size)
    else:
        pairs = ((split.x[i:i + size], split.y[i:i + size]) for i in range(0, len(split.x), size))
    for x, y in pairs:
        yield x, (x if against == "inputs" else y)
        del x, y
