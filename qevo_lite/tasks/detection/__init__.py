"""Object detection: CenterNet-style VGG/ResNet detectors on generated glyph canvases, notebook 05."""
from .comparison import run_fitness_comparison, summarize_comparison
from .data import (DATASETS, DetectionSplit, DetectionSplits, load_dataset, load_detection_splits, load_glyphs,
                   load_voc, make_canvases, tight_box)
from .metrics import detection_loss_on, evaluate_detector, map_fitness, mean_average_precision, predict
from .models import ARCHITECTURES, RECIPES, CenterHead, ResNetDetector, VGGDetector, build_model
from .plots import draw_boxes, plot_before_after, plot_fitness_comparison, plot_samples
from .targets import STRIDE, decode, detection_loss, encode_targets, outputs_from_targets, targets_from_dense
from .task import PROFILES, TASK, TUNED_PEERS, DetectionOptions, DetectionTask, train_detector

__all__ = ["ARCHITECTURES", "DATASETS", "PROFILES", "RECIPES", "STRIDE", "TASK", "TUNED_PEERS", "CenterHead",
           "DetectionOptions", "DetectionSplit", "DetectionSplits", "DetectionTask", "ResNetDetector", "VGGDetector", "build_model",
           "decode", "detection_loss", "detection_loss_on", "draw_boxes", "encode_targets", "evaluate_detector",
           "load_dataset", "load_detection_splits", "load_glyphs", "load_voc", "make_canvases", "map_fitness",
           "mean_average_precision", "outputs_from_targets", "plot_before_after", "plot_fitness_comparison",
           "plot_samples", "predict", "run_fitness_comparison", "summarize_comparison", "targets_from_dense",
           "tight_box", "train_detector"]
