"""Layer 4, es: the evolution strategy (configuration, engine, operators), its local, gradient and global stages,
and the tools that study it.

The names below are the layer's face: what the notebooks (and users) import from ``qevo_lite.es``.
Each module stays importable by its own path.
"""
from .engine import ESConfig, ESResult, run_es
from .operators import layer_weights, mutate, mutate_residual, mutate_uniform, pick_layer
from .gradient_stage import gradient_stage, loss_curvature
from .stages import global_stage, run_layerwise
from .pipeline import (EvolutionConfig, GlobalStage, GradientStage, PAPER_GLOBAL, QuadraticLocal, SampledLocal, evolve,
                       run_local)
from .study import (RecordingEvaluator, compare_variants, final_metric, format_mean_std, population_best, summarize,
                    time_evaluators)

__all__ = ["ESConfig", "ESResult", "EvolutionConfig", "GlobalStage", "GradientStage", "PAPER_GLOBAL",
           "QuadraticLocal", "RecordingEvaluator", "SampledLocal", "compare_variants", "evolve", "final_metric",
           "format_mean_std", "global_stage", "gradient_stage", "layer_weights", "loss_curvature", "mutate",
           "mutate_residual", "mutate_uniform", "pick_layer", "population_best", "run_es", "run_layerwise", "run_local",
           "summarize", "time_evaluators"]
