"""A second stage for the ES: moves that the task loss's gradient proposes, each set checked exactly.

After the local stage every layer sits at a minimum of its own output error, but not of the task loss: the
layers' errors interact downstream. This stage looks at the whole network's loss ``L`` on the search split,
through a second-order model of a one-step move of each code, and only trusts it after an exact check:

1. **curvature**, once: the diagonal ``h`` of the Gauss-Newton matrix of ``L`` with respect to the decoded
   weights, estimated by :func:`loss_curvature` (``draws`` backward passes with random output directions);
2. **proposal**, each iteration: the gradient ``g`` of ``L``; moving a weight one step ``s`` against its
   gradient is predicted to change the loss by ``-|g| s + h s^2 / 2``; the ``k`` moves of best predicted gain
   (across all layers) are applied together;
3. **exact check**: the loss on the fitting part of the search split with those moves; kept if it is lower
   (then ``k`` grows by half), undone if not (``k`` halves; a single move that fails is never proposed
   again). One check is one *evaluation* (a forward pass over the fitting images); ``budget`` bounds them;
4. **early stopping**: the last ``holdout`` share of the search split is never fitted; the codes of lowest loss
   there are the result, and the stage stops when that has not improved for ``patience`` kept steps.

The model of step 2 ignores how moves interact, which is why step 3 exists. What it costs: one forward and
backward pass over the fitting images per iteration, one forward pass per evaluation, and ``draws`` backward passes
for the curvature; memory, the model's activations of one batch and one float per weight for ``g`` and ``h``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..core.streaming import in_memory
from ..evaluators.base import Codes, cross_entropy_loss, output_mse, reconstruction_mse, resolve_loss
from ..quant.grid import QuantState
from ..quant.layout import from_rows, to_rows

BATCH = 256


class GradientStageResult(NamedTuple):
    """The stage's codes (those of lowest loss on the held-out part of the search split), its evaluations
    (exact checks), its wall time in seconds (curvature included) and one log entry per iteration
    (``{evaluations, fit, holdout, k}``: fitting and best held-out loss, and the number of moves it tried)."""

    codes: Codes
    evaluations: int
    seconds: float
    log: list


def _batches(n: int):
    return [slice(i, min(n, i + BATCH)) for i in range(0, n, BATCH)]


def _mean_loss(model: nn.Module, x: torch.Tensor, t: torch.Tensor, fn, grad: bool = False) -> float:
    """The mean per-sample loss of ``model`` on ``x`` against ``t`` (accumulating weight gradients if ``grad``)."""
    device, total = next(model.parameters()).device, 0.0
    for b in _batches(len(x)):
        with torch.set_grad_enabled(grad):
            loss = fn(model(x[b].to(device)), t[b].to(device)).sum() / len(x)
            if grad:
                loss.backward()
        total += float(loss.detach())
    return total


def task_loss(fmodel: nn.Module, rtn_state: QuantState, codes: Codes, search, loss="cross_entropy") -> float:
    """The mean per-sample task ``loss`` (a name or callable) over the whole search split (a Split or
    StreamedSplit) of ``codes`` decoded on ``rtn_state``'s grid; ``fmodel`` is not modified."""
    spec, split = resolve_loss(loss), in_memory(search)
    model = rtn_state.with_codes(codes).to_model(fmodel).eval()
    with torch.no_grad():
        return _mean_loss(model, split.x, spec.targets(split), spec.fn)


def _direction(out: torch.Tensor, targets: torch.Tensor, fn, gen: torch.Generator) -> torch.Tensor:
    """A random output direction ``v`` with ``E[v v^T]`` the loss's curvature in the outputs, per image: for a
    mean squared error (``D`` outputs) ``N(0, 2/D)``; for cross-entropy the one-hot of a class drawn from the
    model's softmax minus the softmax (the Fisher of the model's own predictive distribution); for any other
    loss its per-image gradient times a random sign (the empirical Fisher)."""
    if fn in (reconstruction_mse, output_mse):
        return torch.randn(out.shape, generator=gen).to(out.device) * (2 / out[0].numel()) ** 0.5
    if fn is cross_entropy_loss:
        p = torch.softmax(out.detach(), 1)
        drawn = torch.multinomial(p.cpu(), 1, generator=gen)[:, 0].to(out.device)
        return F.one_hot(drawn, p.shape[1]).to(p.dtype) - p
    grad = torch.autograd.grad(fn(out, targets).sum(), out, retain_graph=True)[0]
    sign = (torch.randint(0, 2, (len(out),), generator=gen) * 2 - 1).to(grad)
    return grad * sign.reshape(-1, *([1] * (grad.dim() - 1)))


def loss_curvature(model: nn.Module, layers: dict, x: torch.Tensor, targets: torch.Tensor, fn, draws: int = 32,
                   seed: int = 0) -> dict:
    """``{name: h}``: the Gauss-Newton diagonal of the mean per-sample loss ``fn(outputs, targets)`` over ``x``
    with respect to each layer's weight (``layers``: ``{name: module}``), in the rows layout, float32.

    Estimated with ``draws`` random output directions ``v`` per image (:func:`_direction`): the weight gradient
    ``u`` of ``sum_n v_n . out_n`` has ``E[u^2] = sum_n diag(J_n^T C_n J_n)`` (the directions of different images
    are independent, so cross terms vanish), ``J_n`` the Jacobian of image ``n``'s outputs with respect to the
    weights and ``C_n`` the loss's curvature in them; divided by the number of images. Exact for a mean squared
    error in the limit of many draws (``tests/test_gradient_stage.py`` checks it on a linear layer)."""
    gen = torch.Generator().manual_seed(seed)
    weights = [m.weight for m in layers.values()]
    was = [w.requires_grad for w in weights]
    h = [torch.zeros_like(w) for w in weights]
    device = next(model.parameters()).device
    try:
        for w in weights:
            w.requires_grad_(True)
        for _ in range(draws):
            u = [torch.zeros_like(w) for w in weights]
            for b in _batches(len(x)):
                out = model(x[b].to(device))
                v = _direction(out, targets[b].to(device), fn, gen)
                for acc, g in zip(u, torch.autograd.grad((out * v.detach()).sum(), weights)):
                    acc += g
            for acc, g in zip(h, u):
                acc += g ** 2 / draws
    finally:
        for w, r in zip(weights, was):
            w.requires_grad_(r)
    return {name: to_rows(hn, m).float() / len(x) for (name, m), hn in zip(layers.items(), h)}


def _rows_of(n: int, holdout: float) -> tuple[slice, slice]:
    cut = n - max(1, int(round(holdout * n)))
    if cut < 1:
        raise ValueError(f"A search split of {n} images cannot keep {holdout:.0%} of them held out and fit the rest.")
    return slice(0, cut), slice(cut, n)


class _Network:
    """The quantized copy of the model whose codes the stage moves: ``codes`` (rows layout, its own copies) and
    the decoded weights of every layer written back after each change."""

    def __init__(self, fmodel: nn.Module, rtn_state: QuantState, codes: Codes):
        # contiguous copies: a peer's codes may be a strided view (the moves index them flat)
        self.state, self.codes = rtn_state, {n: c.contiguous().clone() for n, c in codes.items()}
        self.model = rtn_state.with_codes(self.codes).to_model(fmodel).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.layers = {name: self.model.get_submodule(name) for name in rtn_state.layers}
        for m in self.layers.values():
            m.weight.requires_grad_(True)
        self.sizes = [self.codes[n].numel() for n in self.layers]
        self.steps = {n: rtn_state.layers[n].step().float() for n in self.layers}

    def decode(self, name: str) -> None:
        m = self.layers[name]
        w = replace(self.state.layers[name], codes=self.codes[name]).dequantize()
        with torch.no_grad():
            m.weight.copy_(from_rows(w, m).to(m.weight))

    def proposals(self, h: dict) -> tuple[torch.Tensor, list]:
        """From the weight gradients now in the layers: the predicted gain of each weight's one-step move against
        its gradient (0 where it is not positive or would leave the grid), all layers flat, and the moves."""
        gains, moves = [], []
        for name, m in self.layers.items():
            lq = self.state.layers[name]
            g = to_rows(m.weight.grad.detach(), m).float().cpu()
            move = -torch.sign(g).to(torch.int16)
            moved = self.codes[name] + move
            gain = g.abs() * self.steps[name] - 0.5 * h[name] * self.steps[name] ** 2
            valid = (move != 0) & (moved >= lq.qmin) & (moved <= lq.qmax) & (gain > 0)
            gains.append(torch.where(valid, gain, torch.zeros_like(gain)).reshape(-1))
            moves.append(move.reshape(-1))
        return torch.cat(gains), moves

    def apply(self, top: torch.Tensor, moves: list) -> dict:
        """Make the moves at flat indices ``top``; returns the changed layers' codes before them."""
        before, offset = {}, 0
        for name, size, move in zip(self.layers, self.sizes, moves):
            chosen = top[(top >= offset) & (top < offset + size)] - offset
            if len(chosen):
                before[name] = self.codes[name].clone()
                self.codes[name].view(-1)[chosen] += move[chosen]
                self.decode(name)
            offset += size
        return before

    def undo(self, before: dict) -> None:
        for name, c in before.items():
            self.codes[name] = c
            self.decode(name)


def gradient_stage(fmodel: nn.Module, rtn_state: QuantState, search, start_codes: Codes, *, budget: int,
                   draws: int = 32, first_share: float = 0.002, holdout: float = 0.25, patience: int = 40,
                   seed: int = 0, loss="cross_entropy", progress: bool = False) -> GradientStageResult:
    """Run the stage (module docstring) from ``start_codes`` on ``rtn_state``'s grid: ``budget`` exact checks at
    most (0: no stage, the start codes, nothing read), the first ``k`` moves ``first_share`` of all weights.
    ``search``: a Split or StreamedSplit (read into memory); its last ``holdout`` share is the early-stopping
    slice. ``loss``: the task's per-sample loss (a name or callable, as for the global stage). ``fmodel`` is not
    modified (a quantized copy runs, on its device). ``progress``: a bar over the evaluations."""
    if budget <= 0:
        return GradientStageResult({n: c.clone() for n, c in start_codes.items()}, 0, 0.0, [])
    t0, spec = time.perf_counter(), resolve_loss(loss)
    split = in_memory(search)
    x, t = split.x, spec.targets(split)
    fit, held = _rows_of(len(x), holdout)
    net = _Network(fmodel, rtn_state, start_codes)
    fit_loss = lambda grad=False: _mean_loss(net.model, x[fit], t[fit], spec.fn, grad)
    h = {n: v.cpu() for n, v in loss_curvature(net.model, net.layers, x[fit], t[fit], spec.fn, draws, seed).items()}
    with torch.no_grad():
        current, best_held = fit_loss(), _mean_loss(net.model, x[held], t[held], spec.fn)
    best = {n: c.clone() for n, c in net.codes.items()}
    k, evaluations, stale, tabu, log = max(1, int(first_share * sum(net.sizes))), 0, 0, [], []
    bar = tqdm(total=budget, desc="gradient stage", unit="check", disable=not progress, leave=False)
    while evaluations < budget and stale <= patience:
        for m in net.layers.values():
            m.weight.grad = None
        fit_loss(grad=True)
        gain, moves = net.proposals(h)
        gain[torch.tensor(tabu, dtype=torch.long)] = 0
        kept = False
        while evaluations < budget and not kept and int((gain > 0).sum()):
            top = torch.topk(gain, min(k, int((gain > 0).sum()))).indices
            before = net.apply(top, moves)
            with torch.no_grad():
                trial = fit_loss()
            evaluations += 1
            bar.update(1)
            kept = trial < current
            if kept:
                current, k = trial, int(1.5 * k) + 1
                continue
            net.undo(before)
            if k == 1:              # the best single move fails: never propose it again
                tabu.append(int(top[0]))
                gain[top[0]] = 0
            k = max(1, k // 2)
        if not kept:
            break
        with torch.no_grad():
            held_loss = _mean_loss(net.model, x[held], t[held], spec.fn)
        stale += 1
        if held_loss < best_held:
            best_held, best, stale = held_loss, {n: c.clone() for n, c in net.codes.items()}, 0
        log.append({"evaluations": evaluations, "fit": current, "holdout": best_held, "k": k})
    bar.close()
    return GradientStageResult(best, evaluations, time.perf_counter() - t0, log)
