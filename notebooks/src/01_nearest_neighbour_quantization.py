# %% [markdown]
# # 01 · Nearest-neighbour quantization, and why it is not the last word
#
# {{colab_badge}}
#
# Post-training quantization stores every weight of a trained network as a small integer
# *code* on a uniform grid. The obvious way to pick the code is to round each weight to the
# nearest grid point (round-to-nearest, **RTN**). This notebook builds that baseline carefully
# and then questions it. You will learn:
#
# * what the grid is: bit width, step (the *scale*), codes, and the rounding error it causes;
# * why batch-norm is folded into the convolutions first, and that folding leaves the outputs unchanged;
# * per-tensor versus per-channel grids, and three rules for choosing the step;
# * how the held-out accuracy of a small VGG and a small ResNet falls as the bit width shrinks;
# * where the weights sit between two grid points (the rounding residuals);
# * the experiment that motivates the rest of the series: moving a handful of weights that sit
#   near a rounding boundary to their *other* neighbour can **raise** accuracy, so nearest
#   rounding is not the best assignment of weights to grid points.
#
# **Run time:** about 1-2 minutes on an idle 2-core CPU with the default `fast` profile (102 s when the committed
# outputs were made, 2026-12-05, on a 2-core AMD EPYC development machine without AVX-512, 77 s on a faster
# one; 58-93 s on the others; the last cell
# prints this run's time). Cores shared with other work slow it down,
# several times over with two busy processes on two cores.
# The `full` profile uses all test images and more trials.

# %% [markdown]
# ## Setup
#
# Everything comes from the helper package `qevo_lite`. In Colab (or any fresh environment)
# install it first; the cell below says how if it is missing.

# %%
# {{install_cell}}

# %%
import os

import matplotlib.pyplot as plt
import torch

from qevo_lite.notebook import setup
from qevo_lite import (QuantConfig, evaluate, fold_batchnorm, load_pretrained, load_splits,
                       quantizable_layers, quantize_model, quantize_tensor, SCALE_RULES)
from qevo_lite.quant import apply_flips, boundary_candidates, random_boundary_flips, rtn_table
from qevo_lite.viz import bit_width_explorer, quant_plots as plots

session = setup(threads=2, needs="this notebook")  # the committed outputs were computed with 2 threads
device = session.device

# %% [markdown]
# ## Parameters
#
# `profile="fast"` keeps the run to a couple of minutes on a laptop CPU (held-out accuracy on the
# first 5,000 test images, the same subset in every classification notebook); `profile="full"` uses the whole test split, every bit width
# and more flip trials. The environment variable `QEVO_PROFILE` overrides the default, and the
# cell is tagged `parameters` so papermill can override any value.

# %% tags=["parameters"]
profile = os.environ.get("QEVO_PROFILE", "fast")  # "fast" or "full"
bits = 3         # the low bit width of the histograms, residuals and the flip experiment
seed = 0         # seeds the flip experiment (the data split is fixed by the checkpoint)
n_flips = 8      # weights moved per flip trial

# %%
SPLIT_SEED = 0  # the data split the shipped checkpoints were trained against (train/search disjoint)
PROFILES = {
    "fast": dict(test_size=5000, search_size=1024, bits_list=(2, 3, 4, 5, 6, 8), flip_trials=200),
    "full": dict(test_size=None, search_size=2048, bits_list=(2, 3, 4, 5, 6, 7, 8), flip_trials=1000),
}
if profile not in PROFILES:
    raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
cfg = PROFILES[profile]
print(f"profile {profile!r}: {cfg}")

# %% [markdown]
# ## 1. Data and the pretrained models
#
# Fashion-MNIST, split three ways: `train` (used only to pretrain), `search` (drawn from the
# training images but never trained on; later notebooks let the evolution strategy optimise on
# it) and `test` (the official test split: reported, never used to choose anything).
# The two small pretrained models come from `qevo_lite/checkpoints` (sha256-checked). The split
# seed must be the one the checkpoint was trained with, otherwise search images could have been
# training images.

# %%
# the data first: a checkpoint that had to be retrained would be trained on these splits
splits = load_splits("fashion_mnist", seed=SPLIT_SEED)
vgg, vgg_entry = load_pretrained("vgg_small", splits=splits)
resnet, resnet_entry = load_pretrained("resnet_small", splits=splits)
assert vgg_entry["split_seed"] == resnet_entry["split_seed"] == SPLIT_SEED
search = splits.search.subset(cfg["search_size"])
test = splits.test if cfg["test_size"] is None else splits.test.subset(cfg["test_size"])
vgg, resnet = vgg.to(device), resnet.to(device)
print(f"train {len(splits.train)}, search {len(search)} (of {len(splits.search)}), test {len(test)} images; "
      f"{splits.num_classes} classes")

# %% [markdown]
# ## 2. Fold batch-norm first
#
# Each convolution is followed by batch-norm, which at inference is just a per-channel affine map
# `y = gamma * (x - mean) / sqrt(var + eps) + beta`. It can be folded into the preceding conv:
# multiply output channel `c` of the weight by `gamma_c / sqrt(var_c + eps)` and adjust the bias.
# Quantizing *before* folding would choose the grid for weights that are rescaled afterwards,
# so we always fold first (`fold_batchnorm` uses torch's own fusion helpers). The folded network
# computes the same function, as the assert checks.

# %%
# NBVAL_CHECK_OUTPUT
def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())

folded = {"VGG": fold_batchnorm(vgg), "ResNet": fold_batchnorm(resnet)}
x = test.x[:256].to(device)
max_diff = 0.0
for name, original in (("VGG", vgg), ("ResNet", resnet)):
    with torch.no_grad():
        before, after = original.eval()(x), folded[name](x)
    max_diff = max(max_diff, (before - after).abs().max().item())
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4), max_diff
    assert torch.equal(before.argmax(1), after.argmax(1))
    print(f"{name:6s}: BatchNorm layers {count(original, torch.nn.BatchNorm2d)} -> "
          f"{count(folded[name], torch.nn.BatchNorm2d)}, quantizable layers "
          f"{len(quantizable_layers(folded[name]))}, same predictions on 256 images: True")

# %% [markdown]
# The largest difference between the logits is float round-off (printed next, not checked, as
# it depends on the machine):

# %%
print(f"max |logit difference| after folding: {max_diff:.1e}")
vgg_f, resnet_f = folded["VGG"], folded["ResNet"]
fp32 = {"VGG": evaluate(vgg_f, test)["accuracy"], "ResNet": evaluate(resnet_f, test)["accuracy"]}

# %%
# NBVAL_CHECK_OUTPUT
for name, acc in fp32.items():
    print(f"FP32 {name:6s} test accuracy on {len(test)} images: {acc:.3f}")

# %% [markdown]
# ## 3. The grid and its step
#
# With `b` bits a weight is stored as an integer code `q` in `qmin..qmax` and decoded as
# `w_hat = scale * q` (symmetric grids have zero point 0). The **step** between two grid points is
# the scale. The `maxabs_full` rule uses the full signed range `-2^(b-1) .. 2^(b-1)-1` and
# `scale = max|w| / 2^(b-1)`. Nearest rounding is then
#
# `q = clamp(round(w / scale), qmin, qmax)`,
#
# so a weight inside the grid's range is off by at most half a step. Here is one layer of the VGG,
# by hand and with `quantize_tensor`:

# %%
layer = "features.3.0"                       # the second 3x3 conv of the VGG, after folding
w = vgg_f.get_submodule(layer).weight.detach().cpu()
config = QuantConfig(bits, granularity="per_tensor", scale_rule="maxabs_full")
qmin, qmax = config.grid()
scale = w.abs().max() / 2 ** (bits - 1)
codes_by_hand = torch.clamp(torch.round(w / scale), qmin, qmax)
codes, scale_lib, zero_point = quantize_tensor(w, config)
assert torch.equal(codes_by_hand.to(torch.int16), codes) and torch.isclose(scale, scale_lib[0])
error = w - scale * codes
inside = (codes > qmin) & (codes < qmax)
assert error[inside].abs().max() <= scale / 2 + 1e-7    # at most half a step inside the grid

# %%
# NBVAL_CHECK_OUTPUT
print(f"{layer}: {w.numel()} weights, {bits} bits -> codes {qmin}..{qmax} ({qmax - qmin + 1} levels), "
      f"step {scale.item():.4f}")
print("grid levels:", [round(v, 4) for v in (scale * torch.arange(qmin, qmax + 1)).tolist()])
print(f"largest rounding error inside the grid: {error[inside].abs().max().item() / scale.item():.3f} steps")
clipped = (w / scale > qmax + 0.5) | (w / scale < qmin - 0.5)
print(f"weights clipped (beyond the outer levels by more than half a step): {int(clipped.sum())}")
print("\n      w   w/step  code   w_hat")
for v, q in zip(w.reshape(-1)[:6].tolist(), codes.reshape(-1)[:6].tolist()):
    print(f"{v:7.4f} {v / scale.item():7.3f} {q:5d} {q * scale.item():7.4f}")

# %% [markdown]
# **What is quantized here, and what is not.** Only the *weights* of the Conv2d and Linear layers get codes.
# Activations, biases and the arithmetic stay in float: every code is decoded back to a float weight
# (`w_hat = scale * (q - zero_point)`) and the network runs as usual. This is *weight-only fake
# quantization*: it measures exactly what the rounding of the weights costs, and it is what an int-weight
# kernel computes up to its own float rounding. The storage saving is real, though: the export in section
# 6 packs the codes at `b` bits each.
#
# **Asymmetric grids.** A symmetric grid is centred on 0 (zero point 0). When a tensor's weights are mostly
# on one side of zero, half of its levels are wasted. An *asymmetric* grid uses the codes `0 .. 2^b - 1`
# over the range `[min(w, 0), max(w, 0)]`, with `scale = (max - min) / (2^b - 1)` and a **zero point**
# `zp = -round(min / scale)`, the code that decodes to exactly 0. The package has both
# (`QuantConfig(scheme="asymmetric")`); the series uses the symmetric one, as the paper does. On a
# layer's weights shifted to be mostly positive, the asymmetric grid keeps every level in use:

# %%
shifted = w - w.min() * 0.8                                   # mostly positive weights (like after a ReLU)
for scheme in ("symmetric", "asymmetric"):
    cfg_s = QuantConfig(bits, scheme=scheme, granularity="per_tensor", scale_rule="maxabs_full")
    q, sc, zp = quantize_tensor(shifted, cfg_s)
    err = (shifted - sc * (q.float() - zp.float())).pow(2).mean()
    print(f"{scheme:10s}: codes {q.min().item()}..{q.max().item()} used of {cfg_s.grid()}, zero point "
          f"{zp.item()}, step {sc.item():.4f}, weight MSE {err.item():.2e}")

# %% [markdown]
# ## 4. Per-tensor versus per-channel grids
#
# One grid for the whole tensor must span its largest weight, so output channels whose weights
# are small get only a few levels. A per-channel grid (one scale per output channel) fits each
# channel. The figure shows the output channel with the smallest weights, on the shared grid (left)
# and on its own grid (right).

# %%
per_tensor = quantize_model(vgg_f, QuantConfig(bits, granularity="per_tensor"))
per_channel = quantize_model(vgg_f, QuantConfig(bits, granularity="per_channel"))
channel = int(w.abs().amax(dim=(1, 2, 3)).argmin())
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True, layout="constrained")
plots.plot_weight_histogram(per_tensor.layers[layer], ax=axes[0], channel=channel, all_weights=False, bins=40)
plots.plot_weight_histogram(per_channel.layers[layer], ax=axes[1], channel=channel, bins=40)
fig.suptitle(f"{layer}, output channel {channel}, {bits} bits: shared grid vs its own grid");

# %% [markdown]
# Per layer, the squared weight error `sum (w - w_hat)^2` of the two granularities
# (`maxabs_full`, `bits` bits). Per channel is never worse here, as the assert checks:

# %%
def weight_error(state):
    return {n: float(((lq.weight - lq.dequantize()) ** 2).sum()) for n, lq in state.layers.items()}

err_t, err_c = weight_error(per_tensor), weight_error(per_channel)
assert all(err_c[n] <= err_t[n] for n in err_t)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'layer':14s} {'weights':>8s} {'per-tensor':>11s} {'per-channel':>12s}")
for n, lq in per_tensor.layers.items():
    print(f"{n:14s} {lq.codes.numel():8d} {err_t[n]:11.3f} {err_c[n]:12.3f}")

# %% [markdown]
# ## 5. Three rules for the step
#
# The step trades **resolution** (small steps) against **clipping** (weights beyond the last
# level are cut). `qevo_lite` implements three rules:
#
# * `maxabs_full`: full signed grid, `scale = max|w| / 2^(b-1)` (if the largest-magnitude weight is positive, it is
#   clipped by one step);
# * `maxabs_narrow`: drop the most negative code, `scale = max|w| / (2^(b-1)-1)`: nothing is clipped, but one level fewer;
#   at 2 bits that leaves only three levels, `-s, 0, +s`;
# * `mse`: full grid, the scale that minimises the squared weight error (searched per channel).
#
# At 2 bits the three rules put the levels in very different places:

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharex=True, layout="constrained")
rule_states = {r: quantize_model(vgg_f, QuantConfig(2, granularity="per_channel", scale_rule=r)) for r in SCALE_RULES}
for ax, (rule, st) in zip(axes, rule_states.items()):
    plots.plot_weight_histogram(st.layers[layer], ax=ax, channel=0, bins=30,
                                title=f"{rule}: {st.layers[layer].qmax - st.layers[layer].qmin + 1} levels")
fig.suptitle(f"{layer}, output channel 0, 2 bits per channel: where each rule puts the grid");

# %% [markdown]
# By construction the `mse` rule has the smallest weight error. Whether that also gives the best
# *accuracy* is a different question, answered in the next section.

# %%
total_err = {r: sum(weight_error(st).values()) for r, st in rule_states.items()}
assert total_err["mse"] <= min(total_err.values()) * (1 + 1e-6)

# %%
# NBVAL_CHECK_OUTPUT
for r, e in total_err.items():
    print(f"2 bits per channel, {r:13s}: total squared weight error {e:8.3f}")

# %% [markdown]
# ## 6. Accuracy against bit width
#
# `rtn_table` quantizes a model with every (granularity, scale rule) at each bit width and
# measures accuracy on the search split and on the held-out test split. The *baseline* for the
# rest of the series is the rule with the lowest **search** loss (marked `*` and circled in the
# plot); test accuracy is only reported. The next cell is the slowest of the notebook.

# %%
rows = {"VGG": rtn_table(vgg_f, search, test, bits_list=cfg["bits_list"]),
        "ResNet": rtn_table(resnet_f, search, test, bits_list=cfg["bits_list"])}

def show_table(name):
    print(f"{name}: test accuracy; C = per-channel, T = per-tensor, * = chosen by search loss; "
          f"FP32 {fp32[name]:.3f}")
    cols = [(g, r) for g in ("per_channel", "per_tensor") for r in SCALE_RULES]
    print("bits  " + " ".join(f"{g[4].upper()}:{r:<15s}" for g, r in cols))
    for b in cfg["bits_list"]:
        cells = []
        for g, r in cols:
            row = next(x for x in rows[name] if (x["bits"], x["granularity"], x["scale_rule"]) == (b, g, r))
            cells.append(f"{row['test_accuracy']:.3f}{'*' if row['chosen'] else ' '}".ljust(17))
        print(f"{b:4d}  " + " ".join(cells))

# %%
# NBVAL_CHECK_OUTPUT
show_table("VGG")
print()
show_table("ResNet")

# %%
for name in rows:
    plots.plot_rtn_vs_bits(rows[name], fp32_accuracy=fp32[name],
                                title=f"{name}: nearest rounding, test accuracy vs bit width ({len(test)} images)")

# %% [markdown]
# What the table says, checked by the asserts below:
#
# * at 8 bits the chosen baseline is within one percentage point of FP32, for both models;
# * at 2 bits per channel the choice of scale rule alone moves the VGG's held-out accuracy
#   over a wide range (printed below);
# * the rule with the smallest weight error (`mse`) is not the most accurate one at 2 bits:
#   weight error is only a proxy for what we care about.

# %%
def pick(name, **key):
    return [r for r in rows[name] if all(r[k] == v for k, v in key.items())]

for name in rows:
    chosen8 = pick(name, bits=8, granularity="per_channel", chosen=True)[0]
    assert abs(chosen8["test_accuracy"] - fp32[name]) <= 0.01, (name, chosen8)
two_bit = {r["scale_rule"]: r["test_accuracy"] for r in pick("VGG", bits=2, granularity="per_channel")}
assert max(two_bit.values()) - min(two_bit.values()) >= 0.2
assert two_bit["mse"] < max(two_bit.values())

# %%
# NBVAL_CHECK_OUTPUT
print("VGG, 2 bits per channel, test accuracy by scale rule: "
      + ", ".join(f"{r} {a:.3f}" for r, a in two_bit.items()) + f"  (FP32 {fp32['VGG']:.3f})")
for name in rows:
    for b in (2, bits, 8):
        c = pick(name, bits=b, granularity="per_channel", chosen=True)[0]
        print(f"{name:6s} {b} bits per channel, baseline rule {c['scale_rule']:13s}: "
              f"search {c['search_accuracy']:.3f}, test {c['test_accuracy']:.3f}")

# %% [markdown]
# **What the model really weighs.** `qevo_lite.quant.export.save_state` writes a quantized state as the codes
# bit-packed at `b` bits each, one float32 scale and one int16 zero point per output channel, and the float32
# biases; nothing is compressed, so the file size is the storage cost. Next to the FP32 weights and biases:

# %%
import tempfile
from pathlib import Path as _Path

from qevo_lite.quant import save_state

layers_f = quantizable_layers(vgg_f)
fp32_bytes = sum(4 * (m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)) for m in layers_f.values())
with tempfile.TemporaryDirectory() as tmp:
    sizes = {b: save_state(quantize_model(vgg_f, QuantConfig(b)), _Path(tmp) / f"vgg_w{b}.qevo", vgg_f)
             for b in sorted({2, 3, 4, 8, bits})}

# %%
# NBVAL_CHECK_OUTPUT
print(f"VGG quantized layers in FP32: {fp32_bytes:,} bytes")
for b, n in sizes.items():
    print(f"W{b} export (codes, per-channel scales and zero points, biases, header): {n:,} bytes "
          f"({fp32_bytes / n:.1f}x smaller)")

# %% [markdown]
# **The same model as a standard file.** The packed format above is this package's own. To run the quantized
# model outside PyTorch, `qevo_lite.export_onnx` writes ONNX with **integer weights**: each quantized layer keeps
# its codes as 4-bit integers (8-bit containers above W4), its per-channel scales and zero points, and a
# `DequantizeLinear` node that decodes them in the graph, so the decoded weights are exactly the PyTorch ones.
# onnxruntime, a second runtime, then runs the file on held-out images (activations stay float: this is
# weight-only quantization, as everywhere in this package). `qv.quantize(..., onnx="model.onnx")` writes the
# same file for your own model.

# %%
from qevo_lite.quant import export_float_onnx, export_onnx, run_onnx

state_w = quantize_model(vgg_f, QuantConfig(bits))
images = test.x[:1000]
with tempfile.TemporaryDirectory() as tmp:
    onnx_q = export_onnx(vgg_f, state_w, images[:2], _Path(tmp) / f"vgg_w{bits}.onnx")
    onnx_fp32_bytes = export_float_onnx(vgg_f, images[:2], _Path(tmp) / "vgg_fp32.onnx")
    logits_ort = run_onnx(onnx_q.path, images)
with torch.no_grad():
    logits_torch = state_w.to_model(vgg_f)(images)
largest_gap = (logits_ort - logits_torch).abs().max().item()
assert largest_gap < 1e-4 and not onnx_q.float_layers

# %%
# NBVAL_CHECK_OUTPUT
print(f"VGG as FP32 ONNX: {onnx_fp32_bytes:,} bytes")
print(f"VGG W{bits} ONNX ({len(onnx_q.integer_layers)} layers of {sorted(set(onnx_q.integer_layers.values()))} "
      f"codes): {onnx_q.bytes:,} bytes ({onnx_fp32_bytes / onnx_q.bytes:.1f}x smaller); packed: {sizes[bits]:,} bytes")
agree = (logits_ort.argmax(1) == logits_torch.argmax(1)).float().mean().item()
print(f"onnxruntime vs PyTorch on {len(images)} held-out images: logits within 1e-4, same class for {agree:.1%}; "
      f"accuracy {(logits_ort.argmax(1) == test.y[:1000]).float().mean().item():.3f}")

# %% [markdown]
# ## 7. Where the weights sit: rounding residuals
#
# The residual of a weight is `(w - w_hat) / step`: how far, in steps, the weight is from the grid
# point it was rounded to. Inside the grid it lies in `[-0.5, 0.5]`; only clipped weights go further.
# A residual near `+/-0.5` means the weight sits almost halfway between two grid points, so the
# *other* neighbour would cost almost no extra weight error. Here is the VGG's baseline
# (per channel, `bits` bits):

# %%
rule = pick("VGG", bits=bits, granularity="per_channel", chosen=True)[0]["scale_rule"]
state = quantize_model(vgg_f, QuantConfig(bits, granularity="per_channel", scale_rule=rule))
plots.plot_residuals(state);

# %%
res = torch.cat([lq.residual().reshape(-1) for lq in state.layers.values()])
codes_all = torch.cat([lq.codes.reshape(-1) for lq in state.layers.values()])
inner = (codes_all > state.config.grid()[0]) & (codes_all < state.config.grid()[1])
assert res[inner].abs().max() <= 0.5 + 1e-5          # inside the grid: at most half a step
near_boundary = float(((res.abs() - 0.5).abs() <= 0.1).float().mean())

# %%
# NBVAL_CHECK_OUTPUT
print(f"{state.config.describe()}: {state.num_weights} weights")
print(f"fraction within 0.1 steps of a rounding boundary: {near_boundary:.3f} "
      f"(evenly spread residuals would give {2 * 0.1:.3f})")
print(f"fraction clipped beyond half a step: {float((res.abs() > 0.5 + 1e-5).float().mean()):.3f}")

# %% [markdown]
# ## 8. The motivating experiment: flip a few weights near the boundary
#
# If nearest rounding were the best assignment of weights to grid points, moving weights away
# from their nearest grid point could only hurt. Test it: start from the VGG's `bits`-bit baseline,
# pick `n_flips` weights at random among those within 0.1 steps of a rounding boundary, move each
# to its other neighbouring code (one step, `code + sign(residual)`), measure the accuracy on 512
# search images, undo, and repeat for many trials. (`random_boundary_flips` writes only the changed
# weights into the model, so a trial costs one evaluation.)
#
# A **control arm** asks whether "near the boundary" matters: the same number of trials and flips, the same
# one-step moves, but of weights within 0.1 steps of their *grid point* (`region="grid_point"`), where the
# move adds almost a whole step of weight error instead of almost none.

# %%
candidates = sum(len(idx) for _, idx, _ in boundary_candidates(state, near=0.1))
deltas, flips = random_boundary_flips(vgg_f, state, splits.search, n_trials=cfg["flip_trials"], n_flips=n_flips,
                                      seed=seed, near=0.1, subset=512, return_flips=True)
control = random_boundary_flips(vgg_f, state, splits.search, n_trials=cfg["flip_trials"], n_flips=n_flips,
                                seed=seed, near=0.1, subset=512, region="grid_point")
plots.plot_flip_experiment(deltas, n_flips=n_flips, control=control);

# %%
share = lambda d: tuple(float(m.float().mean()) for m in (d > 0, d == 0, d < 0))  # noqa: E731
up, same, down = share(deltas)
assert (deltas > 0).any(), "no random flip improved on nearest rounding"

# %%
# NBVAL_CHECK_OUTPUT
print(f"{candidates} movable weights near a boundary; {len(deltas)} trials of {n_flips} flips each, in each arm")
for label, d in (("near the boundary", deltas), ("control: near the grid point", control)):
    u, s_, dn = share(d)
    print(f"{label:29s}: search accuracy (512 images) up in {u:.3f} of the trials, equal in {s_:.3f}, down in "
          f"{dn:.3f}; mean change {100 * d.mean().item():+.3f} points, best {100 * d.max().item():+.3f}, "
          f"worst {100 * d.min().item():+.3f}")

# %% [markdown]
# What the control shows (checked below): random one-step moves beat RTN on these 512 images in a large share
# of the trials in **both** arms, with similar shares and mean changes. So being near the boundary is not
# what makes a random move help here: the RTN assignment can be improved, on this subset, in many
# directions, and a move that adds almost a whole step of weight error helps about as often as one that adds
# almost none. Part of it is the noise of 512 images (one image is 0.2 points), which is why the best trial is
# measured again below on data that played no part in choosing it. (Notebook 03 finds the same from the other
# side: the moves the ES keeps are not mostly near-ties either.)

# %%
for d in (deltas, control):
    assert (d > 0).float().mean() > 0.3, "a large share of random moves should beat RTN in both arms"

# %% [markdown]
# Some sets of random one-step moves beat nearest rounding (the fraction is printed above). The changes are
# measured on the same 512 images they are compared on, and picking the best of many trials
# also picks up noise. So take the best trial and measure it again on all search images and on
# the held-out test images, which played no part in choosing it:

# %%
best = int(deltas.argmax())
best_state = apply_flips(state, flips[best])
assert sum(best_state.moved(state).values()) == n_flips
acc = {}
for label, st in (("RTN", state), ("best trial", best_state)):
    qmodel = st.to_model(vgg_f)
    acc[label] = (evaluate(qmodel, splits.search)["accuracy"], evaluate(qmodel, test)["accuracy"])

# %%
# NBVAL_CHECK_OUTPUT
for label, (s_acc, t_acc) in acc.items():
    print(f"{label:10s}: search accuracy ({len(splits.search)} images) {s_acc:.3f}, test accuracy "
          f"({len(test)} images) {t_acc:.3f}")

# %% [markdown]
# Whatever a single lucky trial does on held-out data, the experiment shows that nearest rounding
# leaves accuracy on the table: many assignments within one step of it are better on the search
# set. Finding them systematically (instead of by luck) and confirming the gain on held-out data is
# what the evolution strategy in the next notebook does.

# %% [markdown]
# ## 9. Explore it yourself
#
# The explorer quantizes the VGG with the settings you choose and shows the largest layer's
# weights with the grid, titled with the accuracy on 512 search images. Without a live notebook
# (CI, a PDF export) it draws the static figure for the settings it is given (here the baseline of
# section 7), shown first; the live widget follows:

# %%
fig = bit_width_explorer(vgg_f, splits.search, bits=bits, scale_rule=rule, interactive=False)

# %%
bit_width_explorer(vgg_f, splits.search, bits=bits, scale_rule=rule)

# %% [markdown]
# ## 10. Exercises
#
# The graded questions below are those of this notebook's assignment, `grading/src/01_nearest_neighbour_quantization.py`,
# copied in when the notebook is built (`scripts/notebooks.py`), so the tutorial and the assignment ask the
# same. Fill in each stub (replace the `...`) and re-run the check cell under it: it prints whether your
# answer passes. A teacher's grader (README, "Classroom") adds hidden tests on fresh random inputs and
# refuses answers that call the package's own implementation. The reference solutions are in the
# assignment's source (try first!). The open exercise at the end has no check.

# %%
# {{exercises}}

# %% [markdown]
# **Exercise (open).** Look at the ResNet's RTN table in section 7: at which bit widths is the scale rule
# chosen on the search split (lowest search loss) *not* the best on test? That is the price of choosing honestly.

# %% [markdown]
# ## Summary
#
# | idea | what we saw |
# |---|---|
# | grid | `b` bits give `2^b` codes; a weight inside the grid is off by at most half a step |
# | BN folding | fold before quantizing; the folded network gives the same predictions |
# | granularity | per-channel grids fit small channels; no layer has a higher weight error than per tensor |
# | scale rule | decides most of the accuracy at 2 bits; the lowest weight error is not the best accuracy |
# | bit width | 8 bits is within a point of FP32; accuracy falls steeply at the lowest bit widths |
# | flips | random one-step moves beat nearest rounding on 512 search images in many trials, near the boundary and near the grid point alike |
#
# The numbers behind these lines, from this run:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'':28s} {'VGG':>7s} {'ResNet':>7s}")
print(f"{'FP32 test accuracy':28s} {fp32['VGG']:7.3f} {fp32['ResNet']:7.3f}")
for b in (8, bits, 2):
    a = [pick(n, bits=b, granularity='per_channel', chosen=True)[0]['test_accuracy'] for n in ('VGG', 'ResNet')]
    print(f"{f'RTN baseline, {b} bits':28s} {a[0]:7.3f} {a[1]:7.3f}")
print(f"{f'flip trials better ({bits} bits)':28s} {up:7.3f} {'-':>7s}")

# %%
session.report_run_time();

# %% [markdown]
# **References.** M. Pietroń, "Evolutionary fine tuning of quantized convolution-based deep learning models",
# arXiv:2605.05228 (2026), the result this series reproduces. B. Jacob et al., "Quantization and Training of
# Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018 (scales, zero points, BN
# folding). M. Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020
# (AdaRound: rounding to nearest is not optimal). E. Frantar et al., "GPTQ", ICLR 2023. Notebook 07 compares
# the last two with the ES.
#
# **Read next:** `02`, the evolution strategy: instead of random flips, a population of
# assignments near the baseline, mutated one step at a time and selected on the search set, with
# the result reported on held-out test data.

