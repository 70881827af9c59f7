"""Fitness of a quantized model on the search split, and the evaluators that compute it.

A *candidate* is a dict ``{layer name: int16 codes}`` (the codes of every quantized
layer; tensors shared with its parent where nothing changed). An evaluator holds one
model whose weights decode its *reference* candidate (the ES parent). To evaluate a
candidate it writes only the weights that differ from the reference, runs the
network, and writes the old weights back: no model copies.

Evaluators (all minimise a per-sample loss averaged over the search split):

* :class:`FullEvaluator` -- the straightforward one: the whole network on every image.
* :class:`IncrementalEvaluator` -- the fast one. It traces the network with
  ``torch.fx`` and caches, for the reference weights, the activations that enter
  the part of the graph downstream of the changed layers; only that part is re-run.
  Optional *early rejection* compares the candidate with the reference chunk by
  chunk on the same images (a paired test) and stops evaluating a clear loser.
  Networks that torch.fx cannot trace fall back to full evaluation, with a warning.
* :class:`LayerwiseEvaluator` (in :mod:`qevo_lite.layerwise`) -- the local fitness.

Loss functions map ``(outputs, targets)`` of a chunk to per-sample losses ``(n,)``.
"""
from __future__ import annotations

import copy
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from .data import Split
from .evaluate import to_fast_layout
from .quant import QuantState

Codes = dict  # layer name -> int16 codes tensor (weight shape)


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (nats), (n,)."""
    return F.cross_entropy(logits, y, reduction="none")


def reconstruction_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared reconstruction error, (n,). ``target`` is the input image batch."""
    return (recon - target).pow(2).flatten(1).mean(1)


def accuracy_metric(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness (1.0 or 0.0), (n,)."""
    return (logits.argmax(1) == y).float()


LOSSES = {"cross_entropy": (cross_entropy_loss, accuracy_metric), "mse": (reconstruction_mse, None)}


@dataclass
class Evaluation:
    """The result of evaluating one candidate.

    ``fitness``: mean per-sample loss over the samples evaluated (lower is better);
    ``losses``: per-sample losses (n_evaluated,); ``complete``: False when early rejection
    stopped it (then it lost against the reference); ``metric``: mean of the metric
    (e.g. accuracy) when complete and a metric is defined.
    """

    fitness: float
    losses: torch.Tensor | None = None
    complete: bool = True
    metric: float | None = None
    samples: int = 0


def changed_weights(state: QuantState, reference: Codes, candidate: Codes) -> dict:
    """``{layer: (flat indices, new codes)}`` where ``candidate`` differs from ``reference``."""
    out = {}
    for name, codes in candidate.items():
        ref = reference[name]
        if codes is ref:
            continue
        idx = (codes != ref).reshape(-1).nonzero().squeeze(1)
        if len(idx):
            out[name] = (idx, codes.reshape(-1)[idx])
    return out


def decode_at(state: QuantState, name: str, idx: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Float weight values of ``codes`` at flat positions ``idx`` of layer ``name``."""
    lq = state.layers[name]
    per_row = lq.codes[0].numel()
    row = idx // per_row if lq.scale.numel() > 1 else torch.zeros_like(idx)
    return lq.scale[row] * (codes.float() - lq.zero_point[row].float())


class FullEvaluator:
    """Fitness of candidates by running the whole network on every search image.

    Args:
        model: the (BN-folded) float model. The evaluator works on its own copy (moved to
            ``device``, quantized layers decoding the state's codes); ``model`` is left as it was.
        state: the RTN :class:`QuantState` (grid, scales, float weights).
        search: the search split (images ``x``, targets ``y``; for ``loss="mse"`` targets are the images).
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``(outputs, targets) -> (n,)``.
        metric: a callable ``(outputs, targets) -> (n,)`` averaged for reporting, or None.
        chunk_size: images per forward pass (default: 256 on the CPU, 2048 on a GPU, the faster
            choices measured on 2 CPU cores and on an H200).
    """

    incremental = False

    def __init__(self, model: nn.Module, state: QuantState, search: Split, loss="cross_entropy", metric="default",
                 chunk_size: int | None = None, device=None, _copy: bool = True):
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"Unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a callable.")
            loss, default_metric = LOSSES[loss]
        else:
            default_metric = None
        self.loss_fn = loss
        self.metric_fn = default_metric if metric == "default" else metric
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = to_fast_layout((copy.deepcopy(model) if _copy else model).eval().to(self.device))
        if chunk_size is None:
            chunk_size = 2048 if self.device.type == "cuda" else 256
        self.state = state
        targets = search.x if self.loss_fn is reconstruction_mse else search.y
        self.chunks = [(to_fast_layout(search.x[i:i + chunk_size].to(self.device)),
                        targets[i:i + chunk_size].to(self.device)) for i in range(0, len(search), chunk_size)]
        self.num_samples = len(search)
        self.reject_min_samples = min(256, len(search) // 4)  # early rejection looks at least this many first
        self.evaluations = 0
        self.reference: Codes = state.codes()
        state.apply(self.model)
        self.reference_eval = self._run({}, None)

    # -- weights --------------------------------------------------------------------------------
    def _write(self, changes: dict, codes_of) -> list:
        """Write decoded ``codes_of(name, idx, new)`` into the weights at the changed positions."""
        written = []
        with torch.no_grad():
            for name, (idx, new) in changes.items():
                weight = self.model.get_submodule(name).weight
                pos = torch.unravel_index(idx.to(weight.device), weight.shape)
                written.append((weight, pos, weight[pos].clone()))
                weight.index_put_(pos, codes_of(name, idx, new).to(weight.device, weight.dtype))
        return written

    @staticmethod
    def _restore(written: list) -> None:
        with torch.no_grad():
            for weight, pos, old in written:
                weight.index_put_(pos, old)

    @contextmanager
    def applied(self, candidate: Codes):
        """Context in which ``self.model`` decodes ``candidate`` (restored afterwards)."""
        written = self._write(changed_weights(self.state, self.reference, candidate),
                              lambda n, i, c: decode_at(self.state, n, i, c))
        try:
            yield self.model
        finally:
            self._restore(written)

    # -- evaluation -----------------------------------------------------------------------------
    def _forward_chunk(self, k: int, changed: frozenset):
        return self.model(self.chunks[k][0])

    def _run(self, changes: dict, bar: torch.Tensor | None, z: float = 2.0) -> Evaluation:
        changed = frozenset(changes)
        losses, metrics, seen = [], [], 0
        with torch.no_grad():
            for k, (_, target) in enumerate(self.chunks):
                out = self._forward_chunk(k, changed)
                losses.append(self.loss_fn(out, target).float())
                if self.metric_fn is not None:
                    metrics.append(self.metric_fn(out, target))
                seen += len(target)
                if bar is not None and seen >= self.reject_min_samples and seen < self.num_samples:
                    d = torch.cat(losses) - bar[:seen]
                    if d.mean() > z * d.std() / math.sqrt(seen):
                        lo = torch.cat(losses)
                        return Evaluation(lo.mean().item(), lo, complete=False, samples=seen)
        lo = torch.cat(losses)
        metric = torch.cat(metrics).mean().item() if metrics else None
        return Evaluation(lo.mean().item(), lo, complete=True, metric=metric, samples=seen)

    def evaluate(self, candidate: Codes, early_reject: bool = False, z: float = 2.0) -> Evaluation:
        """Fitness of ``candidate`` on the search split. With ``early_reject``, stop as soon as it is
        significantly worse (paired z-test at level ``z``) than the reference on the images seen so far."""
        self.evaluations += 1
        changes = changed_weights(self.state, self.reference, candidate)
        if not changes:
            return self.reference_eval
        written = self._write(changes, lambda n, i, c: decode_at(self.state, n, i, c))
        try:
            return self._run(changes, self.reference_eval.losses if early_reject else None, z)
        finally:
            self._restore(written)

    def set_reference(self, candidate: Codes, evaluation: Evaluation | None = None) -> None:
        """Make ``candidate`` the reference (the model now decodes it). ``evaluation`` must be complete."""
        changes = changed_weights(self.state, self.reference, candidate)
        self._write(changes, lambda n, i, c: decode_at(self.state, n, i, c))
        self.reference = candidate
        self._invalidate(frozenset(changes))
        if evaluation is None or not evaluation.complete:
            evaluation = self._run({}, None)
        self.reference_eval = evaluation

    def _invalidate(self, changed: frozenset) -> None:
        pass


def _in_place(node: fx.Node) -> bool:
    """Whether a graph node may modify one of its inputs in place."""
    if node.op == "call_method" and str(node.target).endswith("_") and not str(node.target).startswith("_"):
        return True
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return node.kwargs.get("inplace", False) is True or name.startswith("i") and name in (
            "iadd", "isub", "imul", "itruediv", "iand", "ior") or name.endswith("_")
    return False


class IncrementalEvaluator(FullEvaluator):
    """Like :class:`FullEvaluator`, but re-runs only the graph downstream of the changed layers.

    The model is traced with ``torch.fx`` (nested modules and functional forwards are fine).
    For each set of changed layers, the *frontier* is the set of graph values computed
    outside the downstream part that feed into it (for a chain: the input of the first
    changed layer; for a residual block: the block input too). Frontier values are cached
    per chunk for the reference weights and invalidated when the reference changes upstream.

    *Sparse layer update* (``sparse_update=True``, the default): when a candidate changes a few
    weights of a single Conv2d/Linear layer (the ES's usual mutation), the layer itself is not re-run
    either: its output is the cached reference output plus the contribution of the changed weights
    only, ``dO[:, o] = sum over changes (w_new - w_old) * shifted input channel i``, which costs
    O(changed weights x output positions) instead of O(all weights x output positions). Only the
    layers after it run. The result equals a full evaluation up to float rounding (a sum in another
    order: about 1e-7 relative); ``sparse_update=False`` gives results bit-identical to
    :class:`FullEvaluator`.
    """

    incremental = True
    # use the sparse update while changed weights < this share of the layer's weights
    sparse_max_share = 0.25

    def __init__(self, model: nn.Module, state: QuantState, search: Split, sparse_update: bool = True, **kwargs):
        model = copy.deepcopy(model)  # traced and modified below: never the caller's model
        if not isinstance(model, fx.GraphModule):
            try:
                model = fx.symbolic_trace(model)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}); "
                              "IncrementalEvaluator falls back to full evaluation of every candidate.", stacklevel=2)
                self.incremental = False
        self._cache: dict = {}  # node -> list of per-chunk tensors (reference weights)
        self._plans: dict = {}
        self._clone_frontier = False
        if self.incremental:
            for m in model.modules():  # an in-place module would overwrite a cached activation
                if getattr(m, "inplace", False):
                    m.inplace = False
            self._clone_frontier = any(_in_place(n) for n in model.graph.nodes)
            self.graph_nodes = list(model.graph.nodes)
            self._users = {n: list(n.users) for n in self.graph_nodes}
            self._interp = fx.Interpreter(model)
        self.sparse_update = sparse_update and self.incremental
        self._sparse_layers = self._find_sparse_layers(model, state) if self.sparse_update else {}
        self._sparse_now = None  # (layer name, flat indices, weight changes) during a sparse evaluation
        self._channel_cache: dict = {}  # (layer-input node, padding) -> per-chunk channel-major copies (sparse update)
        self._collect = None   # during an evaluation: {node: per-chunk values} to record
        # values every one-layer candidate needs (each layer's frontier, and its output for the sparse
        # update): recorded whenever the reference itself is run, so no candidate waits for a fill
        self._warm = self._warm_nodes(state) if self.incremental else []
        self._pending = None   # (candidate, fitness, recorded values): best complete evaluation since the
                               # reference was set; installed as the cache if it becomes the reference
        super().__init__(model, state, search, _copy=False, **kwargs)

    def _warm_nodes(self, state: QuantState) -> list:
        nodes = []
        for name in state.layers:
            frontier, _ = self._plan(frozenset([name]))
            nodes += [n for n in frontier if n.op != "placeholder"]
            if name in self._sparse_layers:
                nodes.append(self._sparse_layers[name][0])
        return list(dict.fromkeys(nodes))

    def _find_sparse_layers(self, model: fx.GraphModule, state: QuantState) -> dict:
        """``{layer name: (its graph node, its input node)}`` for the quantized layers whose output the
        sparse update can patch: Conv2d with zero padding and numeric padding, or Linear, each called
        exactly once in the graph on a single tensor input."""
        calls: dict = {}
        for n in model.graph.nodes:
            if n.op == "call_module" and n.target in state.layers:
                calls.setdefault(n.target, []).append(n)
        out = {}
        for name, nodes in calls.items():
            m = model.get_submodule(name)
            node = nodes[0]
            ok_conv = isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            if (len(nodes) == 1 and (ok_conv or isinstance(m, nn.Linear)) and len(node.args) == 1
                    and not node.kwargs and isinstance(node.args[0], fx.Node)):
                out[name] = (node, node.args[0])
        return out

    def _downstream(self, layers) -> set:
        start = [n for n in self.graph_nodes if n.op == "call_module" and n.target in layers]
        seen, stack = set(start), list(start)
        while stack:
            for u in self._users[stack.pop()]:
                if u not in seen:
                    seen.add(u)
                    stack.append(u)
        return seen

    def _plan(self, changed: frozenset):
        """(frontier nodes, nodes to run in order) for a set of changed layers (empty set = all)."""
        if changed not in self._plans:
            if not changed:
                run = [n for n in self.graph_nodes if n.op != "placeholder"]
                frontier = [n for n in self.graph_nodes if n.op == "placeholder"]
            else:
                down = self._downstream(changed)
                run = [n for n in self.graph_nodes if n in down]
                frontier = [a for a in self.graph_nodes if a not in down and any(u in down for u in self._users[a])]
            self._plans[changed] = (frontier, run)
        return self._plans[changed]

    def _fill(self, k: int, nodes: list) -> None:
        """Compute missing cached values of ``nodes`` for chunk ``k`` with the reference weights."""
        missing = [n for n in nodes if n.op != "placeholder" and (n not in self._cache or self._cache[n][k] is None)]
        if not missing:
            return
        needed, stack = set(missing), list(missing)
        while stack:  # ancestors of the missing nodes
            for a in stack.pop().all_input_nodes:
                if a not in needed:
                    needed.add(a)
                    stack.append(a)
        env = {}
        for n in self.graph_nodes:
            if n not in needed:
                continue
            if n.op == "placeholder":
                env[n] = self.chunks[k][0]
            elif n in self._cache and self._cache[n][k] is not None:
                env[n] = self._cache[n][k]
            else:
                self._interp.env = env
                env[n] = self._interp.run_node(n)
        for n in missing:
            self._cache.setdefault(n, [None] * len(self.chunks))[k] = env[n]

    # -- evaluation: sparse layer update, and keeping the best candidate's activations ------------
    def evaluate(self, candidate: Codes, early_reject: bool = False, z: float = 2.0) -> Evaluation:
        changes = changed_weights(self.state, self.reference, candidate)
        if not self.incremental or not changes:
            return super().evaluate(candidate, early_reject, z)
        # the cached activations this candidate would invalidate if it became the reference: record
        # its own values of them, so that accepting it costs no re-computation
        keep = [] if self._clone_frontier else [n for n in self._plan(frozenset(changes))[1] if n in self._cache]
        self._collect = {n: [None] * len(self.chunks) for n in keep} if keep else None
        try:
            name = next(iter(changes)) if len(changes) == 1 else None
            if (name not in self._sparse_layers
                    or len(changes[name][0]) > self.sparse_max_share * self.state.layers[name].codes.numel()):
                result = super().evaluate(candidate, early_reject, z)
            else:
                self.evaluations += 1
                idx, new = changes[name]
                old = self.reference[name].reshape(-1)[idx]
                d = decode_at(self.state, name, idx, new) - decode_at(self.state, name, idx, old)
                self._sparse_now = (name, idx, d)
                try:  # the model keeps the reference weights: the changed layer's output is patched instead
                    result = self._run(changes, self.reference_eval.losses if early_reject else None, z)
                finally:
                    self._sparse_now = None
            collected = self._collect
        finally:
            self._collect = None
        if collected is not None and result.complete and (self._pending is None or result.fitness < self._pending[1]):
            self._pending = (candidate, result.fitness, collected)
        return result

    def set_reference(self, candidate: Codes, evaluation: Evaluation | None = None) -> None:
        pending = self._pending if self._pending is not None and self._pending[0] is candidate else None
        self._pending = None
        super().set_reference(candidate, evaluation)
        if pending is not None:  # the new reference's activations were computed when it was evaluated
            self._cache.update(pending[2])

    def _channel_major(self, k: int, name: str) -> torch.Tensor:
        """Layer ``name``'s input on chunk ``k``, zero-padded for a conv, laid out channel-major
        (C_in, N, H_pad, W_pad) or (in_features, rows) so one input channel is one contiguous block;
        cached like the activations (and invalidated with them)."""
        node, inp = self._sparse_layers[name]
        m = self.model.get_submodule(name)
        pad = None if isinstance(m, nn.Linear) else tuple(m.padding)  # layers sharing an input may pad it differently
        slot = self._channel_cache.setdefault((inp, pad), [None] * len(self.chunks))
        if slot[k] is None:
            self._fill(k, [inp])
            x = self.chunks[k][0] if inp.op == "placeholder" else self._cache[inp][k]
            if pad is None:
                slot[k] = x.reshape(-1, x.shape[-1]).t().contiguous()
            else:
                ph, pw = m.padding
                slot[k] = F.pad(x, (pw, pw, ph, ph)).transpose(0, 1).contiguous()
        return slot[k]

    def _sparse_output(self, k: int, name: str, idx: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Output of layer ``name`` on chunk ``k`` with the weights at flat ``idx`` changed by ``d``:
        the cached reference output plus the changed weights' contribution, computed channel-major
        (a gathered input channel is a contiguous block) in O(changes x output positions)."""
        node, _ = self._sparse_layers[name]
        self._fill(k, [node])
        ref = self._cache[node][k]
        xc = self._channel_major(k, name)
        m = self.model.get_submodule(name)
        w_shape = m.weight.shape
        idx, d = idx.to(xc.device), d.to(xc.device, xc.dtype)
        if isinstance(m, nn.Linear):
            delta = torch.zeros(w_shape[0], xc.shape[1], device=xc.device, dtype=xc.dtype)   # (out, rows)
            delta.index_add_(0, idx // w_shape[1], xc.index_select(0, idx % w_shape[1]) * d[:, None])
            return ref + delta.t().reshape(ref.shape)
        c_in_g, kh, kw = w_shape[1], w_shape[2], w_shape[3]
        co = idx // (c_in_g * kh * kw)
        rest = idx % (c_in_g * kh * kw)
        ci = (co // (m.out_channels // m.groups)) * c_in_g + rest // (kh * kw)
        ki, kj = (rest % (kh * kw)) // kw, rest % kw
        n, h_out, w_out = ref.shape[0], ref.shape[2], ref.shape[3]
        (sh, sw), (dh, dw) = m.stride, m.dilation
        delta = torch.zeros(w_shape[0], n, h_out, w_out, device=xc.device, dtype=xc.dtype)  # (C_out, N, H', W')
        offset = ki * kw + kj
        for o in torch.unique(offset).tolist():  # one shifted window of the input per kernel offset
            sel = (offset == o).nonzero().squeeze(1)
            i, j = (o // kw) * dh, (o % kw) * dw
            win = xc.index_select(0, ci[sel])[:, :, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw]
            delta.index_add_(0, co[sel], win * d[sel].reshape(-1, 1, 1, 1))
        return ref + delta.transpose(0, 1)

    def _forward_chunk(self, k: int, changed: frozenset):
        if not self.incremental:
            return self.model(self.chunks[k][0])
        frontier, run = self._plan(changed)
        self._fill(k, frontier)
        env = {n: (self.chunks[k][0] if n.op == "placeholder" else self._cache[n][k]) for n in frontier}
        if self._clone_frontier:  # the graph has in-place functional ops: protect the cache
            env = {n: v.clone() if isinstance(v, torch.Tensor) else v for n, v in env.items()}
        out = None
        if self._sparse_now is not None:  # the changed layer's output is patched, not re-run
            name, idx, d = self._sparse_now
            node = self._sparse_layers[name][0]
            out = env[node] = self._sparse_output(k, name, idx, d)
            run = [n for n in run if n is not node]
        self._interp.env = env
        for n in run:
            out = env[n] = self._interp.run_node(n)
        if self._collect is not None:
            for n, values in self._collect.items():
                values[k] = env[n]
        elif not changed and not self._clone_frontier:  # the reference itself: keep what candidates need
            for n in self._warm:
                if n in env:
                    self._cache.setdefault(n, [None] * len(self.chunks))[k] = env[n]
        return out

    def _invalidate(self, changed: frozenset) -> None:
        if self.incremental and changed:
            down = self._downstream(changed)
            for n in down:
                self._cache.pop(n, None)
            for key in [key for key in self._channel_cache if key[0] in down]:
                del self._channel_cache[key]
