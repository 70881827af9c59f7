"""Figures of the ES's anatomy (notebook 02): which weights a mutation picks, layer choice, traces,
step-size adaptation, search vs held-out, variants at equal budget."""
from __future__ import annotations

from .style import finish, new_axes


def plot_mutation_picks(residuals, picks: dict, ax=None, bins: int = 40, title: str | None = None, path=None):
    """Where mutation operators pick weights, over the distribution of rounding residuals.

    Args:
        residuals: float tensor of residuals in steps (``LayerQuant.residual()``), any shape.
        picks: ``{label: boolean mask shaped like residuals}`` (True = picked by that operator,
            e.g. ``child_codes != parent_codes``).
    Draws the density of all residuals (grey) and of each operator's picked weights (lines).
    """
    import torch
    r = torch.as_tensor(residuals).reshape(-1).float()
    if r.numel() == 0:
        raise ValueError("residuals is empty.")
    if not picks:
        raise ValueError("picks is empty: pass {label: boolean mask}.")
    fig, ax = new_axes(ax)
    lo, hi = float(r.min()), float(r.max())
    edges = torch.linspace(min(lo, -0.5), max(hi, 0.5), bins + 1).tolist()
    ax.hist(r.numpy(), bins=edges, density=True, color="0.8", label=f"all weights ({r.numel()})")
    for label, mask in picks.items():
        m = torch.as_tensor(mask).reshape(-1).bool()
        if m.shape != r.shape:
            raise ValueError(f"picks[{label!r}] has {m.numel()} entries, residuals {r.numel()}.")
        if m.any():
            ax.hist(r[m].numpy(), bins=edges, density=True, histtype="step", lw=1.8,
                    label=f"{label} ({int(m.sum())} picked)")
    ax.set_xlabel("rounding residual (w - w_hat) / step (steps)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return finish(fig, ax, title or "which weights a mutation picks", path)


def plot_layer_choice(probabilities: dict, ax=None, title: str | None = None, path=None):
    """Probability of mutating each layer under each layer-choice rule, as grouped bars.

    ``probabilities`` is ``{rule: {layer: probability}}`` (e.g. from
    :func:`qevo_lite.es.operators.layer_weights`); all rules must cover the same layers.
    """
    if not probabilities:
        raise ValueError("probabilities is empty.")
    rules = list(probabilities)
    layers = list(probabilities[rules[0]])
    fig, ax = new_axes(ax, figsize=(7.0, 3.6))
    width = 0.8 / len(rules)
    for i, rule in enumerate(rules):
        if list(probabilities[rule]) != layers:
            raise ValueError(f"rule {rule!r} covers other layers than {rules[0]!r}.")
        xs = [j + (i - (len(rules) - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, [probabilities[rule][n] for n in layers], width, label=rule)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("probability of being mutated")
    ax.legend(fontsize=8)
    return finish(fig, ax, title or "layer choice rules", path)


def plot_traces(traces: dict, ax=None, xlabel: str = "generation", ylabel: str = "search-split loss (nats)",
                title: str | None = None, logy: bool = False, path=None):
    """One line per ``{label: list of values}``, against 1, 2, ... (generations by default)."""
    if not traces:
        raise ValueError("traces is empty.")
    fig, ax = new_axes(ax)
    for label, ys in traces.items():
        ax.plot(range(1, len(ys) + 1), list(ys), marker=".", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return finish(fig, ax, title, path)


def plot_step_size(histories: dict, ax=None, title: str | None = None, path=None):
    """The mutation rate ``p`` after each generation (log scale), one line per ``{label: history}``;
    filled markers are generations whose best offspring beat the parent (successes of the 1/5 rule)."""
    if not histories:
        raise ValueError("histories is empty.")
    fig, ax = new_axes(ax)
    for i, (label, hist) in enumerate(histories.items()):
        gens = [h["generation"] for h in hist]
        ps = [h["p"] for h in hist]
        line, = ax.plot(gens, ps, drawstyle="steps-post", label=label, color=f"C{i}")
        ok = [(g_, p_) for g_, p_, h in zip(gens, ps, hist) if h["accepted"]]
        if ok:
            ax.plot(*zip(*ok), "o", ms=4, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel("mutation rate p (share of a layer's weights)")
    ax.legend(fontsize=8, title="dots: successful generations", title_fontsize=8)
    return finish(fig, ax, title or "step-size adaptation", path)


def plot_search_vs_heldout(runs: dict, search_key: str = "search", heldout_key: str = "test", ax=None,
                           title: str | None = None, path=None):
    """Accuracy on the search split (solid) and on held-out data (dashed) of each run's best candidate,
    against fitness evaluations. ``runs`` is ``{label: reports}``, where each report (from the
    ``report`` callback of :func:`qevo_lite.es.run_es`) holds ``evaluations``, ``search_key`` and
    ``heldout_key``."""
    if not runs:
        raise ValueError("runs is empty.")
    fig, ax = new_axes(ax)
    for i, (label, reports) in enumerate(runs.items()):
        if not reports:
            raise ValueError(f"run {label!r} has no reports.")
        ev = [r["evaluations"] for r in reports]
        ax.plot(ev, [100 * r[search_key] for r in reports], "-o", ms=3, color=f"C{i}", label=f"{label}: search")
        ax.plot(ev, [100 * r[heldout_key] for r in reports], "--s", ms=3, color=f"C{i}",
                label=f"{label}: held-out")
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("accuracy of the best candidate (%)")
    ax.legend(fontsize=8)
    return finish(fig, ax, title or "search-split vs held-out accuracy", path)


def plot_comparison(results: dict, key: str = "best", ax=None, title: str | None = None, path=None):
    """Mean (line) and +/- one standard deviation (band) over seeds of ``history[key]`` against
    evaluations, one colour per variant. ``results`` is ``{label: [ESResult per seed]}``
    (:func:`qevo_lite.es.study.compare_variants`)."""
    import numpy as np
    if not results:
        raise ValueError("results is empty.")
    fig, ax = new_axes(ax)
    for i, (label, runs) in enumerate(results.items()):
        if not runs:
            raise ValueError(f"variant {label!r} has no runs.")
        n = min(len(r.history) for r in runs)
        ys = np.array([[h[key] for h in r.history[:n]] for r in runs], dtype=float)
        xs = [h["evaluations"] for h in runs[0].history[:n]]
        mean = ys.mean(0)
        std = ys.std(0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
        ax.plot(xs, mean, color=f"C{i}", label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(xs, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
    ax.set_xlabel("fitness evaluations")
    ax.set_ylabel("best search-split loss (nats)")
    ax.legend(fontsize=8)
    return finish(fig, ax, title or "variants at equal evaluation budget (mean +/- std)", path)


def plot_accuracy_bars(values: dict, ax=None, baseline: float | None = None, title: str | None = None, path=None):
    """Grouped bars of accuracies: ``{label: {metric: value or list of values}}`` (fractions).
    Lists are drawn as mean with a +/- one standard deviation error bar; ``baseline`` as a dotted line."""
    import statistics
    if not values:
        raise ValueError("values is empty.")
    labels = list(values)
    metrics = list(values[labels[0]])
    fig, ax = new_axes(ax, figsize=(7.0, 3.8))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        means, errs = [], []
        for label in labels:
            v = values[label][metric]
            vs = [float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)]
            means.append(100 * statistics.fmean(vs))
            errs.append(100 * statistics.stdev(vs) if len(vs) > 1 else 0.0)
        xs = [j + (i - (len(metrics) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=metric)
    if baseline is not None:
        ax.axhline(100 * baseline, color="k", ls=":", lw=1, label="RTN (held-out)")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("method")
    ax.set_ylabel("accuracy (%)")
    heights = [p.get_height() for p in ax.patches] + ([100 * baseline] if baseline is not None else [])
    ax.set_ylim(max(0.0, min(heights) - 10), min(100.0, max(heights) + 8))
    ax.legend(fontsize=8, loc="upper left")
    return finish(fig, ax, title, path)
