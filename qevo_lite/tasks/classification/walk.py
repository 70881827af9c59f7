"""The walk of notebooks 03 (VGG) and 04 (ResNet): one classification experiment, step by step.

Each function is one step of the notebooks' story (tables are printed with fixed formats, so the
notebooks' checked outputs stay stable; figures are returned). The pipeline itself is the package's
one experiment pipeline (:mod:`qevo_lite.experiment`); these helpers only present it.
"""
from __future__ import annotations

import statistics

import torch

from ...experiment import figures, presentation
from ...experiment.context import Context
from ...experiment.cell_grid import cell_key, run_grid
from ...experiment.summary import markdown_table
from ...viz.style import new_axes
from .task import TASK

ACCURACY = TASK.metrics[0]


def context(profile: str, experiment: str, device=None, download: bool | None = None, **overrides) -> Context:
    """The experiment's :class:`~qevo_lite.experiment.context.Context` for profile ``profile`` (None values
    in ``overrides`` keep the profile's); prints what it runs for ``experiment`` (``vgg`` or ``resnet``)."""
    if profile not in TASK.profiles:
        raise ValueError(f"Unknown profile {profile!r}; choose one of {sorted(TASK.profiles)}.")
    prof = TASK.profiles[profile].with_overrides(**overrides)
    ctx = Context(TASK, prof, device=device, download=download)
    print(f"profile {prof.name!r}: dataset {prof.data.dataset}, model {prof.archs([experiment])[0]}, "
          f"bits {list(prof.grid.bits)}, seeds {list(prof.grid.seeds)}")
    print(f"search split {prof.data.search_size} images, held-out test {prof.data.test_size or 'all'} images; "
          f"budget per run: {prof.methods.es.budgets_text()}")
    return ctx


def first_es_context(profile: str, experiment: str, device=None, **overrides) -> Context:
    """:func:`context` for the ES as first built (the task's ``first_es``: its *sampled* local stage and the
    random global stage) without the rounding peers: the method notebooks 03 and 04 walk step by step. The
    package's default local stage (the per-channel ES on each layer's exact quadratic error) and the peers
    come in the notebooks' side-by-side section."""
    print("the ES as first built (sampled local stage + global stage), no rounding peers")
    return context(profile, experiment, device, es=TASK.first_es[profile], peers=(), **overrides)


def describe_model(ctx: Context, arch: str) -> None:
    """Print the model's quantizable weights and layers, the split sizes and the FP32 accuracies."""
    fmodel, _ = ctx.model(arch)
    fp32 = ctx.fp32(arch)
    layers = [m for m in fmodel.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    print(f"{arch}: {sum(m.weight.numel() for m in layers)} quantizable weights in {len(layers)} layers")
    print(f"search {len(ctx.search)} images, test {len(ctx.test)} images")
    print(f"FP32 accuracy: search {fp32['search']['accuracy']:.3f}, test {fp32['test']['accuracy']:.3f}")


def rtn_rows(ctx: Context, arch: str, granularities=("per_channel", "per_tensor")) -> list[dict]:
    """``[{bits, granularity, rule, search, test}]``: RTN accuracies at every bit width of the profile (the
    task-generic :func:`qevo_lite.experiment.presentation.rtn_rows` with the accuracy alone, the form notebook
    03's exercise reads)."""
    return [{"bits": r["bits"], "granularity": r["granularity"], "rule": r["rule"],
             "search": r["search"]["accuracy"], "test": r["test"]["accuracy"]}
            for r in presentation.rtn_rows(ctx, arch, granularities=granularities)]


def rtn_accuracy(rows: list[dict], bits: int, granularity: str = "per_channel", split: str = "test") -> float:
    """One accuracy of :func:`rtn_rows`."""
    return next(r[split] for r in rows if r["bits"] == bits and r["granularity"] == granularity)


def print_rtn_table(rows: list[dict], fp32_test: float) -> None:
    """Per-channel and per-tensor RTN (chosen rule, search and test accuracy) per bit width."""
    print(f"FP32 test accuracy {fp32_test:.3f}")
    print(f"{'bits':>4}  {'per-channel rule':16s} {'search':>7s} {'test':>7s}   {'per-tensor rule':16s} {'search':>7s} "
          f"{'test':>7s}")
    for b in dict.fromkeys(r["bits"] for r in rows):
        c, t = (next(r for r in rows if r["bits"] == b and r["granularity"] == g) for g in ("per_channel", "per_tensor"))
        print(f"{b:4d}  {c['rule']:16s} {c['search']:7.3f} {c['test']:7.3f}   {t['rule']:16s} {t['search']:7.3f} "
              f"{t['test']:7.3f}")


def plot_rtn(rows: list[dict], fp32_test: float, arch: str):
    """Held-out accuracy of RTN per channel and per tensor against bit width, FP32 dashed."""
    fig, ax = new_axes()
    bits = list(dict.fromkeys(r["bits"] for r in rows))
    ax.axhline(100 * fp32_test, color="black", ls="--", label="FP32")
    for g, style in (("per_channel", "o-"), ("per_tensor", "s:")):
        ax.plot(bits, [100 * rtn_accuracy(rows, b, g) for b in bits], style, label=f"RTN {g.replace('_', '-')}")
    ax.set_xticks(bits)
    ax.set_xlabel("weight bit width (bits)")
    ax.set_ylabel("held-out test accuracy (%)")
    ax.set_title(f"{arch}: nearest rounding")
    ax.legend()
    return fig


def sensitivity(ctx: Context, arch: str, bits: int) -> tuple[dict, dict]:
    """``({layer: search-loss increase (nats)}, {layer: weights})``, layers in graph order for the sizes."""
    sens = ctx.sensitivity(arch, bits)
    sizes = {n: lq.codes.numel() for n, lq in ctx.rtn(arch, bits)["state"].layers.items()}
    return sens, sizes


def plot_sensitivity(sens: dict, sizes: dict, arch: str, bits: int):
    """Bars: the search-loss increase with one layer quantized at a time, layers in graph order."""
    fig, ax = new_axes(figsize=(7.0, 3.6))
    order = list(sizes)
    ax.bar(range(len(order)), [sens[n] for n in order], color="tab:purple")
    ax.set_xticks(range(len(order)), order, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("search-loss increase (nats)")
    ax.set_title(f"{arch}, {bits} bits per channel: one layer quantized at a time")
    return fig


def print_sensitivity(sens: dict, sizes: dict, width: int = 16) -> None:
    """The sensitivity table, most sensitive first."""
    print(f"{'layer':{width}s} {'weights':>8s} {'sensitivity (nats)':>19s}")
    for n, s in sens.items():
        print(f"{n:{width}s} {sizes[n]:8d} {s:19.3f}")


def run(ctx: Context, arch: str) -> tuple[dict, list[dict]]:
    """Every (bits, seed) cell of ``arch`` (the slow step); returns ``(cells, summary rows)``."""
    results = run_grid(ctx, archs=[arch], progress=True)
    return results["cells"], results["summary"]


def cell(cells: dict, arch: str, bits: int, seed: int) -> dict:
    """One cell of :func:`run`."""
    return cells[cell_key(TASK.name, arch, bits, seed)]


def table(rows: list[dict]):
    """The results table as Markdown (displayable with ``IPython.display.Markdown``)."""
    return markdown_table(rows, TASK)


def print_es_rows(rows: list[dict]) -> None:
    """The table's ES numbers as text, without wall times."""
    for r in rows:
        if not r["es_run"]:
            print(f"W{r['bits']}: RTN test {r['rtn_test_accuracy']:.3f}; ES not run ({r['es_skipped_reason']})")
            continue
        print(f"W{r['bits']}: RTN search {r['rtn_search_accuracy']:.3f} test {r['rtn_test_accuracy']:.3f} | "
              f"ES search {r['es_search_accuracy']:.3f} ± {r['es_search_accuracy_std']:.3f} "
              f"test {r['es_test_accuracy']:.3f} ± {r['es_test_accuracy_std']:.3f} | "
              f"gap recovered {r['gap_recovered']:.3f} | {r['evaluations']:.0f} evaluations | "
              f"moved {r['moved_share']:.4f}")


def check_es_beats_rtn(rows: list[dict], cells: dict) -> None:
    """Assert: wherever the ES ran, its held-out accuracy beats RTN's in every seed, and the seed mean
    is within noise of RTN or above."""
    for r in rows:
        if not r["es_run"]:
            continue
        per_seed = [cell(cells, r["arch"], r["bits"], s)["es_test_accuracy"] for s in r["seeds"]]
        assert all(a > r["rtn_test_accuracy"] for a in per_seed), (r["bits"], per_seed)
        assert r["within_noise"]


def plot_accuracy_vs_bits(rows: list[dict], arch: str):
    """Held-out accuracy against bit width: FP32, RTN per tensor and per channel, the ES."""
    return figures.plot_metric_vs_bits(rows, arch, ACCURACY)


def plot_curves(cells: dict, arch: str, bits: int):
    """Search fitness over the global stage and held-out accuracy at the reporting points, per seed."""
    return figures.plot_curves(cells, arch, bits, ACCURACY)


def plot_moved(cells: dict, arch: str, bits: int):
    """Where the ES moved weights (per layer) and their rounding residuals."""
    return figures.plot_moved(cells, arch, bits)


def local_gains(rows: list[dict], cells: dict) -> dict:
    """Print the search and held-out gains per bit width next to the local stage's alone; return
    ``{bits: held-out gain of the local stage (seed mean)}``."""
    gains = {}
    for r in rows:
        if not r["es_run"]:
            continue
        local = statistics.fmean(cell(cells, r["arch"], r["bits"], s)["local_test_accuracy"] for s in r["seeds"])
        gains[r["bits"]] = local - r["rtn_test_accuracy"]
        print(f"W{r['bits']}: search gain {100 * (r['es_search_accuracy'] - r['rtn_search_accuracy']):+.1f} points, "
              f"held-out gain {100 * r['gain_accuracy']:+.1f} points (after the local stage alone: "
              f"{100 * gains[r['bits']]:+.1f})")
    return gains


def moved_stats(rows: list[dict], cells: dict) -> dict:
    """Seed means of the moved-weight statistics per ES bit width (:func:`presentation.moved_means
    <qevo_lite.experiment.presentation.moved_means>`), printed as a table."""
    stats = {}
    for r in rows:
        if r["es_run"]:
            means = presentation.moved_means(cells, TASK, r["arch"], r["bits"])
            stats[r["bits"]] = {k: means[k] for k in presentation.MOVED_KEYS}
    print("seed means   moved   |r|>0.4 among: all  moved   to the other neighbour   >1 step   weight error / RTN's")
    for b, m in stats.items():
        print(f"W{b:<10d} {m['share']:7.4f} {m['near_boundary_all']:18.3f} {m['near_boundary_moved']:6.3f} "
              f"{m['toward_other_neighbour']:24.3f} {m['more_than_one_step']:9.3f} {m['weight_error_ratio']:21.3f}")
    return stats


def layer_shares(cells: dict, arch: str, bits: int, seeds) -> dict:
    """``{layer: share of its weights moved, summed over seeds}`` at ``bits``."""
    cs = [cell(cells, arch, bits, s) for s in seeds]
    return {n: sum(c["moved"]["per_layer"][n]["share"] for c in cs) for n in cs[0]["moved"]["per_layer"]}


def print_summary(rows: list[dict], arch: str, fp32_test: float, seeds) -> None:
    """Held-out accuracy per bit width: RTN per tensor, per channel, the ES (seed mean)."""
    print(f"{arch}, held-out test accuracy (ES: mean of {len(seeds)} seeds)")
    print(f"{'bits':>4} {'RTN per-tensor':>15s} {'RTN per-channel':>16s} {'ES per-channel':>15s}")
    for r in rows:
        es_acc = f"{r['es_test_accuracy']:.3f}" if r["es_run"] else "-"
        print(f"{r['bits']:4d} {r['rtn_per_tensor_test_accuracy']:15.3f} {r['rtn_test_accuracy']:16.3f} {es_acc:>15s}")
    print(f"FP32 {fp32_test:.3f}")


def target_bits(rows: list[dict], fp32_search: float, points: float = 2.0) -> int:
    """The lowest bit width where per-channel RTN loses at least ``points`` of accuracy on the **search**
    split (the held-out split is never used to choose)."""
    return min(r["bits"] for r in rows if r["granularity"] == "per_channel"
               and 100 * (fp32_search - r["search"]) >= points)


def print_target(target: dict, fp32: dict) -> None:
    """The bit width :func:`target_bits` chose, with RTN's and FP32's search and held-out accuracy (no ES number:
    a checked output); ``fp32`` as :meth:`Context.fp32` returns it."""
    print(f"lowest bit width where RTN loses >= 2 points on the search split: W{target['bits']} "
          f"(RTN search {target['rtn_search_accuracy']:.3f}, test {target['rtn_test_accuracy']:.3f}; "
          f"FP32 search {fp32['search']['accuracy']:.3f}, test {fp32['test']['accuracy']:.3f})")


def print_es_at_target(target: dict) -> None:
    """What the ES recovered at the target bit width (seed mean ± std)."""
    print(f"ES held-out accuracy {target['es_test_accuracy']:.3f} ± {target['noise']:.3f} "
          f"(seeds {target['seeds']}): {100 * target['gap_recovered']:.0f}% of the gap recovered")


def check_local_stage(target: dict, local_gain: float) -> None:
    """Assert: the local stage alone gives more than half of the held-out gain and the global stage adds to
    it; the search and held-out gains are within 5 points (no overfitting of the search split)."""
    assert 0.5 * target["gain_accuracy"] < local_gain < target["gain_accuracy"]
    assert abs((target["es_search_accuracy"] - target["rtn_search_accuracy"]) - target["gain_accuracy"]) < 0.05


def check_moved_claims(stats: dict, share: dict, sizes: dict) -> None:
    """Assert the moved-weight claims of notebooks 03/04 (seed means per ES bit width): few weights moved,
    almost all by one step, not the near-ties, about as often to the other neighbour as random moves,
    a larger weight error than RTN's; and the smallest layer has a larger share moved than the largest."""
    for m in stats.values():
        assert m["share"] < 0.05 and m["more_than_one_step"] < 0.05
        assert abs(m["near_boundary_moved"] - m["near_boundary_all"]) < 0.05
        assert 0.45 < m["toward_other_neighbour"] < 0.65
        assert m["weight_error_ratio"] > 1.0
    assert share[min(sizes, key=sizes.get)] > share[max(sizes, key=sizes.get)]
