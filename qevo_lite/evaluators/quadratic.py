"""The local fitness of one layer as an exact quadratic form in its code changes.

A Conv/ConvTranspose/Linear layer is linear in its weight. Write its weight in rows layout
(:mod:`qevo_lite.quant.layout`: one row ``w_c`` of ``K`` weights per output channel ``c``; a grouped
layer's rows of group ``k`` see only that group's inputs) and its inputs unfolded as ``X_k`` (K x P, P =
images x output positions). Channel ``c``'s output is ``w_c X_k + b_c``; with targets ``Y`` (the FP32
layer's outputs) and the residual ``r_c = w_c X_k + b_c - y_c`` (P,), the squared error is
``E = sum_c ||r_c||^2``. Moving channel ``c``'s weights by a sparse ``d`` changes it by exactly

    dE = 2 d . g_c + d^T H_k d,      H_k = X_k X_k^T (K x K, shared by the group),  g_c = X_k r_c (K,).

With a weight ``b_p >= 0`` per output position (:mod:`.output_weights`: how much the task loss cares about it) the
weighted error ``E = sum_c sum_p b_p r_cp^2`` has the same form with ``H_k = X_k diag(b) X_k^T`` and
``g_c = X_k diag(b) r_c``. With a weight ``f_cp`` per output *element*, each channel gets its own
``H_c = X_k diag(f_c) X_k^T`` (C_out K x K matrices instead of one per group; ``g_c = X_k diag(f_c) r_c``).

So with ``H`` and ``G`` (one ``g_c`` per channel) kept, a candidate that moves ``m`` codes costs O(m^2),
whatever the number of images, and an accepted move updates ``g_c += H_k d``. Each output channel is an
independent sub-problem.

The unfolded inputs ``X`` come from the layer itself: calling it on the inputs with a one-hot *basis*
weight (one output per weight position of a row) gives exactly the products that multiply each weight,
for any stride, padding (any padding mode), dilation, groups or transposition. The first chunk of images
is checked against the layer's real output; a layer that is not linear in its weight this way raises
:class:`NotQuadratic`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..core.streaming import recut
from ..quant.grid import LayerQuant
from ..quant.layout import from_rows

UNFOLDED_PER_CHUNK = 2 ** 24   # unfolded input numbers per chunk of images (128 MB in float64): bounds memory


class NotQuadratic(ValueError):
    """The layer's output is not ``rows @ unfolded inputs + bias`` (the fast local fitness cannot apply)."""


def _channels_first(t: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(channels, P): a Linear's channels are its last dimension, a conv's its second."""
    if isinstance(module, nn.Linear):
        return t.reshape(-1, t.shape[-1]).T
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def unfolded_inputs(module: nn.Module, x: torch.Tensor, rows_shape: torch.Size) -> torch.Tensor:
    """``X`` (groups, K, P) of layer ``module`` on inputs ``x`` (a batch of what enters the layer).

    ``rows_shape``: the weight's rows-layout shape (C_out, C_in/groups, *kernel); K = its size per row."""
    groups = getattr(module, "groups", 1)
    k = int(torch.tensor(rows_shape[1:]).prod()) if len(rows_shape) > 1 else 1
    eye = torch.eye(k, dtype=x.dtype, device=x.device).reshape(k, *rows_shape[1:])
    basis = from_rows(eye.repeat(groups, *([1] * (eye.dim() - 1))), module)
    params = {"weight": basis}
    if getattr(module, "bias", None) is not None:
        params["bias"] = torch.zeros(groups * k, dtype=x.dtype, device=x.device)
    out = functional_call(module, params, (x,))
    return _channels_first(out, module).reshape(groups, k, -1)


class LayerQuadratic:
    """``H``, ``G`` and the error of one layer, for exact, image-free evaluation of code moves.

    Args:
        module: the layer (its bias is used; its weight is not: ``codes`` decode the weight).
        lq: the layer's :class:`~qevo_lite.quant.grid.LayerQuant` (grid and scales; rows layout).
        inputs: what enters the layer, (N, ...); targets: the FP32 layer's outputs, (N, ...).
        codes: the current codes (rows layout); default ``lq.codes``.
        chunk: images per unfolding (bounds memory: about chunk x K x positions floats).
        weights: optional weights of the squared output errors (:mod:`~qevo_lite.evaluators.output_weights`):
            one per output position, shaped like ``targets`` without the channel dimension (one ``H`` per group),
            or one per output element, shaped like ``targets`` (one ``H`` per output channel); None: all 1.
    Attributes: ``h`` (groups or C_out, K, K; ``h_of`` (C_out,) says which belongs to each row), ``g`` (C_out, K)
    and ``error`` (sum of (weighted) squared output errors), all float64; ``codes`` (C_out, K) int64 (a copy);
    ``step`` (C_out,) the scale of each row.
    """

    @torch.no_grad()
    def __init__(self, module: nn.Module, lq: LayerQuant, inputs: torch.Tensor, targets: torch.Tensor,
                 codes: torch.Tensor | None = None, chunk: int | None = None, weights: torch.Tensor | None = None):
        self._setup(module, lq, codes)
        self._accumulate(module, [(inputs, targets)], chunk, weights)

    @classmethod
    def streamed(cls, module: nn.Module, lq: LayerQuant, batches, codes: torch.Tensor | None = None,
                 chunk: int | None = None, weights: torch.Tensor | None = None) -> "LayerQuadratic":
        """The same sums over images given as an iterable of ``(inputs, targets)`` batches (e.g.
        :meth:`~qevo_lite.rounding.layers.LayerIO.batches`): at most one batch plus one chunk in memory, and the
        same chunks (so the same numbers) as one call with all images."""
        self = cls.__new__(cls)
        with torch.no_grad():
            self._setup(module, lq, codes)
            self._accumulate(module, batches, chunk, weights)
        return self

    def _setup(self, module: nn.Module, lq: LayerQuant, codes: torch.Tensor | None) -> None:
        codes = lq.codes if codes is None else codes
        self.shape, self.device = codes.shape, codes.device     # the search runs on the CPU, in float64
        rows = codes.shape[0]
        self.groups = getattr(module, "groups", 1)
        self.k = codes[0].numel()
        self.codes = codes.reshape(rows, -1).long().cpu().clone()
        self.qmin, self.qmax = lq.qmin, lq.qmax
        scale = lq.scale.double().cpu().reshape(-1)
        self.step = (scale if scale.numel() == rows else scale.expand(rows)).clone()
        zp = lq.zero_point.double().cpu().reshape(-1)
        self.zero_point = zp if zp.numel() == rows else zp.expand(rows)
        self.group_of = torch.arange(rows) // (rows // self.groups)

    def _accumulate(self, module: nn.Module, batches, chunk: int | None, weights: torch.Tensor | None) -> None:
        """``H``, ``G`` and the error summed over the images of ``batches``, ``chunk`` images at a time (default:
        about :data:`UNFOLDED_PER_CHUNK` unfolded numbers a chunk); ``weights`` (N, ...) for all images, consumed
        in order."""
        rows = self.codes.shape[0]
        bias = module.bias.detach().double().cpu() if getattr(module, "bias", None) is not None else None
        weight = self.weight()                                    # (C_out, K) decoded, float64
        self.error, self.positions, offset = 0.0, 0, 0
        for x, targets in recut(batches, lambda x, t: chunk or max(1, int(
                UNFOLDED_PER_CHUNK // max(1, self.groups * self.k * max(1, t[0].numel() // rows))))):
            if offset == 0:
                self._begin(targets, weights)
            w = None if weights is None else weights[offset:offset + len(x)]
            if w is not None and len(w) != len(x):
                raise ValueError(f"weights cover {len(weights)} images, fewer than the layer's inputs: pass one "
                                 "weight per image and output position (or per output element).")
            self._add_chunk(module, x.float(), targets, weight, bias, w, check=offset == 0)
            offset += len(x)
            del x, targets, w    # before the next chunk is made: one batch of layer inputs alive, not two
        if offset == 0:
            raise ValueError("The layer saw no images: pass at least one batch of inputs.")
        if weights is not None and len(weights) != offset:
            raise ValueError(f"weights cover {len(weights)} images but the layer's inputs {offset}: pass one weight "
                             "per image and output position (or per output element).")

    def _begin(self, targets: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Zero ``H``, ``G`` for the first chunk's output shape ``targets`` (n, ...) and the ``weights``' form."""
        rows = self.codes.shape[0]
        if weights is not None and weights[0].numel() not in (targets[0].numel(), targets[0].numel() // rows):
            raise ValueError(f"weights {tuple(weights.shape)} do not fit outputs {tuple(targets.shape[1:])} "
                             "per image: pass one weight per image and output position (or per output "
                             "element).")
        self.per_channel = weights is not None and weights[0].numel() == targets[0].numel()
        self.h_of = torch.arange(rows) if self.per_channel else self.group_of
        self.h = torch.zeros(rows if self.per_channel else self.groups, self.k, self.k, dtype=torch.float64)
        self.g = torch.zeros(rows, self.k, dtype=torch.float64)

    def _add_chunk(self, module: nn.Module, x: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None, w: torch.Tensor | None, check: bool) -> None:
        """Add one chunk of images to ``H``, ``G`` and the error: inputs ``x`` (n, ...) float32, ``targets``
        (n, ...), decoded ``weight`` (C_out, K) and ``bias`` float64, the chunk's weights ``w`` or None."""
        rows, per = self.codes.shape[0], self.codes.shape[0] // self.groups
        xu = unfolded_inputs(module, x, self.shape).double().cpu()          # (groups, K, P)
        y = _channels_first(targets, module).double().cpu()   # (C_out, P)
        out = torch.cat([weight[k * per:(k + 1) * per] @ xu[k] for k in range(self.groups)])
        if bias is not None:
            out += bias[:, None]
        if check:
            self._check(module, x, self.shape, out)
        r = out - y
        if w is None:
            rw = r
            self.h += xu @ xu.transpose(1, 2)
        elif self.per_channel:   # one output channel: per-position weights (N, *positions) have this size too
            f = _channels_first(w.reshape(targets.shape), module).double().cpu()   # (C_out, P)
            rw = r * f
            for c in range(rows):
                xk = xu[self.group_of[c]]
                self.h[c] += (xk * f[c]) @ xk.T
        else:
            b = w.reshape(-1).double().cpu()            # (P,)
            rw = r * b
            self.h += (xu * b) @ xu.transpose(1, 2)
        self.g += torch.cat([rw[k * per:(k + 1) * per] @ xu[k].T for k in range(self.groups)])
        self.error += float((rw * r).sum())
        self.positions += r.numel()

    def weight(self) -> torch.Tensor:
        """The decoded weight rows (C_out, K), float64."""
        return self.step[:, None] * (self.codes.double() - self.zero_point[:, None])

    def _check(self, module, x, shape, out):
        """Raise :class:`NotQuadratic` unless the layer's own forward gives ``out`` (C_out, P); ``shape``: the
        weight's rows-layout shape."""
        params = {"weight": from_rows(self.weight().reshape(shape).to(device=x.device, dtype=x.dtype), module)}
        real = _channels_first(functional_call(module, params, (x,)), module).double().cpu()
        tol = 1e-4 * (1.0 + float(real.abs().max()))
        if real.shape != out.shape or float((real - out).abs().max()) > tol:
            raise NotQuadratic(f"{type(module).__name__}'s output is not linear in its weight rows as expected.")

    def delta(self, rows: torch.Tensor, cols: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        """Exact change of the squared error of candidates, each moving ``m`` codes of one row.

        ``rows`` (n,), ``cols`` (n, m) and ``moves`` (n, m, in code steps; 0 = no move) -> (n,) float64.
        Two moves of one candidate must be in different columns."""
        d = moves.double() * self.step[rows, None]                                  # (n, m) weight change
        lin = 2 * (d * self.g[rows[:, None], cols]).sum(1)
        grp = self.h_of[rows][:, None, None]
        hsub = self.h[grp, cols[:, :, None], cols[:, None, :]]                     # (n, m, m)
        return lin + torch.einsum("ni,nij,nj->n", d, hsub, d)

    def apply(self, rows: torch.Tensor, cols: torch.Tensor, moves: torch.Tensor, delta: torch.Tensor) -> None:
        """Accept moves (one candidate per row in ``rows``, no row twice) whose error change is ``delta``."""
        d = moves.double() * self.step[rows, None]
        self.codes[rows[:, None], cols] += moves.long()
        self.g[rows] += torch.einsum("nm,nmk->nk", d, self.h[self.h_of[rows][:, None], cols])
        self.error += float(delta.sum())

    def codes_like_layer(self) -> torch.Tensor:
        """The current codes, int16, in the layer's rows-layout shape, on the device the codes came from."""
        return self.codes.to(torch.int16).reshape(self.shape).to(self.device)
