"""Layer 1, quant: the uniform grid, BN folding, the quantized state, the RTN baseline, layer
sensitivity, boundary flips, packed export and ONNX export with integer weights. Imports only core."""
