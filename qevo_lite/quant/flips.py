"""The motivating experiment: flip a few weights near the rounding boundary and see what happens.

Nearest rounding (RTN) sends every weight to its closest grid point. A weight whose
rounding residual is close to +/-0.5 steps sits almost halfway between two grid
points, so moving it to the *other* neighbour costs almost nothing in weight error.
If RTN were the best assignment, such moves would never raise accuracy.
:func:`random_boundary_flips` tests that: many trials, each flipping a handful of
randomly chosen near-boundary weights of the RTN state, each measured on (a subset
of) the search split and undone before the next.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.data import Split
from ..core.evaluate import evaluate
from .grid import QuantState
from .layout import rows_shape, weight_positions


def boundary_candidates(state: QuantState, near: float = 0.1, region: str = "boundary"
                        ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Weights close to the rounding boundary (or, as a control, close to their grid point) whose other
    neighbouring code is on the grid.

    With ``region="boundary"`` a weight qualifies when ``| |residual| - 0.5 | <= near`` (residual in steps,
    see :meth:`LayerQuant.residual`): the move to its other neighbour costs almost no weight error. With
    ``region="grid_point"`` (the control arm) it qualifies when ``0 < |residual| <= near``: it sits almost on
    its grid point, and the same one-step move adds almost a whole step of weight error. Either way
    ``code + sign(residual)`` must lie in ``qmin..qmax`` (a move the grid would clamp back is no move).

    Returns:
        One ``(layer name, flat indices, new codes)`` triple per layer, in the state's layer order;
        ``new codes`` (int16) are the other neighbours of the weights at ``flat indices`` (indices into
        the codes, i.e. the rows layout of :mod:`qevo_lite.quant.layout`).
    """
    if not 0 < near <= 0.5:
        raise ValueError(f"near must be in (0, 0.5], got {near!r}.")
    if region not in ("boundary", "grid_point"):
        raise ValueError(f"region must be 'boundary' or 'grid_point', got {region!r}.")
    out = []
    for name, lq in state.layers.items():
        r = lq.residual().reshape(-1)
        codes = lq.codes.reshape(-1)
        target = codes.to(torch.int32) + torch.sign(r).to(torch.int32)
        close = (r.abs() - 0.5).abs() <= near if region == "boundary" else r.abs() <= near
        ok = close & (r != 0) & (target >= lq.qmin) & (target <= lq.qmax)
        idx = torch.nonzero(ok).reshape(-1)
        out.append((name, idx, target[idx].to(torch.int16)))
    return out


def _write_codes(state: QuantState, name: str, module: nn.Module, flat: torch.Tensor,
                 codes: torch.Tensor) -> tuple:
    """Write the decoded ``codes`` of layer ``name`` at flat positions ``flat`` of its codes (rows layout) into
    the weight of ``module``; return ``(weight, where, old values)`` to undo it."""
    lq = state.layers[name]
    w = module.weight
    where = weight_positions(flat, w.shape, module)  # works for any memory layout
    per_channel = lq.scale.numel() > 1
    row = torch.unravel_index(flat, rows_shape(w.shape, module))[0] if per_channel else torch.zeros_like(flat)
    value = lq.scale[row] * (codes.float() - lq.zero_point[row].float())
    old = w[where].clone()
    w.index_put_(where, value.to(w.dtype).to(w.device))
    return w, where, old


@torch.no_grad()
def random_boundary_flips(model: nn.Module, state: QuantState, search_split: Split, n_trials: int = 100,
                          n_flips: int = 8, seed: int = 0, near: float = 0.1, subset: int | None = 512,
                          return_flips: bool = False, region: str = "boundary"):
    """Accuracy changes, versus the RTN state, of ``n_trials`` random sets of ``n_flips`` near-boundary flips.

    Each trial draws ``n_flips`` distinct weights from :func:`boundary_candidates` with a
    ``torch.Generator`` seeded by ``seed``, moves each to its other neighbouring code,
    evaluates the accuracy on the first ``subset`` images of ``search_split`` (all of them
    if ``subset`` is None) and undoes the move. Only the changed weights are written, so a
    trial costs one evaluation.

    Args:
        model: the (BN-folded) float model the state was made from. Its quantized layers are
            temporarily overwritten with the state's decoded weights and restored exactly on return.
        state: the RTN state to start from (not modified).
        search_split: the split the accuracy is measured on (the search split, never test).
        n_trials, n_flips: number of trials and weights flipped per trial.
        seed: seeds the choice of weights.
        near: how close to the boundary a weight must be (in steps, see :func:`boundary_candidates`).
        region: ``boundary`` (the experiment) or ``grid_point`` (the control: weights near their grid point).
        subset: evaluate on this many images of ``search_split``.
        return_flips: also return, per trial, the flipped weights as ``(layer name, flat index)`` pairs
            (flat indices into the codes).

    Returns:
        float tensor ``(n_trials,)``: trial accuracy minus RTN accuracy (fractions, not percent);
        with ``return_flips``, ``(deltas, flips)``.
    """
    if n_trials < 1 or n_flips < 1:
        raise ValueError(f"n_trials and n_flips must be >= 1, got {n_trials} and {n_flips}.")
    candidates = boundary_candidates(state, near, region)
    sizes = torch.tensor([len(idx) for _, idx, _ in candidates])
    total = int(sizes.sum())
    if total < n_flips:
        raise ValueError(f"Only {total} weights lie within {near} of the {region.replace('_', ' ')}; "
                         f"ask for fewer than n_flips={n_flips} or widen `near`.")
    offsets = torch.cumsum(sizes, 0) - sizes  # start of each layer's candidates in the global list
    split = search_split.subset(subset) if subset is not None else search_split
    modules = {name: model.get_submodule(name) for name in state.layers}
    weights = {name: m.weight for name, m in modules.items()}
    original = {name: w.detach().clone() for name, w in weights.items()}
    g = torch.Generator().manual_seed(seed)
    deltas, flips = torch.empty(n_trials), []
    try:
        state.apply(model)
        base = evaluate(model, split)["accuracy"]
        for t in range(n_trials):
            chosen = torch.randperm(total, generator=g)[:n_flips].sort().values
            layer_of = torch.searchsorted(offsets, chosen, right=True) - 1
            undo, trial = [], []
            for k in layer_of.unique().tolist():
                name, idx, target = candidates[k]
                local = chosen[layer_of == k] - offsets[k]
                undo.append(_write_codes(state, name, modules[name], idx[local], target[local]))
                trial += [(name, int(i)) for i in idx[local]]
            deltas[t] = evaluate(model, split)["accuracy"] - base
            for w, where, old in undo:
                w.index_put_(where, old)
            flips.append(trial)
    finally:
        for name, w in weights.items():
            w.copy_(original[name])
    return (deltas, flips) if return_flips else deltas


def apply_flips(state: QuantState, flips: list[tuple[str, int]]) -> QuantState:
    """A copy of ``state`` with each listed weight moved to its other neighbouring code.

    ``flips`` is one trial of :func:`random_boundary_flips` (``return_flips=True``):
    ``(layer name, flat index)`` pairs. The move is ``code + sign(residual)``, clamped to the grid.
    """
    out = state.clone()
    for name, i in flips:
        lq = out.layers[name]
        lq.codes = lq.codes.contiguous()   # codes of any layout (e.g. rounded from a channels_last weight)
        codes = lq.codes.view(-1)
        step = int(torch.sign(lq.residual().reshape(-1)[i]))
        codes[i] = min(max(int(codes[i]) + step, lq.qmin), lq.qmax)
    return out
