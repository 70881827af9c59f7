"""AdaRound (Nagel et al., 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization") on a
fixed grid.

Each weight is rounded down or up: ``code = floor(w / s + z) + h``, ``h`` in {0, 1}. AdaRound relaxes ``h``
to the rectified sigmoid ``h(v) = clamp(sigmoid(v) (zeta - gamma) + gamma, 0, 1)`` (zeta = 1.1,
gamma = -0.1) of a free variable ``v`` per weight, and minimises, layer by layer, the output error against
the FP32 layer plus a regulariser that pushes every ``h`` to 0 or 1:

    mean over images and positions of ||f(x; W_soft) - y||^2 (summed over output channels)
    + lambda * sum over weights of (1 - |2 h(v) - 1|^beta),

with ``beta`` decaying linearly from 20 to 2 after a warm-up (the first 20% of the steps) without the
regulariser. At the end ``h`` is rounded
to 0 or 1. ``X``: the layer's inputs in the model whose earlier layers are already rounded; ``Y``: the FP32
layer's outputs. Works for any module whose forward uses ``weight`` (and ``bias``), through
``torch.func.functional_call``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..core.data import Split
from ..core.streaming import first_inputs
from ..quant.grid import QuantState
from ..quant.layout import from_rows
from .layers import grid_of, layer_by_layer
from .problem import RoundingProblem

ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(v)`` in [0, 1]; exactly 0 or 1 outside a band around 0."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rounding_regulariser(h: torch.Tensor, beta: float) -> torch.Tensor:
    """AdaRound's regulariser ``sum(1 - |2 h - 1|^beta)`` over relaxed roundings ``h`` in [0, 1] (a scalar):
    0 when every ``h`` is 0 or 1, largest at 0.5; flat for a large ``beta``, pushing to 0 or 1 as it falls."""
    return (1 - (2 * h - 1).abs().pow(beta)).sum()


class RelaxedCodes:
    """AdaRound's relaxed codes of one weight (rows layout: dim 0 = output channel): ``base = floor(w / s + z)``
    and a free variable ``v`` per weight, started where ``h(v)`` equals the weight's distance above ``base`` (so
    the soft weight starts at the float weight). ``scale`` and ``zero_point`` are broadcast to the weight's shape.
    AdaRound optimises one layer's ``v`` (:func:`adaround_layer`); block reconstruction those of a block's layers."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int):
        w = weight.detach().float()
        self.scale, self.zero_point, self.qmin, self.qmax = scale, zero_point, qmin, qmax
        self.base = torch.floor(w / scale + zero_point)
        rest = (w / scale + zero_point - self.base).clamp(1e-4, 1 - 1e-4)
        self.v = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)   # h(v) = rest at the start

    def soft_weight(self, module: nn.Module) -> torch.Tensor:
        """The weight decoded from the relaxed codes, laid out like ``module.weight`` (differentiable in ``v``)."""
        codes = torch.clamp(self.base + rectified_sigmoid(self.v), self.qmin, self.qmax)
        return from_rows(self.scale * (codes - self.zero_point), module)

    def regulariser(self, beta: float) -> torch.Tensor:
        """:func:`rounding_regulariser` of this weight's relaxed roundings."""
        return rounding_regulariser(rectified_sigmoid(self.v), beta)

    def hard_codes(self) -> torch.Tensor:
        """The codes with every relaxed rounding decided (``h >= 0.5`` rounds up), float, rows layout."""
        with torch.no_grad():
            return torch.clamp(self.base + (rectified_sigmoid(self.v) >= 0.5).float(), self.qmin, self.qmax)


def annealed_beta(step: int, steps: int, warmup: float, beta: tuple) -> float | None:
    """The regulariser's ``beta`` at ``step`` of ``steps``: None during the warm-up (the first ``warmup`` share of
    the steps, no regulariser), then falling linearly from ``beta[0]`` to ``beta[1]``."""
    start = int(warmup * steps)
    if step < start:
        return None
    return beta[0] + (beta[1] - beta[0]) * (step - start) / max(1, steps - start)


def adaround_layer(module: nn.Module, weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                   qmin: int, qmax: int, inputs: torch.Tensor, targets: torch.Tensor, steps: int = 1000,
                   batch_size: int = 64, lam: float = 0.01, beta: tuple = (20.0, 2.0), warmup: float = 0.2,
                   lr: float = 1e-3, generator: torch.Generator | None = None,
                   reduction: str = "sum_channels") -> torch.Tensor:
    """AdaRound codes of one layer (shaped like ``weight``, rows layout: dim 0 = output channel). ``scale`` and ``zero_point`` are broadcast to
    the weight's shape; ``inputs`` (N, ...) and ``targets`` (N, ...) the layer's captured inputs and FP32
    outputs; each step uses ``batch_size`` of them drawn with ``generator``. ``lr``: Adam's learning rate;
    ``reduction``: the output error summed over output channels and averaged over images and positions
    (``"sum_channels"``, as written above) or averaged over all (``"mean"``: the same error divided by the channel
    count, which weighs the regulariser ``lam`` more)."""
    if reduction not in ("sum_channels", "mean"):
        raise ValueError(f"reduction must be 'sum_channels' or 'mean', got {reduction!r}.")
    dev = inputs.device         # fit where the layer's inputs are (the GPU when the model is there)
    relaxed = RelaxedCodes(weight.to(dev), scale.to(dev), zero_point.to(dev), qmin, qmax)
    opt = torch.optim.Adam([relaxed.v], lr=lr)
    bias = module.bias.detach() if getattr(module, "bias", None) is not None else None
    g = generator or torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=g)
        params = {"weight": relaxed.soft_weight(module)} | ({"bias": bias} if bias is not None else {})
        out = functional_call(module, params, (inputs[idx],))
        err = (out - targets[idx]).pow(2)
        loss = err.sum(1).mean() if reduction == "sum_channels" else err.mean()
        b = annealed_beta(step, steps, warmup, beta)
        if b is not None:
            loss = loss + lam * relaxed.regulariser(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return relaxed.hard_codes().to(weight.device)


def adaround(fmodel: nn.Module, state: QuantState, search: Split, samples: int = 1024, steps: int = 1000,
             batch_size: int = 64, lam: float = 0.01, beta: tuple = (20.0, 2.0), seed: int = 0, lr: float = 1e-3,
             reduction: str = "sum_channels", progress: bool = False) -> QuantState:
    """The state with every layer's codes chosen by AdaRound (graph order; ``samples`` search images give
    the layers' inputs and FP32 targets, held in memory for one layer at a time, since every step draws a batch
    of them; ``seed`` draws the batches; ``lr`` and ``reduction`` as for :func:`adaround_layer`; ``progress``: a
    bar over the layers)."""
    g = torch.Generator().manual_seed(seed)

    def choose(name, module, io, codes):
        lq = state.layers[name]
        scale, zp = grid_of(lq)
        inputs, targets = io.whole()
        with torch.enable_grad():
            return adaround_layer(module, lq.weight, scale, zp, lq.qmin, lq.qmax, inputs, targets, steps,
                                  batch_size, lam, beta, lr=lr, generator=g, reduction=reduction)

    return state.with_codes(layer_by_layer(fmodel, state, first_inputs(search, samples), choose, progress=progress))


@dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound's settings (see :func:`adaround`): ``samples`` search images give the layers' inputs and
    targets, ``steps`` Adam steps per layer on batches of ``batch_size`` with learning rate ``lr``, regulariser
    weight ``lam`` with ``beta`` annealed from ``beta[0]`` to ``beta[1]``, the output error reduced as
    ``reduction`` says (:func:`adaround_layer`)."""

    samples: int = 1024
    steps: int = 1000
    batch_size: int = 64
    lam: float = 0.01
    beta: tuple = (20.0, 2.0)
    lr: float = 1e-3
    reduction: str = "sum_channels"

    @classmethod
    def for_quantize(cls, samples: int, budget: int, adaround_steps: int) -> "AdaRoundConfig":
        """The config ``qv.quantize``'s size arguments ask for (4x the layer-wise methods' images)."""
        return cls(samples=4 * samples, steps=adaround_steps)

    def describe(self, samples: str) -> str:
        reduced = "" if self.reduction == "sum_channels" else ", output error averaged over channels"
        return (f"AdaRound ({self.steps:,} Adam steps per layer at learning rate {self.lr:g}, batch {self.batch_size} of "
                f"{self.samples:,} search {samples}, beta {self.beta[0]:g} -> {self.beta[1]:g}, lambda {self.lam:g}"
                f"{reduced}; its seed draws the batches)")


def round_adaround(problem: RoundingProblem, config: AdaRoundConfig):
    """``(state, None)``: AdaRound's codes on the problem's grid (the seed draws its batches)."""
    with torch.no_grad():
        state = adaround(problem.fmodel, problem.start_state, problem.search, samples=config.samples,
                         steps=config.steps, batch_size=config.batch_size, lam=config.lam, beta=tuple(config.beta),
                         seed=problem.seed, lr=config.lr, reduction=config.reduction, progress=problem.progress)
    return state, None
