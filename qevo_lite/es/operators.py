"""Variation operators of the ES over quantization codes: layer choice, mutation, crossover.

A candidate is ``{layer: int16 codes}``; operators return a *new* dict that shares the
parent's tensors for every layer they do not touch. All randomness comes from the
``torch.Generator`` passed in, so the same seed gives the same offspring.
"""
from __future__ import annotations

import torch

from ..quant.grid import QuantState

MUTATIONS = ("uniform", "residual")
LAYER_CHOICES = ("uniform", "size", "sensitivity")


def layer_weights(state: QuantState, rule: str, sensitivity: dict | None = None, layers=None) -> dict:
    """Probability of mutating each layer: equal (``uniform``) or proportional to its weight count
    (``size``). ``sensitivity`` order is a schedule, see :func:`pick_layer`."""
    names = list(layers or state.layers)
    if rule == "uniform":
        w = torch.ones(len(names))
    elif rule in ("size", "sensitivity"):
        w = torch.tensor([float(state.layers[n].codes.numel()) for n in names])
    else:
        raise ValueError(f"Unknown layer choice {rule!r}; choose one of {LAYER_CHOICES}.")
    return dict(zip(names, (w / w.sum()).tolist()))


def pick_layer(names: list, probs: list, rule: str, generation: int, g: torch.Generator,
               order: list | None = None, generations_per_layer: int = 10) -> str:
    """One layer to mutate. ``sensitivity``: visit layers in ``order`` (most sensitive first),
    ``generations_per_layer`` generations each, cycling; the other rules sample from ``probs``."""
    if rule == "sensitivity":
        if not order:
            raise ValueError("layer_choice='sensitivity' needs a layer order (see qevo_lite.quant.sensitivity).")
        return order[(generation // generations_per_layer) % len(order)]
    return names[int(torch.multinomial(torch.tensor(probs), 1, generator=g))]


def _count(n: int, p: float, g: torch.Generator) -> int:
    """Number of weights to move: Binomial(n, p), at least 1, at most n."""
    k = int(torch.binomial(torch.tensor([float(n)]), torch.tensor([p]), generator=g))
    return max(1, min(n, k))


def mutate_uniform(codes: torch.Tensor, qmin: int, qmax: int, p: float, g: torch.Generator) -> torch.Tensor:
    """The paper's least-significant-bit perturbation: each weight moves +1 or -1 code with probability
    ``p`` (a binomial mask), clamped to the grid. Returns new codes (the input is not modified)."""
    n = codes.numel()
    k = _count(n, p, g)
    idx = torch.randperm(n, generator=g)[:k] if k > n // 16 else torch.randint(n, (k,), generator=g).unique()
    step = torch.randint(0, 2, (len(idx),), generator=g, dtype=torch.int16) * 2 - 1
    out = codes.clone(memory_format=torch.contiguous_format)   # any layout in, a flat view out
    flat = out.view(-1)
    flat[idx] = (flat[idx] + step).clamp(qmin, qmax)
    return out


def mutate_residual(codes: torch.Tensor, weight: torch.Tensor, step: torch.Tensor, zero_point: torch.Tensor,
                    qmin: int, qmax: int, p: float, g: torch.Generator, sharpness: float = 4.0) -> torch.Tensor:
    """Residual-guided mutation: pick weights with probability proportional to ``|residual|^sharpness``
    (``residual`` = distance from the float weight to its current code, in steps), so weights near the
    rounding boundary are preferred, and move each to its *other* neighbouring state (towards the float
    weight's other side). ``step`` and ``zero_point`` are broadcast to the weight's shape."""
    n = codes.numel()
    k = _count(n, p, g)
    resid = (weight / step + zero_point - codes.float()).reshape(-1)
    prob = resid.abs().clamp(min=1e-3) ** sharpness
    idx = torch.multinomial(prob, k, replacement=False, generator=g)
    direction = torch.sign(resid[idx])
    zero = direction == 0
    if zero.any():  # exactly on a grid point: either neighbour
        direction[zero] = (torch.randint(0, 2, (int(zero.sum()),), generator=g) * 2 - 1).float()
    out = codes.clone(memory_format=torch.contiguous_format)
    flat = out.view(-1)
    flat[idx] = (flat[idx] + direction.to(torch.int16)).clamp(qmin, qmax)
    return out


def mutate(parent: dict, state: QuantState, layer: str, kind: str, p: float, g: torch.Generator) -> dict:
    """A child of ``parent`` with layer ``layer`` mutated by operator ``kind`` at rate ``p``."""
    lq = state.layers[layer]
    if kind == "uniform":
        new = mutate_uniform(parent[layer], lq.qmin, lq.qmax, p, g)
    elif kind == "residual":
        bshape = (-1,) + (1,) * (lq.codes.dim() - 1)
        new = mutate_residual(parent[layer], lq.weight, lq.scale.reshape(bshape),
                              lq.zero_point.reshape(bshape).float(), lq.qmin, lq.qmax, p, g)
    else:
        raise ValueError(f"Unknown mutation {kind!r}; choose one of {MUTATIONS}.")
    child = dict(parent)
    child[layer] = new
    return child


def crossover_uniform(a: dict, b: dict, g: torch.Generator) -> dict:
    """Uniform crossover over the parents' differences: where ``a`` and ``b`` disagree, each position
    takes either parent's code with probability 1/2; layers where they agree are shared."""
    child = {}
    for name, ca in a.items():
        cb = b[name]
        if ca is cb or torch.equal(ca, cb):
            child[name] = ca
            continue
        take_b = torch.rand(ca.shape, generator=g) < 0.5
        child[name] = torch.where(take_b, cb, ca)
    return child
