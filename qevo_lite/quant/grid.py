"""Uniform (linear) quantization of linear, conv and transposed-conv weights with nearest-neighbour rounding.

A weight ``w`` of a layer is stored as an integer *code* ``q`` on a grid
``qmin..qmax`` and decoded as ``w_hat = scale * (q - zero_point)``. Nearest rounding
(RTN) picks ``q = clamp(round(w / scale) + zero_point, qmin, qmax)``. The
evolution strategy later moves codes to a neighbouring state (``q +/- 1``).

Scale rules (``QuantConfig.scale_rule``):

* ``maxabs_full``   symmetric grid ``-2^(b-1) .. 2^(b-1)-1``, ``scale = max|w| / 2^(b-1)``
  (the convention of common PTQ libraries; the largest positive weight is clipped
  by one step);
* ``maxabs_narrow`` symmetric grid ``-(2^(b-1)-1) .. 2^(b-1)-1``, ``scale = max|w| / (2^(b-1)-1)``
  (no clipping, one fewer level);
* ``mse``           full grid, scale chosen among ``alpha * max|w| / (2^(b-1)-1)``,
  ``alpha`` in (0, 1], to minimise the squared weight error (clipping traded for resolution).

Asymmetric schemes use ``0 .. 2^b-1`` (narrow: ``0 .. 2^b-2``) over ``[min(w,0), max(w,0)]``
(``mse`` shrinks that range by ``alpha``). Granularity is per tensor or per output
channel: dimension 0 of the weight in the rows layout of :mod:`qevo_lite.quant.layout` (the weight
itself for linear and conv layers; dimension 1, per group, of a transposed conv's weight). Codes and
float weights are kept in that layout; :meth:`QuantState.apply` converts back to each module's own.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, asdict

import torch
from torch import nn

from .fold import quantizable_layers
from .layout import from_rows, to_rows

SCALE_RULES = ("maxabs_full", "maxabs_narrow", "mse")
SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("per_channel", "per_tensor")
MSE_ALPHAS = torch.linspace(0.05, 1.0, 96)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize: ``bits`` in 2..8, ``scheme``, ``granularity``, ``scale_rule`` (see module doc)."""

    bits: int = 4
    scheme: str = "symmetric"
    granularity: str = "per_channel"
    scale_rule: str = "maxabs_full"

    def __post_init__(self):
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise ValueError(f"bits must be an int in 2..8, got {self.bits!r} ({type(self.bits).__name__}).")
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be in 2..8, got {self.bits}.")
        if self.scheme not in SCHEMES:
            raise ValueError(f"Unknown scheme {self.scheme!r}; choose one of {SCHEMES}.")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"Unknown granularity {self.granularity!r}; choose one of {GRANULARITIES}.")
        if self.scale_rule not in SCALE_RULES:
            raise ValueError(f"Unknown scale rule {self.scale_rule!r}; choose one of {SCALE_RULES}.")

    def grid(self) -> tuple[int, int]:
        """The code range ``(qmin, qmax)``."""
        b = self.bits
        narrow = self.scale_rule == "maxabs_narrow"
        if self.scheme == "symmetric":
            return (-(2 ** (b - 1)) + narrow, 2 ** (b - 1) - 1)
        return (0, 2 ** b - 1 - narrow)

    def describe(self) -> str:
        return f"W{self.bits} {self.scheme} {self.granularity.replace('_', '-')} {self.scale_rule}"


def _codes(w2: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Nearest-rounding codes of ``w2`` (R, n) for per-row ``scale``/``zp`` (R, 1)."""
    return torch.clamp(torch.round(w2 / scale) + zp, qmin, qmax)


def _range_params(lo: torch.Tensor, hi: torch.Tensor, cfg: QuantConfig, qmin: int, qmax: int):
    """(scale, zero_point) of shape (R, 1) for rows whose range is ``lo..hi`` (lo <= 0 <= hi)."""
    if cfg.scheme == "symmetric":
        maxabs = torch.maximum(hi, -lo)
        denom = 2 ** (cfg.bits - 1) if cfg.scale_rule == "maxabs_full" else 2 ** (cfg.bits - 1) - 1
        scale = maxabs / denom
        zp = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = None
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero rows: any scale works
    if zp is None:
        zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zp


def quantize_tensor(w: torch.Tensor, cfg: QuantConfig):
    """Nearest-neighbour quantization of one weight tensor.

    Args:
        w: float weight in the rows layout (:mod:`qevo_lite.quant.layout`): (C_out, ...).
        cfg: the quantization settings.
    Returns:
        ``(codes, scale, zero_point)``: int16 codes shaped like ``w``; float32 scale and
        int16 zero point shaped (R,), R = C_out per channel or 1 per tensor.
    """
    if not torch.isfinite(w).all():
        raise ValueError("Cannot quantize a tensor with NaN or inf values.")
    qmin, qmax = cfg.grid()
    w = w.detach().float()
    w2 = w.reshape(w.shape[0], -1) if cfg.granularity == "per_channel" else w.reshape(1, -1)
    lo = w2.min(dim=1, keepdim=True).values.clamp(max=0)
    hi = w2.max(dim=1, keepdim=True).values.clamp(min=0)
    if cfg.scale_rule != "mse":
        scale, zp = _range_params(lo, hi, cfg, qmin, qmax)
    else:
        best_err = torch.full_like(lo, float("inf"))
        scale, zp = torch.ones_like(lo), torch.zeros_like(lo)
        full = QuantConfig(cfg.bits, cfg.scheme, cfg.granularity, "maxabs_narrow")  # scale = range / qmax
        for alpha in MSE_ALPHAS:
            s, z = _range_params(lo * alpha, hi * alpha, full, qmin, qmax)
            err = ((s * (_codes(w2, s, z, qmin, qmax) - z) - w2) ** 2).sum(dim=1, keepdim=True)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            scale, zp = torch.where(better, s, scale), torch.where(better, z, zp)
    codes = _codes(w2, scale, zp, qmin, qmax).reshape(w.shape).to(torch.int16)
    return codes, scale.reshape(-1).float(), zp.reshape(-1).to(torch.int16)


@dataclass
class LayerQuant:
    """The quantized state of one layer.

    Attributes:
        codes: int16, values in ``qmin..qmax``, shaped like the weight in the rows layout of
            :mod:`qevo_lite.quant.layout` (dimension 0 = output channel; for a transposed conv
            (C_out, C_in/groups, *k), not the module's (C_in, C_out/groups, *k)).
        scale: float32 (R,), R = output channels (per channel) or 1 (per tensor), in weight units per code.
        zero_point: int16 (R,).
        qmin, qmax: the code grid.
        weight: the float32 weight the codes were rounded from, rows layout (kept for residuals; not exported).
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    weight: torch.Tensor | None = None

    def _bshape(self) -> tuple:
        return (-1,) + (1,) * (self.codes.dim() - 1)

    def step(self) -> torch.Tensor:
        """The quantization step (= scale) broadcast to the weight's shape."""
        return self.scale.reshape(self._bshape()).expand(self.codes.shape)

    def dequantize(self) -> torch.Tensor:
        """Float weight ``scale * (codes - zero_point)``, shaped like the codes (rows layout)."""
        zp = self.zero_point.reshape(self._bshape()).float()
        return self.scale.reshape(self._bshape()) * (self.codes.float() - zp)

    def residual(self) -> torch.Tensor:
        """Float weight minus its decoded value, in steps: in [-0.5, 0.5] unless clipped.

        ``> 0`` means the weight sits above its code's value, so ``code + 1`` is the other neighbour.
        """
        if self.weight is None:
            raise ValueError("This LayerQuant was loaded without its float weight; residuals are unknown.")
        return (self.weight - self.dequantize()) / self.step()

    def clone(self) -> "LayerQuant":
        return LayerQuant(self.codes.clone(), self.scale.clone(), self.zero_point.clone(),
                          self.qmin, self.qmax, self.weight)


@dataclass
class QuantState:
    """A quantized model as data: one :class:`LayerQuant` per quantized layer (see
    :func:`~qevo_lite.quant.fold.quantizable_layers`), by qualified module name."""

    config: QuantConfig
    layers: dict[str, LayerQuant] = field(default_factory=dict)

    @property
    def num_weights(self) -> int:
        return sum(lq.codes.numel() for lq in self.layers.values())

    def clone(self) -> "QuantState":
        return QuantState(self.config, {n: lq.clone() for n, lq in self.layers.items()})

    def codes(self) -> dict:
        """``{layer: codes}``: the candidate form the ES works on (tensors shared, not copied)."""
        return {n: lq.codes for n, lq in self.layers.items()}

    def with_codes(self, codes: dict) -> "QuantState":
        """A state with the same grid and scales and ``codes`` (a ``{layer: int16 codes}`` dict)."""
        return QuantState(self.config, {n: LayerQuant(codes.get(n, lq.codes), lq.scale, lq.zero_point, lq.qmin,
                                                      lq.qmax, lq.weight) for n, lq in self.layers.items()})

    def apply(self, model: nn.Module) -> nn.Module:
        """Write the decoded weights into ``model`` in place, each in its module's layout (biases
        untouched), and return it."""
        with torch.no_grad():
            for name, lq in self.layers.items():
                module = model.get_submodule(name)
                module.weight.copy_(from_rows(lq.dequantize(), module).to(module.weight.device, module.weight.dtype))
        return model

    def to_model(self, model: nn.Module) -> nn.Module:
        """A quantized copy of ``model`` (the float model is left as it was)."""
        return self.apply(copy.deepcopy(model))

    def moved(self, other: "QuantState") -> dict[str, int]:
        """Per layer, how many codes differ between this state and ``other``."""
        return {n: int((lq.codes != other.layers[n].codes).sum()) for n, lq in self.layers.items()}

    def describe(self) -> dict:
        return asdict(self.config)


def quantize_model(model: nn.Module, config: QuantConfig | None = None, **kwargs) -> QuantState:
    """Nearest-rounding quantization of every Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d weight of
    ``model`` (not modified; other weighted modules stay in float, with a warning).

    Pass a :class:`QuantConfig` or its fields as keywords (``bits=3, scale_rule="mse"``).
    Fold batch-norm first (:func:`qevo_lite.quant.fold.fold_batchnorm`).
    """
    if config is None:
        config = QuantConfig(**kwargs)
    elif kwargs:
        raise ValueError("Pass either a QuantConfig or keyword fields, not both.")
    state = QuantState(config)
    qmin, qmax = config.grid()
    for name, module in quantizable_layers(model).items():
        w = to_rows(module.weight.detach().float().cpu(), module)
        codes, scale, zp = quantize_tensor(w, config)
        state.layers[name] = LayerQuant(codes, scale, zp, qmin, qmax, w.clone())
    return state
