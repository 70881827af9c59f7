"""Layer 2, evaluators: fitness of candidate codes (full network, incremental, layer-wise)."""
