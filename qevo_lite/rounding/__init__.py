"""Layer 3, rounding: the peers of the ES that also choose codes on a quantized state's grid (scales and
zero points fixed): GPTQ (greedy, with error feedback through the input Hessian) and AdaRound (a learned,
relaxed up/down choice per weight). Both return a :class:`~qevo_lite.quant.grid.QuantState`."""

# display names of the peers, in the order tables and figures list them
PEER_LABELS = {"gptq": "GPTQ", "adaround": "AdaRound"}
