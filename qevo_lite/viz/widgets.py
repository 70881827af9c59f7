"""Interactive explorers for the notebooks (core ipywidgets only).

Every explorer has a static default path: with ``interactive=False`` (or when no Jupyter
kernel is running, or when the environment variable ``QEVO_STATIC_WIDGETS=1`` is set, e.g.
for a PDF export) it draws the figure for its default settings and returns the
:class:`matplotlib.figure.Figure` instead of a widget.
"""
from __future__ import annotations

import os

from torch import nn

from ..core.data import Split
from ..es.engine import ESConfig, run_es
from ..core.evaluate import evaluate
from ..quant.fold import quantizable_layers
from .quant_plots import plot_weight_histogram
from ..quant.grid import GRANULARITIES, SCALE_RULES, QuantConfig, quantize_model


def _has_frontend() -> bool:
    """True inside a Jupyter kernel (where widgets can render) unless ``QEVO_STATIC_WIDGETS=1``."""
    if os.environ.get("QEVO_STATIC_WIDGETS", "") not in ("", "0"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _explorer(draw, controls: dict):
    """The widget: the ``controls`` in a row above the figure ``draw(**their values)``, redrawn on change."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    def show(**kwargs):
        fig = draw(**kwargs)
        display(fig)
        plt.close(fig)

    return widgets.VBox([widgets.HBox(list(controls.values())), widgets.interactive_output(show, controls)])


def bit_width_explorer(model: nn.Module, split: Split, bits: int = 3, granularity: str = "per_channel",
                       scale_rule: str = "maxabs_full", layer: str | None = None, channel: int = 0,
                       n_eval: int = 512, interactive: bool | None = None):
    """Explore nearest rounding: bit width, granularity and scale rule against a layer's weights and accuracy.

    Draws the float weights of ``layer`` (default: the layer with most weights) with the grid
    of the chosen settings, titled with the accuracy of the whole quantized model on the first
    ``n_eval`` images of ``split`` (and the float model's, for reference).

    Args:
        model: a BN-folded float model (:func:`qevo_lite.quant.fold.fold_batchnorm`); not modified.
        split: the images the accuracy is measured on (use the search split, not test).
        bits, granularity, scale_rule: the settings shown first (the static figure's settings).
        channel: output channel whose weights and grid are shown for per-channel settings.
        interactive: ``False`` returns the static figure; ``True`` returns an ipywidgets ``VBox``
            (an ``IntSlider`` for bits 2..8 and ``Dropdown`` s for granularity and scale rule);
            ``None`` picks the widget only when a Jupyter frontend can show it.
    """
    QuantConfig(bits, "symmetric", granularity, scale_rule)  # validate the defaults early
    layers = quantizable_layers(model)
    if layer is None:
        layer = max(layers, key=lambda n: layers[n].weight.numel())
    elif layer not in layers:
        raise ValueError(f"Unknown layer {layer!r}; choose one of {list(layers)}.")
    subset = split.subset(n_eval)
    fp32 = evaluate(model, subset)["accuracy"]
    cache: dict[QuantConfig, float] = {}

    def draw(bits: int, granularity: str, scale_rule: str):
        cfg = QuantConfig(bits, "symmetric", granularity, scale_rule)
        state = quantize_model(model, cfg)
        if cfg not in cache:
            cache[cfg] = evaluate(state.to_model(model), subset)["accuracy"]
        fig = plot_weight_histogram(state.layers[layer], channel=channel)
        ax = fig.axes[0]
        ax.set_title(f"{layer}, {ax.get_title()}\n{cfg.describe()}: accuracy {100 * cache[cfg]:.1f}% "
                     f"on {len(subset)} images (FP32 {100 * fp32:.1f}%)", fontsize=9)
        return fig

    if interactive is None:
        interactive = _has_frontend()
    if not interactive:
        return draw(bits, granularity, scale_rule)

    import ipywidgets as widgets

    controls = {
        "bits": widgets.IntSlider(value=bits, min=2, max=8, step=1, description="bits",
                                  continuous_update=False),
        "granularity": widgets.Dropdown(options=list(GRANULARITIES), value=granularity, description="granularity"),
        "scale_rule": widgets.Dropdown(options=list(SCALE_RULES), value=scale_rule, description="scale rule"),
    }
    return _explorer(draw, controls)


# ----------------------------------------------------------------------------- ES: mutation rate and lambda
P_CHOICES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)


def es_explorer(evaluator, start: dict | None = None, p: float = 0.002, lam: int = 8, max_evaluations: int = 48,
                mutation: str = "residual", seed: int = 0, p_choices=P_CHOICES, max_lam: int = 16,
                cache: dict | None = None, interactive: bool | None = None):
    """Run a short (1+lambda) ES for a chosen ``p`` and ``lambda`` and draw its best search loss.

    Every run starts from ``start`` (default: the evaluator's reference when the explorer is made,
    normally the RTN codes), uses a fixed ``p`` (no 1/5 rule, so the rate you pick is the rate used)
    and the same budget of ``max_evaluations`` evaluations (rounded up to whole generations), so
    settings are compared at (nearly) equal cost. Runs are cached by ``(p, lambda)`` in ``cache``
    (pass the same dict to a second explorer to reuse them); earlier runs stay on the plot in grey.

    Args:
        evaluator: a global evaluator (:class:`~qevo_lite.evaluators.incremental.IncrementalEvaluator` is fastest).
            Its reference moves during a run and is reset to ``start`` by the next one.
        p, lam: the settings of the first (static) figure.
        interactive: ``False`` returns the static figure; ``True`` an ipywidgets ``VBox`` (a
            ``SelectionSlider`` for ``p`` and an ``IntSlider`` for ``lambda``); ``None`` picks the
            widget only when a Jupyter frontend can show it.
    """

    if p not in p_choices:
        raise ValueError(f"p={p} is not one of the choices {tuple(p_choices)}.")
    if not 1 <= lam <= max_lam:
        raise ValueError(f"lam must be in 1..{max_lam}, got {lam}.")
    ESConfig(p=p, lam=lam, max_evaluations=max_evaluations, mutation=mutation)  # validate early
    start = dict(start if start is not None else evaluator.reference)
    cache = {} if cache is None else cache

    def result(p_: float, lam_: int):
        if (p_, lam_) not in cache:
            cfg = ESConfig(p=p_, lam=lam_, max_evaluations=max_evaluations, mutation=mutation, adapt="none",
                           seed=seed)
            cache[(p_, lam_)] = run_es(evaluator, cfg, start=start, progress=False)
        return cache[(p_, lam_)]

    def draw(p: float, lam: int):
        import matplotlib.pyplot as plt
        res = result(p, lam)
        fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
        for (p_, lam_), other in cache.items():
            if (p_, lam_) != (p, lam):
                ax.plot([h["evaluations"] for h in other.history], [h["best"] for h in other.history],
                        color="0.75", lw=1)
        ax.plot([h["evaluations"] for h in res.history], [h["best"] for h in res.history], "-o", ms=3,
                color="C0", label=f"p={p}, lambda={lam}")
        ax.set_xlabel("fitness evaluations")
        ax.set_ylabel("best search-split loss (nats)")
        acc = res.best_eval.metric
        ax.set_title(f"(1+{lam}) ES, p={p} fixed, {max_evaluations} evaluations: best loss "
                     f"{res.best_eval.fitness:.3f}" + (f", search accuracy {100 * acc:.1f}%" if acc is not None
                                                       else ""), fontsize=9)
        ax.legend(fontsize=8, title="grey: earlier settings" if len(cache) > 1 else None, title_fontsize=8)
        return fig

    if interactive is None:
        interactive = _has_frontend()
    if not interactive:
        return draw(p, lam)

    import ipywidgets as widgets

    controls = {
        "p": widgets.SelectionSlider(options=list(p_choices), value=p, description="p",
                                     continuous_update=False),
        "lam": widgets.IntSlider(value=lam, min=1, max=max_lam, step=1, description="lambda",
                                 continuous_update=False),
    }
    return _explorer(draw, controls)
