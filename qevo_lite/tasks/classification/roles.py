"""The roles of a classifier's layers (stem, block conv, shortcut, classifier), for notebook 04: which batch-norm was
folded into which conv (the shortcut branches' included), and sensitivity and moved weights summed per role.

Roles come from the layer names of the package's models (:mod:`qevo_lite.core.models`): a ResNet has ``stem.*``,
``stages.<s>.<b>.conv1/conv2`` and ``stages.<s>.<b>.shortcut.*`` (the 1x1 conv of a block that changes shape), a
VGG ``features.*``; the last Linear layer is the classifier.
"""
from __future__ import annotations

import torch

from ...experiment.context import Context
from ...experiment.pretrained import load_pretrained

ROLES = ("stem", "block conv", "shortcut", "classifier")


def layer_role(name: str, classifier: str) -> str:
    """The role of layer ``name`` (``classifier``: the name of the model's last layer)."""
    if name == classifier:
        return "classifier"
    if name.startswith("stem"):
        return "stem"
    if ".shortcut." in f"{name}.":
        return "shortcut"
    return "block conv"


def folded_pairs(model: torch.nn.Module) -> dict[str, str]:
    """``{batch-norm: the conv it follows}`` in ``model`` (unfolded, traced with torch.fx): the pairs
    :func:`~qevo_lite.quant.fold.fold_batchnorm` merges."""
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], torch.nn.BatchNorm2d):
            src = node.args[0]
            if src.op == "call_module" and isinstance(modules[src.target], torch.nn.Conv2d):
                pairs[node.target] = src.target
    return pairs


def print_folding(ctx: Context, arch: str, images: int = 256) -> dict[str, str]:
    """Print which batch-norm was folded into which conv (role in brackets) and the largest difference of the
    logits of the model with its batch-norms and the folded one on ``images`` search images; return the pairs."""
    data = ctx.profile.data
    original, _ = load_pretrained(ctx.task, arch, data.dataset, directory=ctx.checkpoint_dir,
                                  epochs=data.train_epochs, seed=data.split_seed, splits=ctx.splits, progress=False)
    fmodel, _ = ctx.model(arch)
    original = original.to(ctx.device).eval()
    pairs = folded_pairs(original)
    last = [n for n, m in fmodel.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][-1]
    print(f"{len(pairs)} batch-norms folded into the conv before them:")
    for bn, conv in pairs.items():
        print(f"  {bn:24s} -> {conv:24s} ({layer_role(conv, last)})")
    left = [n for n, m in fmodel.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    print(f"batch-norms left in the folded model: {len(left)}")
    x = ctx.search.x[:images].to(ctx.device)
    with torch.no_grad():
        diff = (original(x) - fmodel(x)).abs().max().item()
    print(f"largest |logit difference|, with batch-norm vs folded, on {len(x)} search images: {diff:.1e}")
    return pairs


def role_table(sens: dict, sizes: dict, cells: list[dict]) -> dict[str, dict]:
    """Per role: layers, weights, summed sensitivity (search-loss increase with one layer rounded, summed over
    the role's layers) and the share of the role's weights the ES moved (seed mean over ``cells``, one bit
    width), printed; ``sens``/``sizes`` as :func:`~qevo_lite.tasks.classification.walk.sensitivity` returns."""
    last = list(sizes)[-1]
    out = {r: {"layers": 0, "weights": 0, "sensitivity": 0.0, "moved": 0.0} for r in ROLES}
    for name, size in sizes.items():
        role = out[layer_role(name, last)]
        role["layers"] += 1
        role["weights"] += size
        role["sensitivity"] += sens[name]
        role["moved"] += sum(c["moved"]["per_layer"][name]["moved"] for c in cells) / len(cells)
    print(f"{'role':12s} {'layers':>6s} {'weights':>8s} {'sensitivity':>12s} {'moved':>8s}")
    for name, r in out.items():
        if r["layers"]:
            r["share"] = r["moved"] / r["weights"]
            print(f"{name:12s} {r['layers']:6d} {r['weights']:8d} {r['sensitivity']:12.3f} {100 * r['share']:7.2f}%")
    return {k: v for k, v in out.items() if v["layers"]}
