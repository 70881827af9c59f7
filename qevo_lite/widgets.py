"""Interactive explorers for the notebooks (core ipywidgets only).

Every explorer has a static default path: with ``interactive=False`` (or when no Jupyter
kernel is running, or when the environment variable ``QEVO_STATIC_WIDGETS=1`` is set, e.g.
for a PDF export) it draws the figure for its default settings and returns the
:class:`matplotlib.figure.Figure` instead of a widget.
"""
from __future__ import annotations

import os

from torch import nn

from .data import Split
from .evaluate import evaluate
from .fold import quantizable_layers
from .plots import plot_weight_histogram
from .quant import GRANULARITIES, SCALE_RULES, QuantConfig, quantize_model


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


def bit_width_explorer(model: nn.Module, split: Split, bits: int = 3, granularity: str = "per_channel",
                       scale_rule: str = "maxabs_full", layer: str | None = None, channel: int = 0,
                       n_eval: int = 512, interactive: bool | None = None):
    """Explore nearest rounding: bit width, granularity and scale rule against a layer's weights and accuracy.

    Draws the float weights of ``layer`` (default: the layer with most weights) with the grid
    of the chosen settings, titled with the accuracy of the whole quantized model on the first
    ``n_eval`` images of ``split`` (and the float model's, for reference).

    Args:
        model: a BN-folded float model (:func:`qevo_lite.fold.fold_batchnorm`); not modified.
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
    import matplotlib.pyplot as plt
    from IPython.display import display

    controls = {
        "bits": widgets.IntSlider(value=bits, min=2, max=8, step=1, description="bits",
                                  continuous_update=False),
        "granularity": widgets.Dropdown(options=list(GRANULARITIES), value=granularity, description="granularity"),
        "scale_rule": widgets.Dropdown(options=list(SCALE_RULES), value=scale_rule, description="scale rule"),
    }

    def show(**kwargs):
        fig = draw(**kwargs)
        display(fig)
        plt.close(fig)

    out = widgets.interactive_output(show, controls)
    return widgets.VBox([widgets.HBox(list(controls.values())), out])
