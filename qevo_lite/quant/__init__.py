"""Layer 1, quant: the uniform grid, BN folding, the quantized state, the RTN baseline, layer
sensitivity, boundary flips, packed export and ONNX export with integer weights. Imports only core.

The names below are the layer's face: what the notebooks (and users) import from ``qevo_lite.quant``.
Each module stays importable by its own path.
"""
from .fold import fold_batchnorm, quantizable_layers
from .grid import SCALE_RULES, LayerQuant, QuantConfig, QuantState, quantize_model, quantize_tensor
from .rtn import best_rtn, rtn_table
from .flips import apply_flips, boundary_candidates, random_boundary_flips
from .sensitivity import layer_sensitivity
from .export import float_size_bytes, load_state, save_state
from .onnx_export import OnnxExport, export_float_onnx, export_onnx, run_onnx

__all__ = ["LayerQuant", "OnnxExport", "QuantConfig", "QuantState", "SCALE_RULES", "apply_flips", "best_rtn",
           "boundary_candidates", "export_float_onnx", "export_onnx", "float_size_bytes", "fold_batchnorm",
           "layer_sensitivity", "load_state", "quantizable_layers", "quantize_model", "quantize_tensor",
           "random_boundary_flips", "rtn_table", "run_onnx", "save_state"]
