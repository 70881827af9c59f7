"""Layer 3, rounding: ways to choose codes on a quantized state's grid (scales and zero points fixed) that the
ES is compared with: nearest rounding (RTN), GPTQ (greedy, with error feedback through the input Hessian) and
AdaRound (a learned, relaxed up/down choice per weight). Each is a frozen config plus a function of a
:class:`~qevo_lite.rounding.problem.RoundingProblem`; :mod:`qevo_lite.methods` registers them with the ES."""
