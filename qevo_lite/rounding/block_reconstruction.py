"""Block reconstruction (after BRECQ: Li et al., 2021, "BRECQ: Pushing the Limit of Post-Training Quantization by
Block Reconstruction") on a fixed grid.

AdaRound (:mod:`.adaround`) fits each layer's relaxed up/down choices to that layer's FP32 output; here the
relaxed choices of all layers of a block (:mod:`.blocks`: a VGG stage, a residual block, a detector's head, an
autoencoder's encoder or decoder) are fitted together to the block's FP32 output, so a layer can compensate errors
of the others in its block, and the error is weighted by how much the task loss cares about each output element:

    mean over images and output elements of  f * (block(x; W_soft) - y)^2
    + lambda * sum over the block's weights of (1 - |2 h(v) - 1|^beta),

``f = g^2 / mean(g^2)``, ``g`` the gradient of the per-image task loss with respect to the block's FP32 output (the
diagonal of the Fisher information that BRECQ uses, scaled to mean 1 so that ``lambda`` and the learning rate mean
what they mean for AdaRound with the output error averaged: ``reduction="mean"``). ``fisher=False``: ``f = 1``.
Blocks are fitted in graph order; a block's inputs ``x`` come from the blocks before it already rounded, its
targets ``y`` from the FP32 model. Needs a model ``torch.fx`` can trace; for one it cannot, each layer is its own
block, fed through hooks (AdaRound with the Fisher weights left out), with a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..core.data import Split
from ..core.streaming import in_memory
from ..evaluators.base import resolve_loss
from ..quant.grid import QuantState
from ..quant.layout import from_rows
from .adaround import RelaxedCodes, adaround, annealed_beta
from .blocks import Block, cut_blocks, find_blocks, group_by_prefixes
from .layers import grid_of
from .problem import RoundingProblem


def model_blocks(fmodel: nn.Module, layers, prefixes=None) -> list[Block]:
    """``fmodel``'s blocks over the quantized ``layers`` (graph order): grouped by module-name ``prefixes`` when
    given, else by the simple rule (:func:`~.blocks.find_blocks`)."""
    groups = group_by_prefixes(layers, prefixes) if prefixes else find_blocks(fmodel, layers)
    return cut_blocks(fmodel, groups)


@torch.no_grad()
def _run(block: Block, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([block.module(x[i:i + batch_size].clone()) for i in range(0, len(x), batch_size)])


def fisher_weights(blocks: list[Block], x: torch.Tensor, targets: torch.Tensor, loss_fn,
                   batch_size: int = 128) -> list[torch.Tensor]:
    """Per block, the squared gradient of the per-image task loss ``loss_fn(outputs, targets) -> (n,)`` with
    respect to the block's FP32 output, for every image of ``x`` (shaped like the block's outputs, (N, ...)),
    divided by its mean (a block whose gradients are all zero gets ones). Only blocks with one tensor out."""
    grads = [[] for _ in blocks]
    for i in range(0, len(x), batch_size):
        h = x[i:i + batch_size].clone()
        outs = []
        with torch.enable_grad():
            for block in blocks:
                h = block.module(h.clone() if outs else h)
                outs.append(h)
            loss = loss_fn(h, targets[i:i + batch_size]).sum()
            for k, g in enumerate(torch.autograd.grad(loss, outs)):
                grads[k].append(g.detach().pow(2))
    weights = []
    for g in grads:
        g = torch.cat(g)
        mean = g.mean()
        weights.append(g / mean if mean > 0 else torch.ones_like(g))
    return weights


def reconstruct_block(block: Block, state: QuantState, inputs: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor | None, steps: int = 1000, batch_size: int = 64, lam: float = 0.01,
                      beta: tuple = (20.0, 2.0), warmup: float = 0.2, lr: float = 0.1,
                      generator: torch.Generator | None = None) -> dict:
    """The codes ``{layer: float tensor, rows layout}`` of ``block``'s layers, fitted together to the block's FP32
    output ``targets`` (N, ...) on its ``inputs`` (N, ...), the squared error weighted by ``weights`` (like
    ``targets``; None: unweighted), with AdaRound's relaxation and regulariser (:class:`~.adaround.RelaxedCodes`)
    on ``state``'s grid: ``steps`` Adam steps at learning rate ``lr`` on batches of ``batch_size``. The fit runs
    on the inputs' device (the GPU when the model is there); the codes come back on the state's."""
    relaxed, dev = {}, inputs.device
    for name in block.layers:
        lq = state.layers[name]
        scale, zp = grid_of(lq)
        relaxed[name] = RelaxedCodes(lq.weight.to(dev), scale.to(dev), zp.to(dev), lq.qmin, lq.qmax)
    layers = {name: block.module.get_submodule(name) for name in block.layers}
    opt = torch.optim.Adam([r.v for r in relaxed.values()], lr=lr)
    g = generator or torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=g)
        params = {f"{name}.weight": r.soft_weight(layers[name]) for name, r in relaxed.items()}
        err = (functional_call(block.module, params, (inputs[idx],)) - targets[idx]).pow(2)
        loss = (err * weights[idx]).mean() if weights is not None else err.mean()
        b = annealed_beta(step, steps, warmup, beta)
        if b is not None:
            loss = loss + lam * sum(r.regulariser(b) for r in relaxed.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {name: r.hard_codes().to(state.layers[name].codes.device) for name, r in relaxed.items()}


def block_reconstruction(fmodel: nn.Module, state: QuantState, search: Split, loss="cross_entropy",
                         samples: int = 1024, steps: int = 1000, batch_size: int = 64, lam: float = 0.01,
                         beta: tuple = (20.0, 2.0), lr: float = 0.1, fisher: bool = True, blocks=None,
                         seed: int = 0, progress: bool = False) -> tuple[QuantState, list[tuple]]:
    """The state with every block's codes chosen by block reconstruction (module docstring), and the blocks used
    (tuples of layer names). ``samples`` search images (and their targets for ``loss``, a name of
    :data:`~qevo_lite.evaluators.base.LOSSES` or a per-image callable) give the blocks' inputs, targets and Fisher
    weights; ``blocks``: module-name prefixes naming the blocks (None: the simple rule); ``seed`` draws batches."""
    layers = list(state.layers)
    try:
        cut = model_blocks(fmodel, layers, blocks)
    except Exception as exc:   # noqa: BLE001 - any tracing failure means "use the layer-wise fallback"
        warnings.warn(f"Block reconstruction could not cut {type(fmodel).__name__} into blocks ({type(exc).__name__}: "
                      f"{exc}); rounding layer by layer instead (AdaRound at the same settings, no Fisher weights).",
                      stacklevel=2)
        return adaround(fmodel, state, search, samples, steps, batch_size, lam, beta, seed, lr, "mean"), \
            [(l,) for l in layers]
    fitted = in_memory(search, samples)     # the blocks' inputs are revisited every step: held in memory
    device = next(fmodel.parameters()).device   # fit where the model is (the GPU when it is there)
    x = fitted.x.to(device)
    weights = None
    if fisher:
        spec = resolve_loss(loss)
        weights = fisher_weights(cut, x, spec.targets(fitted).to(device), spec.fn)
    g = torch.Generator().manual_seed(seed)
    codes = state.codes()
    x_q, x_f = x, x
    bar = _progress(cut, progress)
    for k, block in enumerate(bar):
        targets = _run(block, x_f)
        with torch.enable_grad():
            chosen = reconstruct_block(block, state, x_q, targets, None if weights is None else weights[k], steps,
                                       batch_size, lam, tuple(beta), lr=lr, generator=g)
        codes.update({name: c.to(torch.int16) for name, c in chosen.items()})
        params = {f"{name}.weight": _decoded(state, name, chosen[name], block.module.get_submodule(name)).to(device)
                  for name in block.layers}
        with torch.no_grad():
            x_q = torch.cat([functional_call(block.module, params, (x_q[i:i + 256].clone(),))
                             for i in range(0, len(x_q), 256)])
        x_f = targets
    return state.with_codes(codes), [b.layers for b in cut]


def _decoded(state: QuantState, name: str, codes: torch.Tensor, module: nn.Module) -> torch.Tensor:
    scale, zp = grid_of(state.layers[name])
    return from_rows(scale * (codes - zp), module)


def _progress(blocks, show: bool):
    if not show:
        return blocks
    from tqdm.auto import tqdm
    return tqdm(blocks, desc="block reconstruction", unit="block", leave=False)


@dataclass(frozen=True)
class BlockReconstructionConfig:
    """Block reconstruction's settings (see :func:`block_reconstruction`): ``samples`` search images, ``steps``
    Adam steps per block on batches of ``batch_size`` at learning rate ``lr``, regulariser weight ``lam`` with
    ``beta`` annealed from ``beta[0]`` to ``beta[1]``, the output error weighted by the Fisher diagonal
    (``fisher``) or not, ``blocks`` as module-name prefixes (empty: the simple rule of :mod:`.blocks`)."""

    samples: int = 1024
    steps: int = 1000
    batch_size: int = 64
    lam: float = 0.01
    beta: tuple = (20.0, 2.0)
    lr: float = 0.1
    fisher: bool = True
    blocks: tuple = ()

    @classmethod
    def for_quantize(cls, samples: int, budget: int, adaround_steps: int) -> "BlockReconstructionConfig":
        """The config ``qv.quantize``'s size arguments ask for (AdaRound's images and steps)."""
        return cls(samples=4 * samples, steps=adaround_steps)

    def describe(self, samples: str) -> str:
        weighting = "weighted by the Fisher diagonal" if self.fisher else "unweighted"
        where = f"blocks {', '.join(self.blocks)}" if self.blocks else "blocks by the simple rule"
        return (f"block reconstruction ({where}; {self.steps:,} Adam steps per block at learning rate {self.lr:g}, "
                f"batch {self.batch_size} of {self.samples:,} search {samples}, output error {weighting}, "
                f"beta {self.beta[0]:g} -> {self.beta[1]:g}, lambda {self.lam:g}; its seed draws the batches)")


def round_blocks(problem: RoundingProblem, config: BlockReconstructionConfig):
    """``(state, blocks)``: block reconstruction's codes on the problem's grid and the blocks it used."""
    return block_reconstruction(problem.fmodel, problem.start_state, problem.search, loss=problem.loss,
                                samples=config.samples, steps=config.steps, batch_size=config.batch_size,
                                lam=config.lam, beta=tuple(config.beta), lr=config.lr, fisher=config.fisher,
                                blocks=tuple(config.blocks) or None, seed=problem.seed, progress=problem.progress)
