"""Layer 1, quant: the uniform grid, BN folding, the quantized state, the RTN baseline, layer
sensitivity, boundary flips and packed export. Imports only core."""
