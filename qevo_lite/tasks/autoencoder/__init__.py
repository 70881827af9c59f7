"""Anomaly detection with a convolutional autoencoder on Fashion-MNIST, notebook 06."""
from .data import DEFAULT_NORMAL_CLASSES, AESplits, ae_splits, is_normal
from .metrics import ae_metrics, anomaly_scores, auroc, per_image_mse, psnr_db, reconstruct, search_mse
from .model import ARCH, LATENT_DIM, ConvAutoencoder, build_model
from .plots import plot_reconstructions, plot_roc
from .task import PROFILES, RECIPES, TASK, TUNED_PEERS, AutoencoderOptions, AutoencoderTask, train_autoencoder

__all__ = ["ARCH", "DEFAULT_NORMAL_CLASSES", "LATENT_DIM", "PROFILES", "RECIPES", "TASK", "TUNED_PEERS", "AESplits", "AutoencoderOptions",
           "AutoencoderTask", "ConvAutoencoder", "ae_metrics", "ae_splits", "anomaly_scores", "auroc", "build_model",
           "is_normal", "per_image_mse", "plot_reconstructions", "plot_roc", "psnr_db", "reconstruct", "search_mse",
           "train_autoencoder"]
