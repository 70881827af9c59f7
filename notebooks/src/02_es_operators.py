# %% [markdown]
# # 02 · The evolution strategy, piece by piece
#
# {{colab_badge}}
#
# Notebook 01 showed that nearest rounding (RTN) is not the best assignment of weights to grid
# points: moving a few weights to their *other* neighbouring code can raise accuracy. This notebook
# builds the tool that searches for such moves systematically, an **evolution strategy (ES)**, and
# takes it apart. You will learn:
#
# * how a candidate solution is represented (integer codes per layer) and why a child differs from
#   its parent in only a handful of weights;
# * what each mutation operator does, with a picture of the weights it picks, and how the layer to
#   mutate is chosen;
# * the selection schemes (1+lambda), (mu+lambda) and (mu,lambda), and what elitism does;
# * how the mutation rate adapts with the 1/5 success rule;
# * why fitness is measured on a *search* split and reported on held-out *test* data, and what
#   overfitting a too-small search set looks like;
# * how operators compare at an equal evaluation budget over several seeds;
# * global fitness (the network's loss) versus local, layer-wise fitness (each layer's output
#   error), and both in sequence, at about the same wall time;
# * why the fast evaluator (partial re-execution of the network) matters.
#
# **Run time:** about 1.5-2.5 minutes on an idle 2-core CPU with the default `fast` profile (122 s when the committed
# outputs were made, 2026-12-05, on a 2-core AMD EPYC development machine without AVX-512, 90 s on a faster
# one; 78-121 s on the others; the last cell
# prints this run's time). Cores shared with other work slow it down,
# several times over with two busy processes on two cores.
# The `full` profile uses larger budgets and the whole test split.

# %% [markdown]
# ## Setup
#
# Everything comes from the helper package `qevo_lite`. In Colab (or any fresh environment)
# install it first; the cell below says how if it is missing.

# %%
# {{install_cell}}

# %%
import copy
import os
import statistics
import time
from dataclasses import replace


import matplotlib.pyplot as plt
import torch

from qevo_lite.notebook import setup
from qevo_lite import evaluate, fold_batchnorm, load_pretrained, load_splits
from qevo_lite.quant import best_rtn, layer_sensitivity
from qevo_lite.evaluators import FullEvaluator, IncrementalEvaluator, changed_weights, decode_at
from qevo_lite.es import (ESConfig, RecordingEvaluator, compare_variants, final_metric, format_mean_std,
                          layer_weights, mutate, mutate_residual, mutate_uniform, pick_layer, population_best,
                          run_es, run_layerwise, summarize, time_evaluators)
from qevo_lite.viz import es_explorer, es_plots

session = setup(threads=2, needs="this notebook")  # the committed outputs were computed with 2 threads
device = session.device

# %% [markdown]
# ## Parameters
#
# `profile="fast"` keeps the run to a few minutes on a laptop CPU: a 2-bit VGG, a search
# split of 1,024 images, held-out accuracy on the first 5,000 test images (the same subset in every
# classification notebook) and budgets of about a hundred evaluations per run. `profile="full"` uses
# bigger budgets, more seeds and the whole test split.
# The environment variable `QEVO_PROFILE` overrides the default, and the cell is tagged
# `parameters` so papermill can override any value. Every budget is a number of *evaluations* or
# *generations*, never of seconds, so a seed fixes a run on one machine; another CPU or torch build rounds
# float sums a little differently, the ES then accepts other mutations, and the last digits move (that is
# why claims below are checked over several seeds, with their spread).

# %% tags=["parameters"]
profile = os.environ.get("QEVO_PROFILE", "fast")  # "fast" or "full"
bits = 2          # 2-bit weights: RTN loses a lot, so the ES has room to work
seed = 0          # seeds the single runs (the comparison uses seeds 0, 1, 2, ...)

# %%
SPLIT_SEED = 0  # the data split the shipped checkpoints were trained against (train/search disjoint)
PROFILES = {
    "fast": dict(search_size=1024, test_size=5000, tiny_sizes=(32, 128), tiny_evaluations=256, lam=8, demo_lam=4, demo_generations=16,
                 compare_evaluations=64, seeds=(0, 1, 2), local_per_layer=200, local_samples=128,
                 global_evaluations=96, bench_generations=3, explorer_evaluations=48),
    "full": dict(search_size=2048, test_size=None, tiny_sizes=(32, 128), tiny_evaluations=960, lam=8, demo_lam=4, demo_generations=50,
                 compare_evaluations=400, seeds=(0, 1, 2, 3, 4), local_per_layer=800, local_samples=256,
                 global_evaluations=400, bench_generations=10, explorer_evaluations=96),
}
if profile not in PROFILES:
    raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
cfg = PROFILES[profile]
print(f"profile {profile!r}: {cfg}")

# %% [markdown]
# ## 1. The model, the splits and the baseline
#
# The pretrained small VGG on Fashion-MNIST, batch-norm folded (notebook 01). Three splits:
# `search` (training images never trained on: the ES's fitness is measured here), `test` (the
# official test split: reported, never used to choose anything) and a subset of it for speed. The
# baseline is the best RTN scale rule at `bits` bits, chosen on the search split (`best_rtn`).

# %%
splits = load_splits("fashion_mnist", seed=SPLIT_SEED)   # the data first, then the checkpoint trained on it
vgg, entry = load_pretrained("vgg_small", splits=splits)
assert entry["split_seed"] == SPLIT_SEED
search = splits.search.subset(cfg["search_size"])
test = splits.test if cfg["test_size"] is None else splits.test.subset(cfg["test_size"])
fmodel = fold_batchnorm(vgg).to(device)
rtn = best_rtn(fmodel, search, bits)
state = rtn.state                                   # grid, scales, float weights and the RTN codes
rtn_model = state.to_model(fmodel)
rtn_acc = {"search": evaluate(rtn_model, search)["accuracy"], "test": evaluate(rtn_model, test)["accuracy"]}
fp32_test = evaluate(fmodel, test)["accuracy"]


def make_evaluator(split=search, cls=IncrementalEvaluator):
    """A fresh evaluator whose reference is the RTN codes. Evaluators overwrite the weights of the
    model they are given, so each gets its own copy of the float model."""
    return cls(copy.deepcopy(fmodel), state, split)


def accuracies(codes):
    """(search accuracy, test accuracy) of a candidate."""
    model = state.with_codes(codes).to_model(fmodel)
    return evaluate(model, search)["accuracy"], evaluate(model, test)["accuracy"]

# %%
# NBVAL_CHECK_OUTPUT
print(f"search {len(search)} images, test {len(test)} images")
print(f"baseline: {rtn.config.describe()} (rule chosen by search loss among {list(rtn.scores)})")
print(f"FP32 test accuracy {fp32_test:.3f}; RTN search accuracy {rtn_acc['search']:.3f}, "
      f"test accuracy {rtn_acc['test']:.3f}")

# %% [markdown]
# ## 2. Representation: a candidate is a dict of integer codes
#
# A quantized model is its codes plus, per layer, the grid (`qmin..qmax`) and the scales, which
# the ES never changes. So a **candidate** is just `{layer name: int16 codes}`, each tensor shaped
# like the layer's weight. The RTN candidate is `state.codes()`:

# %%
# NBVAL_CHECK_OUTPUT
parent = state.codes()
print(f"{'layer':14s} {'weight shape':>16s} {'weights':>8s}  codes")
for name, codes in parent.items():
    lq = state.layers[name]
    print(f"{name:14s} {str(tuple(codes.shape)):>16s} {codes.numel():8d}  {lq.qmin}..{lq.qmax}, "
          f"used {sorted(codes.unique().tolist())}")
print(f"total {state.num_weights} weights, {bits} bits each")

# %% [markdown]
# A **mutation** makes a child: it picks one layer, moves a share `p` of that layer's codes one step
# up or down (clamped to the grid) and returns a *new dict* that shares every other layer's tensor
# with the parent. Nothing is copied that did not change, and `changed_weights` finds the few
# positions that did: this is what lets the evaluators re-compute only what a mutation touched.

# %%
g = torch.Generator().manual_seed(seed)
layer = "features.6.0"
child = mutate(parent, state, layer, "uniform", p=0.002, g=g)
changes = changed_weights(state, parent, child)
idx, new_codes = changes[layer]
old_codes = parent[layer].reshape(-1)[idx]
shared = [n for n in parent if child[n] is parent[n]]
assert shared == [n for n in parent if n != layer]          # untouched layers: the same tensor objects
assert list(changes) == [layer] and torch.all((new_codes - old_codes).abs() == 1)   # one step each
assert torch.equal(parent[layer], state.layers[layer].codes)  # the parent is not modified

# %%
# NBVAL_CHECK_OUTPUT
print(f"child differs from its parent in {len(idx)} of {parent[layer].numel()} weights of {layer} "
      f"(p = 0.002); the other {len(shared)} layers are shared, not copied")
print("  position  old code -> new code   old weight -> new weight")
for i, o, n_ in zip(idx[:5].tolist(), old_codes[:5].tolist(), new_codes[:5].tolist()):
    wo, wn = (decode_at(state, layer, torch.tensor([i]), torch.tensor([c]))[0].item() for c in (o, n_))
    print(f"  {i:8d}  {o:8d} -> {n_:2d}        {wo:+.4f} -> {wn:+.4f}")

# %% [markdown]
# ## 3. Mutation operators: which weights move
#
# `qevo_lite` has two mutation operators:
#
# * **uniform** (`mutate_uniform`, the paper's least-significant-bit perturbation): every weight of
#   the layer is picked with probability `p` (a binomial mask) and moved `+1` or `-1` code at random;
# * **residual** (`mutate_residual`): weights are picked with probability proportional to
#   `|residual|^4`, where the residual `(w - w_hat) / step` is how far the float weight sits from its
#   code. Weights near a rounding boundary (`|residual|` near 0.5) are strongly preferred, and each is
#   moved towards its float value, to the *other* neighbouring code. Those moves cost the least
#   weight error, so they are the most likely to help.
#
# Both pick the same number of weights (Binomial(n, p)). The figure shows, for the largest layer and
# a large `p` (so there are enough picks to see a shape), where each operator's picks fall in the
# distribution of residuals.

# %%
big = max(state.layers, key=lambda n: state.layers[n].codes.numel())
lq = state.layers[big]
bshape = (-1,) + (1,) * (lq.codes.dim() - 1)
resid = lq.residual()
p_demo = 0.02
uni = mutate_uniform(lq.codes, lq.qmin, lq.qmax, p_demo, torch.Generator().manual_seed(seed))
res = mutate_residual(lq.codes, lq.weight, lq.scale.reshape(bshape), lq.zero_point.reshape(bshape).float(),
                      lq.qmin, lq.qmax, p_demo, torch.Generator().manual_seed(seed))
moved = {"uniform": uni != lq.codes, "residual": res != lq.codes}
es_plots.plot_mutation_picks(resid, moved, title=f"{big}: weights moved by one mutation (p = {p_demo})");

# %% [markdown]
# Checked below: residual picks sit much closer to the rounding boundary than uniform picks, every
# residual move goes towards the float weight (the sign of the step is the sign of the residual),
# and uniform moves go either way. Weights with `|residual| > 0.5` are *clipped*: they lie beyond
# the grid's last level, and moving them outwards is impossible (the step is clamped away), so a
# pick there moves nothing.

# %%
step_res = (res - lq.codes)[moved["residual"]].float()
step_uni = (uni - lq.codes)[moved["uniform"]].float()
mean_abs = {k: resid[m].abs().mean().item() for k, m in moved.items()}
assert mean_abs["residual"] > 0.4 > mean_abs["uniform"]
assert torch.all(torch.sign(step_res) == torch.sign(resid[moved["residual"]]))
assert (step_uni > 0).any() and (step_uni < 0).any()

# %%
# NBVAL_CHECK_OUTPUT
print(f"{big}: {lq.codes.numel()} weights, mean |residual| {resid.abs().mean().item():.3f} steps; "
      f"clipped (|residual| > 0.5): {(resid.abs() > 0.5 + 1e-6).float().mean().item():.3f} of the weights")
for k, m in moved.items():
    print(f"{k:8s}: moved {int(m.sum()):4d} weights, mean |residual| of the moved ones {mean_abs[k]:.3f} steps")

# %% [markdown]
# A third operator, **crossover** (`crossover_uniform`), combines two parents: where they differ,
# the child takes each position from either parent with probability 1/2. The ES uses it when it
# keeps more than one parent (`mu > 1`, section 5).
#
# ## 4. Which layer to mutate
#
# Each offspring mutates one layer. `layer_choice` decides which:
#
# * `uniform`: every layer equally often, so the 144-weight first layer gets as many mutations as
#   the 36,864-weight last conv;
# * `size` (the default): proportionally to the layer's weight count, so every *weight* is equally
#   likely to be touched;
# * `sensitivity`: a schedule, not a probability: layers are visited in order of how much quantizing
#   that layer alone raises the search loss (`layer_sensitivity`), `generations_per_layer`
#   generations each, cycling.
#
# The bars show the two probabilities and, for comparison, each layer's share of the summed
# sensitivity (the sensitivity rule visits the tallest first).

# %%
sens = layer_sensitivity(fmodel, state, search)
order = list(sens)
probs = {"uniform": layer_weights(state, "uniform"), "size": layer_weights(state, "size"),
         "sensitivity (share of the loss increase)": {n: sens[n] / sum(sens.values()) for n in state.layers}}
es_plots.plot_layer_choice(probs, title=f"layer choice, {bits}-bit VGG");

# %%
sizes = {n: lq_.codes.numel() for n, lq_ in state.layers.items()}
assert all(abs(probs["size"][n] - sizes[n] / state.num_weights) < 1e-6 for n in sizes)
assert list(sens.values()) == sorted(sens.values(), reverse=True)
schedule = [pick_layer(order, [], "sensitivity", gen, g, order, generations_per_layer=2) for gen in range(6)]
assert schedule == [order[0]] * 2 + [order[1]] * 2 + [order[2]] * 2

# %%
# NBVAL_CHECK_OUTPUT
print("sensitivity order (search-loss increase when only that layer is quantized, nats):")
print("  " + ", ".join(f"{n} {v:.3f}" for n, v in sens.items()))
print("sensitivity schedule, 2 generations per layer:", schedule)

# %% [markdown]
# ## 5. Selection: who survives a generation
#
# Each generation makes `lambda` offspring from the `mu` parents and keeps `mu` survivors:
#
# * **(1+lambda)**: one parent; it is replaced only by a better child;
# * **(mu+lambda)**: the best `mu` of parents *and* offspring (with crossover between parents);
# * **(mu,lambda)**: the best `mu` of the offspring only. The parents always die, so the population
#   can get *worse* from one generation to the next. That lets it leave a local optimum, but it can
#   also lose the best solution found.
# * **elitism** (for comma selection): the best candidate ever found replaces the worst survivor,
#   so it is never lost.
#
# Plus selection is elitist by construction. All four runs below have the same budget, `lambda = 4`
# offspring per generation (few offspring make a bad generation likely) and the same seed; a
# `RecordingEvaluator` keeps every evaluation so we can plot the best candidate *among the parents*
# after each generation (what selection kept), not just the best ever seen.

# %%
lam, dl = cfg["lam"], cfg["demo_lam"]
schemes = {
    f"(1+{dl})": dict(mu=1, selection="plus"),
    f"(2+{dl})": dict(mu=2, selection="plus"),
    f"(2,{dl}) no elitism": dict(mu=2, selection="comma", elitism=False),
    f"(2,{dl}) elitism": dict(mu=2, selection="comma", elitism=True),
}
demo_base = dict(lam=dl, p=0.002, mutation="residual", max_generations=cfg["demo_generations"],
                 adapt_window=2, seed=seed)
runs, kept = {}, {}
for label, kw in schemes.items():
    rec = RecordingEvaluator(make_evaluator())
    config = ESConfig(**demo_base, **kw)
    runs[label] = run_es(rec, config, progress=False)
    kept[label] = population_best(runs[label].history, rec.records, config)
fig = es_plots.plot_traces(kept, ylabel="best search loss among the parents (nats)",
                           title="what selection keeps, generation by generation")
start_loss = rtn.scores[rtn.config.scale_rule]["loss"]
fig.axes[0].axhline(start_loss, color="k", ls=":", lw=1, label="RTN")
fig.axes[0].legend(fontsize=8);

# %% [markdown]
# Checked below: under plus selection, and under comma selection with elitism, the best parent never
# gets worse; comma selection without elitism does lose its best at least once; and every scheme's
# best ever beats RTN on the search split. (The run returns the best candidate *ever evaluated*
# whatever the scheme, so without elitism the loss shows in where the search goes next, not in what
# is returned.)

# %%
def worse_steps(trace):
    return sum(b > a + 1e-9 for a, b in zip(trace, trace[1:]))

for label, trace in kept.items():
    if "no elitism" in label:
        assert worse_steps(trace) >= 1, label
    else:
        assert worse_steps(trace) == 0, label
    assert runs[label].best_eval.fitness < start_loss, label

# %%
# NBVAL_CHECK_OUTPUT
print(f"RTN search loss {start_loss:.3f}, accuracy {rtn_acc['search']:.3f}")
print(f"{'scheme':20s} {'evaluations':>11s} {'best loss':>9s} {'best acc':>8s} {'gens parents got worse':>23s}")
for label, r in runs.items():
    print(f"{label:20s} {r.evaluations:11d} {r.best_eval.fitness:9.3f} {r.best_eval.metric:8.3f} "
          f"{worse_steps(kept[label]):23d}")

# %% [markdown]
# ## 6. Step-size adaptation: the 1/5 success rule
#
# The mutation rate `p` is the ES's step size: too large and almost every child is worse, too small
# and progress is slow. Rechenberg's 1/5 rule adapts it, counting *mutations*: every `adapt_window`
# generations, if more than 1/5 of the window's children were *successful* (beat the parent), multiply
# `p` by 1.22; if fewer, by 0.82; if exactly 1/5, keep it. (A (1+lambda) ES could instead count a
# generation as a success when its best child wins; that variant succeeds far more often and is not
# Rechenberg's rule, so the package counts children.) The runs above used a window of 2 generations of
# `demo_lam` children each (4 in the fast profile: 8 children per window). Starting from 2-bit RTN, which is far from the best assignment, many children succeed and
# `p` grows; closer to an optimum successes become rare and `p` shrinks again (the explorer of section 11 lets you try fixed rates).

# %%
es_plots.plot_step_size({k: r.history for k, r in runs.items()},
                        title=f"mutation rate p under the 1/5 rule (window {demo_base['adapt_window']})");

# %% [markdown]
# The rule, checked against the recorded histories: after each window, `p` grew when the share of the
# window's children that beat their parent was above 1/5, shrank when it was below and stayed when it was
# exactly 1/5.

# %%
window = demo_base["adapt_window"]
for label, r in runs.items():
    ps = [demo_base["p"]] + [h["p"] for h in r.history]
    for end in range(window, len(r.history) + 1, window):
        rate = sum(h["successes"] for h in r.history[end - window:end]) / (window * dl)
        before, after = ps[end - window], ps[end]
        assert (after > before) if rate > 0.2 else (after < before) if rate < 0.2 else (after == before), label

# %%
# NBVAL_CHECK_OUTPUT
for label, r in runs.items():
    print(f"{label:20s} successful children {sum(h['successes'] for h in r.history):3d} of {r.evaluations}, "
          f"p {demo_base['p']:.4f} -> {r.p:.4f}")

# %% [markdown]
# ## 7. Search split versus held-out data: overfitting the search set
#
# The ES optimises the loss on the search split, so the search accuracy of its best candidate is an
# *optimistic* number: the search has been choosing among many candidates on those very images.
# Only held-out data (the test split, never used to choose anything) says how good the result is.
# With a search set that is too small, the ES fits its quirks instead of improving the model. Here
# is the same (1+8) ES on the first 32 and the first 128 search images, for a long budget (on so
# few images an evaluation is cheap), once per seed; a `report` callback measures the best candidate's
# accuracy on its search images and on the test images every eight generations (reports are never used
# for selection). The figure shows the first seed.

# %%
tiny_by_seed = {}
for n in cfg["tiny_sizes"]:
    tiny = search.subset(n)
    report = (lambda s: lambda model: {"search": evaluate(model, s)["accuracy"],
                                       "test": evaluate(model, test)["accuracy"]})(tiny)
    tiny_by_seed[f"{n} search images"] = [
        run_es(make_evaluator(tiny), ESConfig(lam=lam, p=0.002, mutation="residual", seed=s, report_every=8,
                                              max_evaluations=cfg["tiny_evaluations"]), report=report, progress=False)
        for s in cfg["seeds"]]
tiny_runs = {k: runs[0] for k, runs in tiny_by_seed.items()}   # the first seed's runs, plotted
es_plots.plot_search_vs_heldout({k: r.reports for k, r in tiny_runs.items()},
                                title=f"(1+{lam}) ES on a tiny search set, seed {cfg['seeds'][0]}: accuracy of the best candidate");

# %% [markdown]
# On 32 images the search accuracy climbs far faster than the test accuracy: much of the search
# gain is fitted noise. With four times more search images the held-out accuracy ends higher and search
# and test accuracy stay closer. Checked below over the seeds (mean ± std), with the seed std as the
# tolerance, since one run can show either:

# %%
def mean_std(values):
    return statistics.mean(values), statistics.stdev(values)


gain = {k: {s: [r.reports[-1][s] - r.reports[0][s] for r in runs] for s in ("search", "test")}
        for k, runs in tiny_by_seed.items()}
final_test = {k: [r.reports[-1]["test"] for r in runs] for k, runs in tiny_by_seed.items()}
gap = {k: [r.reports[-1]["search"] - r.reports[-1]["test"] for r in runs] for k, runs in tiny_by_seed.items()}
smallest, larger = list(tiny_by_seed)
(gs, _), (gt, gt_std) = mean_std(gain[smallest]["search"]), mean_std(gain[smallest]["test"])
assert gt + gt_std < 0.75 * gs                  # on 32 images, most of the search gain does not carry over
(t_small, t_small_std), (t_large, t_large_std) = mean_std(final_test[smallest]), mean_std(final_test[larger])
assert t_large > t_small + max(t_small_std, t_large_std)
(g_small, g_small_std), (g_large, g_large_std) = mean_std(gap[smallest]), mean_std(gap[larger])
assert g_large < g_small - max(g_small_std, g_large_std)

# %%
# NBVAL_CHECK_OUTPUT
print(f"mean ± std over seeds {cfg['seeds']}, {cfg['tiny_evaluations']} evaluations each:")
for k in tiny_by_seed:
    fmt = lambda v: "{:+.3f} ± {:.3f}".format(*mean_std(v))
    print(f"{k:17s}: search gain {fmt(gain[k]['search'])}, test gain {fmt(gain[k]['test'])}, "
          f"final test accuracy {mean_std(final_test[k])[0]:.3f}, final search-test gap {fmt(gap[k])}")

# %% [markdown]
# ## 8. Comparing operators at an equal evaluation budget
#
# One run per setting proves little: ES runs are noisy. A fair comparison gives every variant the
# same budget of fitness evaluations and several seeds, and reports the mean and standard deviation,
# with held-out accuracy next to the search numbers. `compare_variants` does that (each run gets a
# fresh evaluator). Early rejection is on to save time: it stops evaluating a child as soon as it is
# clearly worse than its parent (section 10), which does not change the budget's unit, one
# evaluation per child.

# %%
compare_base = ESConfig(lam=lam, p=0.002, max_evaluations=cfg["compare_evaluations"], early_reject=True)
variants = {
    "uniform, by size": dict(mutation="uniform", layer_choice="size"),
    "residual, by size": dict(mutation="residual", layer_choice="size"),
    "residual, by sensitivity": dict(mutation="residual", layer_choice="sensitivity", generations_per_layer=2),
}
results = compare_variants(make_evaluator, compare_base, variants, seeds=cfg["seeds"],
                           report=lambda model: evaluate(model, test), sensitivity_order=order)
rows = summarize(results, {"search loss": lambda r: r.best_eval.fitness,
                           "search acc": lambda r: r.best_eval.metric,
                           "test acc": lambda r: final_metric(r, "accuracy")})
es_plots.plot_comparison(results, title=f"{len(cfg['seeds'])} seeds x {cfg['compare_evaluations']} evaluations");

# %%
# NBVAL_CHECK_OUTPUT
print(f"RTN: search loss {start_loss:.3f}, search acc {rtn_acc['search']:.3f}, test acc {rtn_acc['test']:.3f}")
print(format_mean_std(rows))

# %% [markdown]
# Checked below: every run of every variant beats RTN on the search split *and* on held-out test
# data. Which operator is best is *not* settled by this small experiment: the differences between
# the variants' means are smaller than the typical spread between seeds (printed below).
# One run per variant could have "shown" any ranking; separating them takes more seeds and larger
# budgets (the `full` profile has 5 seeds of 400 evaluations).

# %%
for label, rs in results.items():
    assert all(r.best_eval.fitness < start_loss for r in rs), label
    assert all(final_metric(r) > rtn_acc["test"] for r in rs), label
spread = {}
for metric in ("search loss", "test acc"):
    means = [r[metric][0] for r in rows]
    spread[metric] = (max(means) - min(means), sum(r[metric][1] for r in rows) / len(rows))
if profile == "fast":   # the text's claim is about this small budget
    assert all(diff < std for diff, std in spread.values())

# %%
# NBVAL_CHECK_OUTPUT
for metric, (diff, std) in spread.items():
    print(f"{metric}: largest difference between variant means {diff:.3f}, mean std over seeds {std:.3f}")

# %% [markdown]
# ## 9. Global, local and local-then-global fitness
#
# So far the fitness was **global**: the network's loss on the search split, which needs a forward
# pass per candidate. A **local** fitness scores one layer at a time: the mean squared difference
# between the quantized layer's output and the FP32 layer's output, on a few images (`run_layerwise`,
# here the first 128 search images). The inputs of each layer come from the quantized network with
# the layers before it already evolved, so later layers can compensate for earlier errors. A local evaluation only
# touches the output channels of the moved weights, so it is far cheaper than a global one, and the
# ES can afford many more of them. Local fitness is a proxy, though: a lower layer error usually,
# but not always, means a lower network loss. The third option runs half the local budget and then
# hands the result to the global ES for half the global budget.
#
# The budgets are fixed numbers of evaluations, and each strategy runs once per seed of the comparison
# above (`cfg["seeds"]`): one run per strategy could "show" any ranking (section 8). The wall times printed
# below are this run's; they depend on the machine and its load. Accuracies are measured on the whole
# search split and on the test split.

# %%
STRATEGIES = ("global", "local", "local, then global")
runs_acc, timings, local_logs = {k: [] for k in STRATEGIES}, {k: 0.0 for k in STRATEGIES}, []
local_cfg = lambda n, s: ESConfig(lam=lam, p=0.002, mutation="residual", max_evaluations=n, seed=s)  # noqa: E731
global_cfg = lambda n, s: ESConfig(lam=lam, p=0.002, mutation="residual", max_evaluations=n,  # noqa: E731
                                   early_reject=True, seed=s)
for s in cfg["seeds"]:
    t = time.perf_counter()
    best = run_es(make_evaluator(), global_cfg(cfg["global_evaluations"], s), progress=False).best
    timings["global"] += time.perf_counter() - t
    runs_acc["global"].append(accuracies(best))

    t = time.perf_counter()
    best, log = run_layerwise(fmodel, state, search, local_cfg(cfg["local_per_layer"], s),
                              samples=cfg["local_samples"], progress=False)
    timings["local"] += time.perf_counter() - t
    runs_acc["local"].append(accuracies(best))
    local_logs.append(log)

    t = time.perf_counter()
    half_local, _ = run_layerwise(fmodel, state, search, local_cfg(cfg["local_per_layer"] // 2, s),
                                  samples=cfg["local_samples"], progress=False)
    best = run_es(make_evaluator(), global_cfg(cfg["global_evaluations"] // 2, s), start=half_local,
                  progress=False).best
    timings["local, then global"] += time.perf_counter() - t
    runs_acc["local, then global"].append(accuracies(best))

budgets = {"global": f"{cfg['global_evaluations']} global",
           "local": f"{cfg['local_per_layer']} local x {len(state.layers)} layers",
           "local, then global": f"{cfg['local_per_layer'] // 2} local x {len(state.layers)} layers "
                                 f"+ {cfg['global_evaluations'] // 2} global"}
mean_std = lambda v: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)  # noqa: E731
strategy_acc = {k: tuple(statistics.fmean(a[i] for a in v) for i in (0, 1)) for k, v in runs_acc.items()}
strategy_std = {k: mean_std([a[1] for a in v])[1] for k, v in runs_acc.items()}
es_plots.plot_accuracy_bars({"RTN": {"search": rtn_acc["search"], "test": rtn_acc["test"]},
                             **{k: {"search": a[0], "test": a[1]} for k, a in strategy_acc.items()}},
                            baseline=rtn_acc["test"], title=f"global vs local fitness (mean of {len(cfg['seeds'])} seeds)");

# %%
print(f"{'strategy':20s} {'budget (evaluations)':36s} {'search acc':>10s} {'test acc (mean ± std)':>22s}")
print(f"{'RTN':20s} {'-':36s} {rtn_acc['search']:10.3f} {rtn_acc['test']:22.3f}")
for k, (s_acc, t_acc) in strategy_acc.items():
    print(f"{k:20s} {budgets[k]:36s} {s_acc:10.3f} {f'{t_acc:.3f} ± {strategy_std[k]:.3f}':>22s}")
print(f"wall time over {len(cfg['seeds'])} seeds (s; depends on the machine and its load): "
      + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

# %% [markdown]
# Checked below, with the seed noise: all three beat RTN on held-out data in every seed, and neither strategy
# that uses the local fitness ends below the global one by more than the larger seed std. Whether one is
# *better* is a question for more seeds and budgets (notebook 07 and the README compare the package's
# current local stage, an exact one, with the rounding peers); what the wall times above show is that a local
# evaluation costs far less than a global one.
#
# The global ES of this notebook is the paper's own method. The package's default ES kept it as a second stage
# after its exact local stage until 2026-12-06 and then dropped it: over three seeds, on every classifier and
# detector at 2 and 3 bits, running it after the local stage added no held-out gain beyond the seed noise, even at
# four times its budget (it fits the search split a little better and the test split no better; the README's
# "Does the second (global) stage earn its time?"). It is still one argument away (`budget=64` in
# `qv.quantize`, `--budget 64` in `qevo reproduce`), and it is the one stage that can use any per-sample fitness
# (notebook 07, section 4). Every layer's local error went down in every run:

# %%
for k, v in runs_acc.items():
    assert all(t_acc > rtn_acc["test"] for _, t_acc in v), k
for k in ("local", "local, then global"):
    noise = max(strategy_std[k], strategy_std["global"])
    assert strategy_acc[k][1] >= strategy_acc["global"][1] - noise, (k, strategy_acc, strategy_std)
assert all(e["after"] <= e["before"] for log in local_logs for e in log)
local_log = local_logs[0]

# %%
# Not checked by nbval: the ES's path depends on the CPU's float rounding (AVX-512 or not); its claims are asserted above.
print(f"local ES (seed {cfg['seeds'][0]}), layer output error (MSE) before -> after:")
for e in local_log:
    print(f"  {e['layer']:14s} {e['before']:.5f} -> {e['after']:.5f}  ({e['after'] / e['before']:.3f} x)")

# %% [markdown]
# ## 10. Why the fast evaluator matters
#
# A mutation changes a few weights of one layer, so everything *upstream* of that layer computes
# exactly what it computed for the parent. `IncrementalEvaluator` traces the network with
# `torch.fx`, caches the parent's activations entering the changed part of the graph, and re-runs
# only what lies downstream. With **early rejection** it also compares the child with the parent
# chunk by chunk on the same images and stops as soon as the child is significantly worse.
#
# Below, the same ES (same seed) runs with the naive evaluator (whole network, every image), the
# incremental one and the incremental one with early rejection. The first two must give the same
# fitness for every single candidate; the speed ratio is printed (absolute speeds depend on the
# machine; `qevo bench` runs the same comparison from the command line).

# %%
bench_cfg = ESConfig(lam=lam, p=0.002, mutation="residual", max_generations=cfg["bench_generations"], seed=seed)
timed = time_evaluators({"naive (full network)": make_evaluator(cls=FullEvaluator),
                         "incremental": make_evaluator()}, bench_cfg)
timed.update(time_evaluators({"incremental + early rejection": make_evaluator()},
                             replace(bench_cfg, early_reject=True)))
naive, inc = timed["naive (full network)"], timed["incremental"]
assert len(naive["fitnesses"]) == len(inc["fitnesses"]) == bench_cfg.max_generations * lam
assert all(abs(a - b) <= 1e-5 * max(1.0, abs(a)) for a, b in zip(naive["fitnesses"], inc["fitnesses"]))
assert all(torch.equal(naive["result"].best[n], inc["result"].best[n]) for n in state.layers)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(naive['fitnesses'])} candidates: naive and incremental fitness agree for every one: True; "
      f"same best candidate: True")

# %%
for k, v in timed.items():
    print(f"{k:30s} {v['evals_per_s']:6.1f} evaluations/s  ({v['evals_per_s'] / naive['evals_per_s']:.1f}x naive)")

# %% [markdown]
# ## 11. Explore p and lambda yourself
#
# The explorer runs a (1+lambda) ES with a *fixed* `p` (no 1/5 rule) for a fixed number of
# evaluations from RTN and plots the best search loss; settings you tried before stay in grey. Try a
# tiny `p` and a large one (how often does a child still beat its parent?), and `lambda = 1` versus
# 16 at the same budget (many small steps versus a few well-chosen ones). Without a live
# notebook (CI, a PDF export) it draws the static figure for the default settings, shown first; the
# live widget follows and reuses the runs already made.

# %%
explorer_cache = {}
explorer_ev = make_evaluator()
fig = es_explorer(explorer_ev, start=state.codes(), p=0.002, lam=lam, max_evaluations=cfg["explorer_evaluations"],
                  cache=explorer_cache, interactive=False)

# %%
es_explorer(explorer_ev, start=state.codes(), p=0.002, lam=lam, max_evaluations=cfg["explorer_evaluations"],
            cache=explorer_cache)

# %% [markdown]
# ## 12. Exercises
#
# The graded questions below are those of this notebook's assignment, `grading/src/02_es_operators.py`,
# copied in when the notebook is built (`scripts/notebooks.py`), so the tutorial and the assignment ask the
# same. Fill in each stub (replace the `...`) and re-run the check cell under it: it prints whether your
# answer passes. A teacher's grader (README, "Classroom") adds hidden tests on fresh random inputs and
# refuses answers that call the package's own implementation. The reference solutions are in the
# assignment's source (try first!). The open exercise at the end has no check.

# %%
# {{exercises}}

# %% [markdown]
# **Exercise (open).** Implement the simplest ES, **(1+1)**, in a few lines: `one_plus_one(evaluator, state,
# steps, p, seed)` keeps one parent (start from `evaluator.reference`, the RTN codes, whose fitness is
# `evaluator.reference_eval.fitness`); each step makes one child with `mutate(parent, state, layer,
# "residual", p, g)` (pick `layer` any way you like, e.g. with `layer_weights(state, "size")`),
# evaluates it with `evaluator.evaluate(child)` and keeps it if its fitness is not worse. Return
# `(best codes, list of the parent's fitness after each step)`. Tip: `evaluator.set_reference(child,
# evaluation)` after an accepted child makes the next evaluations cheaper. Compare its trace with the
# (mu + lambda) ES's above at the same number of evaluations.

# %% [markdown]
# ## Summary
#
# | idea | what we saw |
# |---|---|
# | representation | a candidate is `{layer: int16 codes}`; a child shares every untouched layer with its parent and differs in a few weights |
# | mutation | uniform moves random weights +/-1; residual moves weights near a rounding boundary to their other neighbour |
# | layer choice | uniform, by size (every weight equally likely) or a sensitivity schedule |
# | selection | plus selection and elitism never lose the best parent; comma selection without elitism does |
# | step size | the 1/5 rule grows `p` while more than 1/5 of the children beat their parent (as from 2-bit RTN) and shrinks it when fewer do |
# | search vs test | a tiny search set is partly fitted rather than learned from: its search gain far exceeds the held-out gain |
# | operators | at equal budget over seeds, every variant beats RTN on test; 3 seeds of 96 evaluations cannot rank them |
# | local fitness | far cheaper per evaluation; over 3 seeds not behind the global fitness on held-out data beyond the seed noise (the package's default ES is now an exact local stage alone) |
# | fast evaluator | the same fitness as the naive one for every candidate, at a multiple of its speed (ratio printed in section 10) |
#
# The numbers behind these lines, from this run (held-out test accuracy unless it says search):

# %%
# Not checked by nbval: the ES's path depends on the CPU's float rounding (AVX-512 or not); its claims are asserted where each is made.
print(f"{'FP32':44s} {fp32_test:.3f}")
print(f"{f'RTN, {bits} bits':44s} {rtn_acc['test']:.3f}  (search {rtn_acc['search']:.3f})")
for r in rows:
    print(f"{'ES ' + r['variant'] + ', ' + str(cfg['compare_evaluations']) + ' evaluations':44s} "
          f"{r['test acc'][0]:.3f}  (search {r['search acc'][0]:.3f}; mean of {len(cfg['seeds'])} seeds)")
for k, (s_acc, t_acc) in strategy_acc.items():
    print(f"{'ES, ' + k + ' fitness':44s} {t_acc:.3f}  (search {s_acc:.3f})")
tiny_label = f"ES on {smallest}, {cfg['tiny_evaluations']} evaluations"
tiny_search = statistics.mean(r.reports[-1]["search"] for r in tiny_by_seed[smallest])
print(f"{tiny_label:44s} {statistics.mean(final_test[smallest]):.3f}  "
      f"(search {tiny_search:.3f}; mean of {len(cfg['seeds'])} seeds)")

# %%
session.report_run_time();

# %% [markdown]
# **References.** I. Rechenberg, *Evolutionsstrategie* (1973): the (1+1) ES and the 1/5 success rule.
# H.-G. Beyer and H.-P. Schwefel, "Evolution strategies: A comprehensive introduction", Natural Computing 1
# (2002): (mu/rho +, lambda) notation, plus and comma selection. M. Pietroń, arXiv:2605.05228 (2026): the ES over
# quantization states that this series reproduces.
#
# **Read next:** the next notebook in the series applies the ES to both models and other bit widths
# and compares it with other rounding methods, always on held-out data. To run the ES headless from
# the command line, see `qevo --help` (`qevo bench` repeats the evaluator comparison of section 10).

