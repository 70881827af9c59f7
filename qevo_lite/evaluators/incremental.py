"""The fast global evaluator: re-runs only the graph downstream of a candidate's changed layers
(see :class:`IncrementalEvaluator`)."""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..core.data import Split
from ..quant.grid import QuantState
from .base import Codes, Evaluation, changed_weights, decode_at
from .full import FullEvaluator


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

    A changed layer's downstream part starts at every node that uses its weight: its calls, calls of a
    module containing it (e.g. the ``out_proj`` Linear of an ``nn.MultiheadAttention``, which fx does
    not trace into) and reads of its parameters (``get_attr``).

    *Sparse layer update* (``sparse_update=True``, the default): when a candidate changes a few
    weights of a single Conv2d/Linear layer (the ES's usual mutation), the layer itself is not re-run
    either: its output is the cached reference output plus the contribution of the changed weights
    only, ``dO[:, o] = sum over changes (w_new - w_old) * shifted input channel i``, which costs
    O(changed weights x output positions) instead of O(all weights x output positions). Only the
    layers after it run. The result equals a full evaluation up to float rounding (a sum in another
    order: about 1e-7 relative); ``sparse_update=False`` gives results bit-identical to
    :class:`FullEvaluator`. Every other quantized layer (Conv1d/3d, transposed convs, a layer inside a
    module fx does not trace into, ...) is re-run with its changed weights, like the layers after it.
    """

    incremental = True
    # use the sparse update while changed weights < this share of the layer's weights
    sparse_max_share = 0.25

    def __init__(self, model: nn.Module, state: QuantState, search: Split, sparse_update: bool = True, **kwargs):
        model = original = copy.deepcopy(model)  # traced and modified below: never the caller's model
        if not isinstance(model, fx.GraphModule):
            try:
                model = fx.symbolic_trace(model)
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}); "
                              "IncrementalEvaluator falls back to full evaluation of every candidate.", stacklevel=2)
                self.incremental = False
        if self.incremental:  # tracing drops modules the forward never uses: keep the quantized ones (no effect)
            for name in state.layers:
                try:
                    model.get_submodule(name)
                except AttributeError:
                    model.add_submodule(name, original.get_submodule(name))
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
        exactly once in the graph on a single tensor input, its parameters read nowhere else."""
        calls: dict = {}
        read = {n.target for n in model.graph.nodes if n.op == "get_attr"}
        for n in model.graph.nodes:
            if n.op == "call_module" and n.target in state.layers:
                calls.setdefault(n.target, []).append(n)
        calls = {name: nodes for name, nodes in calls.items() if not any(t.startswith(name + ".") for t in read)}
        out = {}
        for name, nodes in calls.items():
            m = model.get_submodule(name)
            node = nodes[0]
            ok_conv = isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            if (len(nodes) == 1 and (ok_conv or isinstance(m, nn.Linear)) and len(node.args) == 1
                    and not node.kwargs and isinstance(node.args[0], fx.Node)):
                out[name] = (node, node.args[0])
        return out

    @staticmethod
    def _uses(node: fx.Node, layers) -> bool:
        """Whether ``node`` calls one of ``layers`` (or a module containing it) or reads its parameters."""
        if node.op not in ("call_module", "get_attr"):
            return False
        t = str(node.target)
        return any(t == name or t.startswith(name + ".") or name.startswith(t + ".") for name in layers)

    def _downstream(self, layers) -> set:
        start = [n for n in self.graph_nodes if self._uses(n, layers)]
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
                if not any(n.op == "output" for n in down):  # a layer not in the graph: run it all (correct)
                    down = {n for n in self.graph_nodes if n.op != "placeholder"}
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
