"""qevo-lite: learn post-training rounding, and evolve it beyond nearest-neighbour rounding.

The data flows one way: data -> pretrained model -> quantized state (nearest rounding)
-> evolution strategy over that state -> held-out evaluation -> tables and figures.
"""
from .data import DatasetUnavailable, Split, Splits, load_splits
from .models import build_model, ARCHITECTURES
from .fold import fold_batchnorm, quantizable_layers
from .quant import QuantConfig, QuantState, LayerQuant, quantize_model, quantize_tensor, SCALE_RULES
from .export import save_state, load_state, float_size_bytes
from .evaluate import evaluate, predict_logits, default_device
from .train import train_classifier
from .checkpoints import load_pretrained, train_checkpoint

__version__ = "0.1.0"
