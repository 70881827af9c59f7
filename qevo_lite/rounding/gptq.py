"""GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers") on a fixed grid.

For one layer with weight matrix ``W`` (rows = output channels, K columns = inputs per output: the unfolded
``C_in / groups * kh * kw`` of a conv) and inputs ``X`` (K x P, P = images x positions), the output error of
a rounding ``Q`` is ``||(W - Q) X||^2 = sum over rows of (w - q)^T H (w - q)`` with ``H = X X^T``, the
same for every row. GPTQ rounds the columns one at a time and, after each, moves the not-yet-rounded
columns of the row to absorb the error (the optimal update of a quadratic): with ``U`` the upper Cholesky
factor of ``H^-1``, rounding column ``i`` to ``q_i`` adds ``-(w_i - q_i) / U_ii * U_i,j`` to each later
column ``j``. It is greedy (one pass, left to right) and needs no gradients.

Here the grid is the state's: scale and zero point per output channel stay fixed, only the codes change.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.data import Split
from ..core.streaming import first_inputs
from ..evaluators.quadratic import UNFOLDED_PER_CHUNK, unfolded_inputs
from ..quant.grid import QuantState
from ..quant.layout import rows_shape
from .layers import grid_of, layer_by_layer
from .problem import RoundingProblem


def input_hessian(module: nn.Module, inputs) -> torch.Tensor:
    """``H = X X^T / P`` per group, (groups, K, K), in float64: ``X`` the layer's unfolded inputs
    (:func:`~qevo_lite.evaluators.quadratic.unfolded_inputs`: any Linear, Conv or ConvTranspose layer).
    ``inputs``: what enters the layer, one tensor (N, ...) or an iterable of batches of it, summed a chunk of
    images at a time (about 2^24 unfolded numbers, 128 MB) so that memory does not grow with the images."""
    h, positions, shape, chunk = None, 0, rows_shape(module.weight.shape, module), None
    for batch in ([inputs] if isinstance(inputs, torch.Tensor) else inputs):
        if chunk is None:   # images per unfolding: about UNFOLDED_PER_CHUNK unfolded numbers
            chunk = max(1, UNFOLDED_PER_CHUNK // unfolded_inputs(module, batch[:1].double(), shape).numel())
        for i in range(0, len(batch), chunk):
            x = unfolded_inputs(module, batch[i:i + chunk].double(), shape)
            part = x @ x.transpose(1, 2)
            h = part if h is None else h + part
            positions += x.shape[-1]
            del x, part
        del batch            # before the next batch is made: one batch alive, not two
    return h / positions


def gptq_codes(weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
               hessian: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Codes (rows, K) of one group: ``weight``, ``scale``, ``zero_point`` (rows, K); ``hessian`` (K, K).

    ``damp``: share of the mean diagonal added to the diagonal (numerical stability, as in the paper). Runs on
    the Hessian's device (the GPU when the model is there); the codes come back on the weight's."""
    w = weight.double().to(hessian.device).clone()
    h = hessian.clone()
    dead = torch.diagonal(h) == 0           # inputs that are always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diagonal(h).mean() * torch.eye(len(h), dtype=h.dtype, device=h.device)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    s, zp = scale.double().to(h.device), zero_point.double().to(h.device)
    codes = torch.empty_like(w)
    for i in range(w.shape[1]):
        codes[:, i] = torch.clamp(torch.round(w[:, i] / s[:, i] + zp[:, i]), qmin, qmax)
        err = (w[:, i] - s[:, i] * (codes[:, i] - zp[:, i])) / u[i, i]
        w[:, i + 1:] -= err[:, None] * u[i, i + 1:][None, :]
    return codes.to(weight.device)


def gptq(fmodel: nn.Module, state: QuantState, search: Split, samples: int = 256, damp: float = 0.01,
         progress: bool = False) -> QuantState:
    """The state with every layer's codes chosen by GPTQ on ``samples`` search images (layers in graph
    order, inputs from the already-rounded layers before). Linear, Conv and ConvTranspose layers (grouped
    too). ``search``: a Split or a :class:`~qevo_lite.core.streaming.StreamedSplit`; either way each layer's
    Hessian is summed one batch of images at a time. ``progress``: a bar over the layers."""

    def choose(name, module, io, codes):
        lq = state.layers[name]
        h = input_hessian(module, io.inputs())
        g = len(h)
        rows = lq.codes.shape[0]
        scale, zp = grid_of(lq)
        out = []
        for k in range(g):   # a grouped conv's output channels of group k see only that group's inputs
            r = slice(k * rows // g, (k + 1) * rows // g)
            out.append(gptq_codes(lq.weight[r].reshape(rows // g, -1), scale[r].reshape(rows // g, -1),
                                  zp[r].reshape(rows // g, -1), lq.qmin, lq.qmax, h[k], damp))
        return torch.cat(out).reshape(lq.codes.shape)

    return state.with_codes(layer_by_layer(fmodel, state, first_inputs(search, samples), choose, progress=progress))


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ's settings: ``samples`` search images give each layer's input Hessian; ``damp``: the share of the
    Hessian's mean diagonal added to its diagonal."""

    samples: int = 256
    damp: float = 0.01

    @classmethod
    def for_quantize(cls, samples: int, budget: int, adaround_steps: int) -> "GPTQConfig":
        """The config ``qv.quantize``'s size arguments ask for."""
        return cls(samples=samples)

    def describe(self, samples: str) -> str:
        return f"GPTQ ({self.samples:,} search {samples}, damping {self.damp:g})"


def round_gptq(problem: RoundingProblem, config: GPTQConfig):
    """``(state, None)``: GPTQ's codes on the problem's grid (deterministic: the seed is not used)."""
    with torch.no_grad():
        return gptq(problem.fmodel, problem.start_state, problem.search, config.samples, config.damp,
                    problem.progress), None
