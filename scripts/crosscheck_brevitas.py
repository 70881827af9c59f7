"""Cross-check of our rounding peers (GPTQ, AdaRound) against Brevitas' GPTQ and learned round, on the same grid.

    OMP_NUM_THREADS=1 python scripts/crosscheck_brevitas.py [--steps 1000] [--archs vgg_small resnet_small]
                                                            [--bits 2 3] [--ablate]

Needs the ``crosscheck`` extra (``pip install -e ".[crosscheck]"``: Brevitas, and accelerate, which
Brevitas' learned-round trainer in ``brevitas_examples`` imports). For each fast-profile Fashion-MNIST model
and bit width it takes the RTN state of the experiments (``Context.rtn``), hands Brevitas a copy of the
BN-folded model whose Conv2d/Linear layers are Brevitas ``QuantConv2d``/``QuantLinear`` with weight-only
quantization on exactly that grid (per-output-channel constant scale = our scale; activations stay float),
runs Brevitas' GPTQ (``brevitas.graph.gptq.gptq_mode``) and Brevitas' layer-wise learned round
(``brevitas_examples.common.learned_round``: hard-sigmoid AdaRound, the trainer its ImageNet example uses)
with our settings, reads back the integer codes Brevitas chose, and prints held-out accuracies and wall
seconds next to ours. ``--ablate`` adds GPTQ variants (float64, act-order, damping, Hessian from float
inputs, more images, Brevitas' runtime-stats scale) that explain differences between the two GPTQs.

``brevitas_block_round`` runs the learned round in blockwise mode on blocks the caller cuts (the tests: our
block reconstruction's blocks).

The glue (``brevitas_model``, ``brevitas_codes``, ``brevitas_gptq``, ``brevitas_learned_round``) knows
nothing of ``qevo_lite`` beyond a state's ``layers[name].scale / qmin / qmax``; tests/test_crosscheck_brevitas.py
loads it from this file.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

import brevitas.nn as qnn
from brevitas.graph.gptq import GPTQ, gptq_mode
from brevitas.inject.enum import ScalingImplType
from brevitas.quant import Int8WeightPerChannelFloat
from brevitas_examples.common.learned_round.learned_round_args import (HandlerSpec, LossArgs, OptimizerArgs,
                                                                       TrainerConfig, TrainingArgs)
from brevitas_examples.common.learned_round.learned_round_method import LearnedRoundArgs
from brevitas_examples.common.learned_round.learned_round_trainer import LearnedRoundTrainer, get_blocks
from brevitas_examples.imagenet_classification.ptq.learned_round_utils import CacheVision, is_layer


# -- the grid ---------------------------------------------------------------------------------------------------
def grid_quantizer(scale: torch.Tensor, qmin: int, qmax: int, weight_dims: int, runtime_stats: bool = False):
    """A Brevitas weight quantizer on the grid ``qmin..qmax`` (symmetric, zero point 0) with the per-output-channel
    ``scale`` (C,) as a constant, so GPTQ's weight updates and learned round cannot move it.

    Brevitas' scale is ``threshold / int_threshold`` with ``int_threshold = -qmin`` (``2^(b-1)``, or ``2^(b-1)-1``
    for the narrow grid), so the constant threshold is ``scale * -qmin``; the division back is checked to give our
    float32 scale bit for bit (nudged by one ulp where it does not). ``runtime_stats``: Brevitas' own default
    quantizer instead (``Int8WeightPerChannelFloat`` at ``bits``, ``narrow_range`` for ``-qmin == qmax``): a
    per-channel absmax scale recomputed from the weight at every call. That equals our maxabs_full /
    maxabs_narrow scale on the float weight, but moves as GPTQ updates the weight, and inside Brevitas' GPTQ
    (which quantizes one sliced column at a time) it is the absmax of that column alone - Brevitas' examples
    freeze the scale (parameter from stats) before GPTQ for this reason; here it is only an ablation."""
    bits = (qmax - qmin).bit_length()
    narrow = qmin == -qmax
    if qmin != -(2 ** (bits - 1)) + narrow or qmax != 2 ** (bits - 1) - 1:
        raise ValueError(f"Only symmetric signed grids map onto Brevitas' Int quantizers, not {qmin}..{qmax}.")
    base = Int8WeightPerChannelFloat.let(bit_width=bits, narrow_range=narrow)
    if runtime_stats:
        return base
    t = float(-qmin)
    s = scale.detach().float().cpu()
    thr = s * t
    for _ in range(4):      # float32 (s * t) / t can miss s by one ulp when t is not a power of two
        off = thr / t != s
        if not off.any():
            break
        thr = torch.where(off, torch.nextafter(thr, torch.where(thr / t < s, thr + 1, thr - 1)), thr)
    shape = (-1,) + (1,) * (weight_dims - 1)
    return base.let(scaling_impl_type=ScalingImplType.CONST, scaling_init=thr.reshape(shape))


def brevitas_model(fmodel: nn.Module, state, runtime_stats: bool = False) -> nn.Module:
    """A copy of the float ``fmodel`` whose layers named in ``state.layers`` are Brevitas Quant layers on the
    state's grid (weights quantized, activations and biases float), everything else unchanged."""
    model = copy.deepcopy(fmodel).cpu().eval()
    for name, lq in state.layers.items():
        if lq.zero_point.any():
            raise ValueError(f"{name}: Brevitas' symmetric quantizers need zero points of 0.")
        old = model.get_submodule(name)
        quant = grid_quantizer(lq.scale, lq.qmin, lq.qmax, old.weight.dim(), runtime_stats)
        if isinstance(old, nn.Conv2d):
            new = qnn.QuantConv2d(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                                  padding=old.padding, dilation=old.dilation, groups=old.groups,
                                  bias=old.bias is not None, padding_mode=old.padding_mode, weight_quant=quant)
        elif isinstance(old, nn.Linear):
            new = qnn.QuantLinear(old.in_features, old.out_features, bias=old.bias is not None, weight_quant=quant)
        else:
            raise TypeError(f"{name}: {type(old).__name__} has no Brevitas counterpart here.")
        with torch.no_grad():
            new.weight.copy_(old.weight)
            if old.bias is not None:
                new.bias.copy_(old.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new.eval())
    return model


def brevitas_codes(qmodel: nn.Module, names) -> tuple[dict, dict]:
    """``({layer: int16 codes}, {layer: float32 scale (C,)})`` that Brevitas' layers quantize their weights to."""
    codes, scales = {}, {}
    with torch.no_grad():
        for name in names:
            qw = qmodel.get_submodule(name).quant_weight()
            codes[name] = qw.int().to(torch.int16)
            scales[name] = qw.scale.detach().reshape(-1).float()
    return codes, scales


# -- Brevitas' GPTQ ---------------------------------------------------------------------------------------------
class _DampedGPTQ(GPTQ):
    """Brevitas' GPTQ with a chosen damping (``gptq_mode.update`` calls ``single_layer_update()`` with 0.01)."""

    percdamp = 0.01

    def single_layer_update(self, percdamp=None, c=1e4):
        return super().single_layer_update(self.percdamp if percdamp is None else percdamp, c)


def brevitas_gptq(qmodel: nn.Module, x: torch.Tensor, damp: float = 0.01, act_order: bool = False,
                  float_inputs: bool = False, dtype: torch.dtype = torch.float32, batch_size: int = 256) -> nn.Module:
    """Brevitas' GPTQ on the Brevitas model ``qmodel`` (in place) with calibration images ``x``: one layer at a
    time in execution order, its Hessian from the inputs it gets in the model whose earlier layers already
    carry their GPTQ weights (``float_inputs``: from the float model instead, weight quantization off
    while the Hessians are gathered). ``dtype``: of the model, the images and the Hessian (Brevitas' default
    float32; ours computes in float64); the model stays in it (read its codes before casting it back)."""
    cls = type("GPTQ", (_DampedGPTQ,), {"percdamp": damp})
    qmodel.to(dtype)
    x = x.to(dtype)
    with torch.no_grad(), gptq_mode(qmodel, act_order=act_order, use_quant_activations=False, gptq_class=cls,
                                    dtype=dtype) as g:
        for _ in range(g.num_layers):
            with _weight_quant_off(qmodel) if float_inputs else contextlib.nullcontext():
                for i in range(0, len(x), batch_size):
                    g.model(x[i:i + batch_size])
            g.update()
    return qmodel


@contextlib.contextmanager
def _weight_quant_off(qmodel):
    """Weight quantization off in every Brevitas layer (GPTQ's pre-forward hooks still collect the inputs)."""
    proxies = [m.weight_quant for m in qmodel.modules() if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    for p in proxies:
        p.disable_quant = True
    try:
        yield
    finally:
        for p in proxies:
            p.disable_quant = False


# -- Brevitas' learned round ------------------------------------------------------------------------------------
def brevitas_learned_round(qmodel: nn.Module, x: torch.Tensor, steps: int = 1000, batch_size: int = 64,
                           lam: float = 0.01, beta: tuple = (20, 2), warmup: float = 0.2, lr: float = 1e-3,
                           seed: int = 0, quiet: bool = True) -> nn.Module:
    """Brevitas' layer-wise learned round (AdaRound's hard sigmoid, its ``round_reg`` regulariser and an MSE
    summed over output channels, averaged over images and positions; Adam; batches of ``batch_size`` drawn
    with replacement from the layer's cached inputs - quantized model - and FP32 outputs) on ``qmodel`` in place.
    Settings as ours: no mixed precision, the last iterate (not the best batch loss), no lr schedule. ``quiet``:
    swallow the trainer's progress bars and prints."""
    config = TrainerConfig(
        training_args=TrainingArgs(
            optimizers_args=[OptimizerArgs(target_params="learned_round", optimizer_cls=torch.optim.Adam, lr=lr,
                                           optimizer_kwargs={})],
            batch_size=batch_size, iters=steps,
            losses_args=[LossArgs(cls="round_reg", kwargs={"weight": lam, "max_count": steps, "b_range": tuple(beta),
                                                           "warmup": warmup}),
                         LossArgs(cls="mse", kwargs={"reduction": "none", "dim": 1})],
            use_best_model=False, use_amp=False),
        training_handlers=[HandlerSpec(name="learned_round",
                                       config=LearnedRoundArgs(learned_round_param="hard_sigmoid",
                                                               learned_round_kwargs={}))])
    _train_learned_round(config, qmodel, x, functools.partial(get_blocks, block_check_fn=is_layer), seed, quiet)
    return qmodel.eval()


def _train_learned_round(config, model: nn.Module, x: torch.Tensor, get_blocks_fn, seed: int, quiet: bool) -> None:
    """Brevitas' learned-round trainer on ``model`` (blocks from ``get_blocks_fn(model)``), batches of ``x``."""
    loader = torch.utils.data.DataLoader(x, batch_size=256)
    sink = io.StringIO()
    with torch.random.fork_rng(devices=[]), \
            contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext(), \
            contextlib.redirect_stderr(sink) if quiet else contextlib.nullcontext():
        torch.manual_seed(seed)   # the trainer draws its batches from the global generator (restored afterwards)
        LearnedRoundTrainer(config=config).train(
            model=model, model_forward=lambda m, inp: m(inp), block_forward=lambda b, inp: b(inp),
            data_loader=loader, cache=CacheVision(), keep_gpu=True, get_blocks_fn=get_blocks_fn)


def brevitas_block_round(qmodel: nn.Module, x: torch.Tensor, blocks, steps: int = 1000, batch_size: int = 64,
                         lr: float = 0.1, seed: int = 0, quiet: bool = True) -> nn.Module:
    """Brevitas' learned round in blockwise mode on ``qmodel`` in place: ``blocks`` are ``torch.fx`` pieces of
    ``qmodel``'s graph sharing its Quant layers (one tensor in, one out, e.g. ``qevo_lite.rounding.blocks.cut_blocks``'
    ``.module`` s), chained in an ``nn.Sequential`` so that Brevitas' trainer caches each block's inputs (from the
    blocks before it, already rounded) and FP32 outputs and fits all of a block's rounding variables together
    to the block's output: AdaRound's hard sigmoid, the output error averaged over all elements (Brevitas' ``mse``
    without a reduction: our ``fisher=False``), Adam at ``lr``, each variable rounded at 0.5 at the end. Brevitas'
    rounding regulariser (``round_reg``) accepts a single layer only, so blockwise mode runs without one: compare
    with our block reconstruction at ``lam=0``."""
    config = TrainerConfig(
        training_args=TrainingArgs(
            optimizers_args=[OptimizerArgs(target_params="learned_round", optimizer_cls=torch.optim.Adam, lr=lr,
                                           optimizer_kwargs={})],
            batch_size=batch_size, iters=steps, losses_args=[LossArgs(cls="mse", kwargs={})],
            use_best_model=False, use_amp=False),
        training_handlers=[HandlerSpec(name="learned_round",
                                       config=LearnedRoundArgs(learned_round_param="hard_sigmoid",
                                                               learned_round_kwargs={}))])
    chain = nn.Sequential(*blocks)
    _train_learned_round(config, chain, x, lambda model: list(model.children()), seed, quiet)
    return qmodel.eval()


# -- the Fashion-MNIST comparison -------------------------------------------------------------------------------
def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def brevitas_state(fmodel, state, run, runtime_stats=False, **kw):
    """``(state with the codes Brevitas chose, whether Brevitas' scales are the state's, bit for bit)``
    after ``run(Brevitas copy of fmodel, **kw)``."""
    qmodel = brevitas_model(fmodel, state, runtime_stats=runtime_stats)
    run(qmodel, **kw)
    codes, scales = brevitas_codes(qmodel, list(state.layers))
    same = all(torch.equal(scales[n], lq.scale) for n, lq in state.layers.items())
    return state.with_codes(codes), same


COLS = ["RTN", "GPTQ ours", "GPTQ Brevitas", "AdaRound ours", "LearnedRound Brevitas"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", nargs="+", default=["vgg_small", "resnet_small"])
    ap.add_argument("--bits", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--steps", type=int, default=1000, help="AdaRound / learned-round steps per layer")
    ap.add_argument("--gptq-samples", type=int, default=256)
    ap.add_argument("--adaround-samples", type=int, default=1024)
    ap.add_argument("--ablate", action="store_true", help="also run the GPTQ variants that explain differences")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from qevo_lite.rounding.adaround import adaround
    from qevo_lite.rounding.gptq import gptq
    from qevo_lite.tasks import context

    ctx = context("classification", "fast", device="cpu")
    rows, ablations = [], []
    for arch in args.archs:
        fmodel, _ = ctx.model(arch)
        fmodel = fmodel.cpu().eval()
        fp32 = ctx.fp32(arch)["test"]["accuracy"]
        for bits in args.bits:
            rtn = ctx.rtn(arch, bits)
            state = rtn["state"]
            xg, xa = ctx.search.x[:args.gptq_samples], ctx.search.x[:args.adaround_samples]
            acc = lambda st: ctx.evaluate(st.to_model(fmodel), "test")["accuracy"]  # noqa: E731
            moved = lambda a, b: sum(a.moved(b).values()) / a.num_weights  # noqa: E731
            states, secs = {"RTN": state}, {"RTN": 0.0}
            states["GPTQ ours"], secs["GPTQ ours"] = _timed(lambda: gptq(fmodel, state, ctx.search,
                                                                         samples=args.gptq_samples, damp=0.01))
            (states["GPTQ Brevitas"], same_g), secs["GPTQ Brevitas"] = _timed(
                lambda: brevitas_state(fmodel, state, brevitas_gptq, x=xg, damp=0.01))
            states["AdaRound ours"], secs["AdaRound ours"] = _timed(
                lambda: adaround(fmodel, state, ctx.search, samples=args.adaround_samples, steps=args.steps,
                                 batch_size=64, lam=0.01, beta=(20, 2), seed=0))
            (states["LearnedRound Brevitas"], same_a), secs["LearnedRound Brevitas"] = _timed(
                lambda: brevitas_state(fmodel, state, brevitas_learned_round, x=xa, steps=args.steps, batch_size=64,
                                       lam=0.01, beta=(20, 2), seed=0))
            res = {k: acc(st) for k, st in states.items()}
            rows.append((arch, bits, rtn["rule"], fp32, res, secs, same_g and same_a,
                         moved(states["GPTQ ours"], states["GPTQ Brevitas"]),
                         moved(states["AdaRound ours"], states["LearnedRound Brevitas"])))
            print(f"{arch} W{bits} ({rtn['rule']}): " + ", ".join(f"{k} {res[k]:.4f} ({secs[k]:.0f}s)" for k in COLS)
                  + f"; grids identical: {same_g and same_a}", flush=True)
            if args.ablate:
                ablations += ablation(arch, bits, fmodel, state, ctx, xg, acc, moved, gptq, args.gptq_samples,
                                      states["GPTQ ours"], res["GPTQ ours"])

    print("\nHeld-out accuracy (%, Fashion-MNIST test, 5000 images) and wall seconds, 1 thread. GPTQ: "
          f"{args.gptq_samples} search images, damp 0.01, no act-order; AdaRound / learned round: {args.steps} steps "
          f"per layer, batch 64, lambda 0.01, beta 20->2, {args.adaround_samples} search images. Grid: the "
          "experiments' RTN state (best scale rule on the search split), per output channel.\n")
    head = "| model | W | rule | FP32 | " + " | ".join(COLS) + " | same grid | codes differing GPTQ / AdaRound |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for arch, bits, rule, fp32, res, secs, same, dg, da in rows:
        cells = " | ".join(f"{100 * res[k]:.2f}" + (f" ({secs[k]:.0f}s)" if k != "RTN" else "") for k in COLS)
        print(f"| {arch} | {bits} | {rule} | {100 * fp32:.2f} | {cells} | {'yes' if same else 'NO'} | "
              f"{100 * dg:.1f}% / {100 * da:.1f}% |")
    if ablations:
        print("\nGPTQ variants (held-out accuracy %; codes differing from our default GPTQ):\n")
        print("| model | W | variant | accuracy | vs ours | codes differing |")
        print("|---|---|---|---|---|---|")
        for arch, bits, label, a, d, m in ablations:
            print(f"| {arch} | {bits} | {label} | {100 * a:.2f} | {100 * d:+.2f} | {100 * m:.1f}% |")
    return 0


def ablation(arch, bits, fmodel, state, ctx, x, acc, moved, gptq, samples, ours, ours_acc):
    """GPTQ variants on both sides, to name the setting behind a difference between the two GPTQs."""
    out = []

    def row(label, st):
        a = acc(st)
        out.append((arch, bits, label, a, a - ours_acc, moved(st, ours)))
        print(f"    {label}: {a:.4f}", flush=True)

    row("Brevitas float64 (ours computes in float64)",
        brevitas_state(fmodel, state, brevitas_gptq, x=x, dtype=torch.float64)[0])
    row("Brevitas act-order", brevitas_state(fmodel, state, brevitas_gptq, x=x, act_order=True)[0])
    row("Brevitas Hessian from float inputs", brevitas_state(fmodel, state, brevitas_gptq, x=x, float_inputs=True)[0])
    row("Brevitas damp 0.1", brevitas_state(fmodel, state, brevitas_gptq, x=x, damp=0.1)[0])
    row("ours damp 0.1", gptq(fmodel, state, ctx.search, samples=samples, damp=0.1))
    row(f"ours {4 * samples} images", gptq(fmodel, state, ctx.search, samples=4 * samples))
    if state.config.scale_rule != "mse":
        # Brevitas' default quantizer: absmax scale recomputed at every call (see grid_quantizer); the grid moves,
        # so the Brevitas model is evaluated with its own scales
        qmodel = brevitas_gptq(brevitas_model(fmodel, state, runtime_stats=True), x)
        a = ctx.evaluate(qmodel, "test")["accuracy"]
        codes, scales = brevitas_codes(qmodel, list(state.layers))
        moved_scales = sum(int((scales[n] != lq.scale).sum()) for n, lq in state.layers.items())
        out.append((arch, bits, f"Brevitas runtime-stats scale ({moved_scales} channel scales moved)", a,
                    a - ours_acc, moved(state.with_codes(codes), ours)))
        print(f"    {out[-1][2]}: {a:.4f}", flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
