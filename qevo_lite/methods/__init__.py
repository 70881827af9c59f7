"""Layer 5, methods: every way of choosing codes on a quantized state's grid, registered once.

Each line below is the whole registration of one method; adding a method is one module (a frozen config and a
function of a :class:`~qevo_lite.rounding.problem.RoundingProblem`, see :mod:`qevo_lite.methods.registry`)
plus one line here (or one :func:`register` call in your own code). The order is the order of tables and
figures.
"""
from ..es.pipeline import (EvolutionConfig, GlobalStage, GradientStage, PAPER_GLOBAL, QuadraticLocal, SampledLocal,
                           evolve_codes)
from ..rounding.adaround import AdaRoundConfig, round_adaround
from ..rounding.block_reconstruction import BlockReconstructionConfig, round_blocks
from ..rounding.gptq import GPTQConfig, round_gptq
from ..rounding.nearest import RTNConfig, round_nearest
from ..rounding.problem import RoundingProblem
from .registry import (Method, MethodResult, as_config, choose_codes, config_dict, config_from_dict, default_config,
                       describe, get_method, label_of, method_names, register, unregister)

register("rtn", RTNConfig, round_nearest, label="RTN", kind="rtn", seeded=False)
register("gptq", GPTQConfig, round_gptq, label="GPTQ", seeded=False)
register("adaround", AdaRoundConfig, round_adaround, label="AdaRound")
register("brecq", BlockReconstructionConfig, round_blocks, label="BRECQ")
register("es", EvolutionConfig, evolve_codes, label="ES", kind="es")

__all__ = ["AdaRoundConfig", "BlockReconstructionConfig", "EvolutionConfig", "GPTQConfig", "GlobalStage",
           "GradientStage",
           "PAPER_GLOBAL", "Method", "MethodResult",
           "QuadraticLocal", "RTNConfig", "RoundingProblem", "SampledLocal", "as_config", "choose_codes",
           "config_dict", "config_from_dict", "default_config", "describe", "get_method", "label_of",
           "method_names", "register", "unregister"]
