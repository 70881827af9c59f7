"""Layer 6, viz: one figure style; quantization, ES and experiment plots; ipywidgets explorers.

The names below are the layer's face: what the notebooks (and users) import from ``qevo_lite.viz``.
Each module stays importable by its own path.
"""
from . import es_plots, experiment_plots, quant_plots
from .style import new_figure
from .experiment_plots import MethodPoint, plot_methods_vs_time
from .widgets import bit_width_explorer, es_explorer

__all__ = ["MethodPoint", "bit_width_explorer", "es_explorer", "es_plots", "experiment_plots", "new_figure", "plot_methods_vs_time",
           "quant_plots"]
