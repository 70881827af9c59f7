"""Layer 3, rounding: ways to choose codes on a quantized state's grid (scales and zero points fixed) that the
ES is compared with: nearest rounding (RTN), GPTQ (greedy, with error feedback through the input Hessian) and
AdaRound (a learned, relaxed up/down choice per weight). Each is a frozen config plus a function of a
:class:`~qevo_lite.rounding.problem.RoundingProblem`; :mod:`qevo_lite.methods` registers them with the ES.

The names below are the layer's face: what the notebooks (and users) import from ``qevo_lite.rounding``.
Each module stays importable by its own path.
"""
from .problem import RoundingProblem
from .layers import layer_by_layer, layer_output_errors

__all__ = ["RoundingProblem", "layer_by_layer", "layer_output_errors"]
