"""Layer 0, core: datasets and splits, model builders, the training loop, evaluation, the checkpoint
registry and atomic file writes. Imports nothing else of the package."""
