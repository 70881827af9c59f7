"""qevo-lite: learn post-training rounding, and evolve it beyond nearest-neighbour rounding.

The data flows one way: data -> pretrained model -> quantized state (nearest rounding)
-> evolution strategy over that state -> held-out evaluation -> tables and figures.
The package is layered the same way (imports only go down; see docs/architecture.md):
core -> quant -> evaluators -> rounding -> es -> viz -> experiment -> tasks -> reproduce / cli.
"""
from .core.data import DatasetUnavailable, Split, Splits, load_splits
from .core.evaluate import default_device, evaluate, predict_logits
from .core.models import ARCHITECTURES, build_model
from .core.train import train_classifier
from .es.engine import ESConfig, ESResult, run_es
from .evaluators.full import FullEvaluator
from .evaluators.incremental import IncrementalEvaluator
from .quant.export import float_size_bytes, load_state, save_state
from .quant.fold import fold_batchnorm, quantizable_layers
from .quant.onnx_export import OnnxExport, export_onnx, run_onnx
from .quant.grid import SCALE_RULES, LayerQuant, QuantConfig, QuantState, quantize_model, quantize_tensor
from .quant.rtn import best_rtn
from .rounding.adaround import adaround
from .rounding.gptq import gptq
from . import methods
from .user_model import QuantizeReport, quantize
from .tasks import load_pretrained, train_checkpoint

__version__ = "0.1.0"
__all__ = ["ARCHITECTURES", "DatasetUnavailable", "ESConfig", "ESResult", "FullEvaluator",
           "IncrementalEvaluator", "LayerQuant", "OnnxExport", "QuantConfig", "QuantState", "SCALE_RULES", "Split", "Splits",
           "adaround", "best_rtn", "build_model", "default_device", "evaluate", "export_onnx", "float_size_bytes",
           "fold_batchnorm", "gptq", "load_pretrained", "load_splits", "load_state", "predict_logits",
           "quantize", "QuantizeReport",
           "quantizable_layers", "quantize_model", "quantize_tensor", "run_es", "run_onnx", "save_state",
           "train_checkpoint", "train_classifier"]
