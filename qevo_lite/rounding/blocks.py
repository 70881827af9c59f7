"""A network cut into blocks: pieces of its graph with one tensor in and one out, each holding whole layers.

Block reconstruction (:mod:`.block_reconstruction`) rounds a block's layers together against the block's FP32
output. The cut is made on the ``torch.fx`` graph of the BN-folded model (:func:`~qevo_lite.quant.fold.fold_batchnorm`
returns one when the model traces), so functional forwards and residual additions are seen as they run.

**Where the simple rule cuts** (:func:`find_blocks`): only at points of the graph where exactly one activation is
alive (no skip connection crosses the point), and of those only

* after a pooling op (a VGG stage is the layers between two poolings),
* after a join (an addition, concatenation or product of two activations: the end of a residual block),
* between two layers under different top-level modules (``features`` / ``classifier``, ``backbone`` / ``head``,
  ``encoder`` / ``decoder``).

On the package's models that gives: VGG, its three stages and the classifier; ResNet, the stem, each residual block
and the classifier; the detectors, their stages or residual blocks and the head; the autoencoder, the encoder and
the decoder. A network with a skip connection over its whole length (a U-Net) is one block. Name your own blocks
with module-name prefixes instead (:func:`group_by_prefixes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

POOLING = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
           nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
           nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


@dataclass
class Block:
    """One block: its ``name`` (the layers' common module prefix, or ``first..last``), its ``layers`` (qualified
    names, graph order) and ``module``, a ``GraphModule`` of the block's part of the graph: one tensor in (what
    enters the block), the block's output out (the model's own output for the last block). Its submodules are the
    model's own (shared, under their qualified names), so ``functional_call(block.module, {f"{layer}.weight": w})``
    runs the block with other weights."""

    name: str
    layers: tuple
    module: fx.GraphModule


def _is_pooling(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), POOLING)
    return node.op in ("call_function", "call_method") and "pool" in getattr(node.target, "__name__", str(node.target))


def _is_join(node: fx.Node) -> bool:
    """Two or more activations meet (``x + shortcut``, ``torch.cat([a, b])``, ``a * b``)."""
    return node.op in ("call_function", "call_method") and \
        sum(n.op != "get_attr" for n in node.all_input_nodes) >= 2


def _single_live(nodes: list) -> list[bool]:
    """For each node, whether right after it exactly one activation (a node other than a parameter) is alive, i.e.
    still has a user further on: a place where the graph can be cut into one tensor in, one out."""
    index = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((index[u] for u in n.users), default=index[n]) for n in nodes}
    out = []
    for i in range(len(nodes)):
        live = sum(1 for n in nodes[:i + 1] if n.op != "get_attr" and last_use[n] > i)
        out.append(live == 1)
    return out


def _graph(model: nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    return fx.symbolic_trace(model)   # raises for a forward fx cannot trace; the caller falls back


def _layer_nodes(gm: fx.GraphModule, layers) -> dict:
    found = {n.target: i for i, n in enumerate(gm.graph.nodes) if n.op == "call_module" and n.target in set(layers)}
    missing = [l for l in layers if l not in found]
    if missing:
        raise ValueError(f"Layers {missing} are not called as modules in the traced graph (used twice or not at all?).")
    return found


def find_blocks(model: nn.Module, layers) -> list[tuple[str, ...]]:
    """The simple rule of the module docstring: ``layers`` (qualified names of the quantized layers) grouped into
    blocks, graph order. ``model``: a ``GraphModule`` or a module fx can trace."""
    gm = _graph(model)
    nodes = list(gm.graph.nodes)
    at = _layer_nodes(gm, layers)
    order = sorted(layers, key=at.get)
    live = _single_live(nodes)
    modules = dict(gm.named_modules())
    groups = [[order[0]]]
    for prev, nxt in zip(order, order[1:]):
        between = range(at[prev], at[nxt])
        cut = any(live[i] and (_is_pooling(nodes[i], modules) or _is_join(nodes[i])) for i in between) or (
            prev.split(".")[0] != nxt.split(".")[0] and any(live[i] for i in between))
        if cut:
            groups.append([nxt])
        else:
            groups[-1].append(nxt)
    return [tuple(g) for g in groups]


def group_by_prefixes(layers, prefixes) -> list[tuple[str, ...]]:
    """``layers`` (graph order) grouped by the first of ``prefixes`` (module names, e.g. ``"features"`` or
    ``"stages.1"``) each falls under; a layer under none is a block of its own. ValueError when a prefix's
    layers are not consecutive in graph order (a block must be one piece of the graph)."""
    def owner(layer):
        return next((p for p in prefixes if layer == p or layer.startswith(p + ".")), layer)

    groups, seen = [], set()
    for layer in layers:
        key = owner(layer)
        if groups and owner(groups[-1][-1]) == key:
            groups[-1].append(layer)
            continue
        if key in seen:
            raise ValueError(f"The layers under {key!r} are not consecutive in graph order; a block must be one "
                             "piece of the graph.")
        seen.add(key)
        groups.append([layer])
    return [tuple(g) for g in groups]


def _block_name(layers, all_layers) -> str:
    """The layers' common module prefix when they are all the layers under it, else ``first..last``."""
    if len(layers) == 1:
        return layers[0]
    common = []
    for level in zip(*(l.split(".") for l in layers)):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    prefix = ".".join(common)
    under = [l for l in all_layers if l.startswith(prefix + ".")] if prefix else None
    return prefix if under == list(layers) else f"{layers[0]}..{layers[-1]}"


def cut_blocks(model: nn.Module, groups) -> list[Block]:
    """The blocks of ``groups`` (tuples of layer names, graph order, e.g. from :func:`find_blocks`) as pieces of
    ``model``'s graph. The cut between two groups is the last single-live point before the next group's first
    layer (so a pooling or flatten after a block belongs to it); two groups with no such point between them are
    merged (a skip connection spans them). Nodes before the first layer belong to the first block, the output to
    the last. ValueError for a model with more than one input."""
    gm = _graph(model)
    nodes = list(gm.graph.nodes)
    if sum(n.op == "placeholder" for n in nodes) != 1:
        raise ValueError("Block reconstruction needs a model with one input tensor.")
    at = _layer_nodes(gm, [l for g in groups for l in g])
    live = _single_live(nodes)
    merged, cuts = [list(groups[0])], []
    for g in groups[1:]:
        points = [i for i in range(at[merged[-1][-1]], at[g[0]]) if live[i]]
        if points:
            cuts.append(points[-1])
            merged.append(list(g))
        else:
            merged[-1].extend(g)
    bounds = [-1] + cuts + [len(nodes) - 1]
    every = [l for g in merged for l in g]
    return [Block(_block_name(g, every), tuple(g), _subgraph(gm, nodes, bounds[k] + 1, bounds[k + 1]))
            for k, g in enumerate(merged)]


def _subgraph(gm: fx.GraphModule, nodes: list, first: int, last: int) -> fx.GraphModule:
    """``nodes[first..last]`` as a GraphModule: one input (what is alive before ``first``, or the model's input),
    one output (``nodes[last]``'s value, or the model's output when ``last`` is the output node)."""
    graph = fx.Graph()
    env = {}
    if nodes[first].op != "placeholder":
        (entry,) = [n for n in nodes[:first] if n.op != "get_attr" and any(nodes.index(u) >= first for u in n.users)]
        env[entry] = graph.placeholder("x")
    for n in nodes[:first]:
        if n.op == "get_attr" and any(first <= nodes.index(u) <= last for u in n.users):
            env[n] = graph.node_copy(n, env.__getitem__)
    for n in nodes[first:last + 1]:
        env[n] = graph.node_copy(n, env.__getitem__)
    if nodes[last].op != "output":
        graph.output(env[nodes[last]])
    return fx.GraphModule(gm, graph)

