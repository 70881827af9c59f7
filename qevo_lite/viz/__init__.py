"""Layer 6, viz: one figure style; quantization, ES and experiment plots; ipywidgets explorers."""
