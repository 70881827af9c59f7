"""Layer 2, evaluators: fitness of candidate codes (full network, incremental, layer-wise).

The names below are the layer's face: what the notebooks (and users) import from ``qevo_lite.evaluators``.
Each module stays importable by its own path.
"""
from .base import Evaluation, Evaluator, Loss, changed_weights, decode_at, resolve_loss
from .full import FullEvaluator
from .incremental import IncrementalEvaluator
from .layerwise import LayerwiseEvaluator, capture_layer_io
from .quadratic import LayerQuadratic

__all__ = ["Evaluation", "Evaluator", "FullEvaluator", "IncrementalEvaluator", "LayerQuadratic",
           "LayerwiseEvaluator", "Loss", "capture_layer_io", "changed_weights", "decode_at", "resolve_loss"]
