# %% [raw]
# # ASSIGNMENT CONFIG
# name: 01_nearest_neighbour_quantization
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 01 · Nearest-neighbour quantization
#
# Its questions are also the exercises of the tutorial notebook `01_nearest_neighbour_quantization` (same prompts,
# stubs and public checks). Each question asks for one piece of weight quantization; the checks below a question
# run on small fixed inputs, and the grader runs further hidden tests on fresh random inputs against the package's
# own implementation (which your code may not call).
#
# Reminder: a weight `w` is stored as an integer code `q` on a grid `qmin..qmax` and decoded as
# `w_hat = scale * (q - zero_point)`; nearest rounding picks `q = clamp(round(w / scale) + zero_point, qmin, qmax)`.

# %%
import math

import torch

# %% [raw]
# # BEGIN QUESTION
# name: q1_rtn_codes
# points: 1

# %% [markdown]
# **Question 1 (symmetric grid).** Write `rtn_codes(w, bits)`: the per-tensor `maxabs_full` codes of a float
# tensor `w`: grid `-2^(b-1) .. 2^(b-1)-1`, `scale = max|w| / 2^(b-1)` (1 if `w` is all zeros), zero point 0.
# Return an int16 tensor shaped like `w`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def rtn_codes(w, bits):
    # BEGIN SOLUTION
    scale = w.abs().max() / 2 ** (bits - 1)
    if scale == 0:
        scale = torch.tensor(1.0)
    return torch.clamp(torch.round(w / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).to(torch.int16)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
out = rtn_codes(torch.tensor([-1.0, -0.3, 0.0, 0.26, 1.0]), 3)
assert out.dtype == torch.int16 and out.tolist() == [-4, -1, 0, 1, 3], out

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.grading import forbidden
from qevo_lite.quant import grid
from qevo_lite.quant.grid import QuantConfig
g = torch.Generator().manual_seed(101)
for b in (2, 3, 4, 6, 8):
    w = torch.randn(5, 3, 3, 3, generator=g) * b
    want = grid.quantize_tensor(w, QuantConfig(b, granularity="per_tensor", scale_rule="maxabs_full"))[0]
    with forbidden((grid, "quantize_tensor"), namespaces=[rtn_codes.__globals__]):
        got = torch.as_tensor(rtn_codes(w, b))
    assert torch.equal(got.to(torch.int16), want), b

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_asymmetric
# points: 2

# %% [markdown]
# **Question 2 (asymmetric grid with a zero point).** Weights that are mostly positive (or mostly negative)
# waste half of a symmetric grid. An asymmetric grid uses codes `0 .. 2^b - 1` over the range
# `[lo, hi] = [min(w.min(), 0), max(w.max(), 0)]`: `scale = (hi - lo) / (2^b - 1)` (1 if that is 0) and
# `zero_point = clamp(-round(lo / scale), 0, 2^b - 1)`, so that the float 0 is exactly a grid point.
# Write `asymmetric_codes(w, bits)` returning `(codes, scale, zero_point)`: int16 codes shaped like `w`,
# a float `scale` and an int `zero_point`, for one grid over the whole tensor.

# %% [raw]
# # BEGIN SOLUTION

# %%
def asymmetric_codes(w, bits):
    # BEGIN SOLUTION
    qmax = 2 ** bits - 1
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    scale = (hi - lo) / qmax or 1.0
    zp = int(min(max(-round(lo / scale), 0), qmax))
    codes = torch.clamp(torch.round(w / scale) + zp, 0, qmax).to(torch.int16)
    return codes, scale, zp
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
c, s, z = asymmetric_codes(torch.tensor([0.0, 0.5, 1.0, 1.5]), 2)
assert abs(s - 0.5) < 1e-6 and z == 0 and c.tolist() == [0, 1, 2, 3], (c, s, z)

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.grading import forbidden
from qevo_lite.quant import grid
from qevo_lite.quant.grid import QuantConfig
g = torch.Generator().manual_seed(202)
for b in (2, 3, 5, 8):
    for shift in (-1.0, 0.0, 0.7, 3.0):
        w = torch.randn(64, generator=g) + shift
        codes, scale, zp = grid.quantize_tensor(w.reshape(1, -1), QuantConfig(b, "asymmetric", "per_tensor"))
        with forbidden((grid, "quantize_tensor"), namespaces=[asymmetric_codes.__globals__]):
            got_c, got_s, got_z = asymmetric_codes(w, b)
        assert abs(float(got_s) - float(scale)) <= 1e-6 * float(scale), (b, shift)
        assert int(got_z) == int(zp), (b, shift)
        assert torch.equal(torch.as_tensor(got_c).to(torch.int16).reshape(-1), codes.reshape(-1)), (b, shift)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_packed_size
# points: 1

# %% [markdown]
# **Question 3 (the real size of a quantized model).** The package's export (`qevo_lite.quant.export`) stores
# each quantized layer as its codes bit-packed at `bits` bits each (`ceil(n * bits / 8)` bytes for `n`
# weights), one float32 scale and one int16 zero point per grid (per output channel, or one per tensor), and,
# if the layer has one, its float32 bias. Write `packed_bytes(layers, bits)`: the payload size in bytes,
# where `layers` is a list of `(n_weights, n_grids, n_bias)` tuples (`n_bias` is 0 for a layer without bias).
# Compare with the FP32 size, `4 * (n_weights + n_bias)` per layer.

# %% [raw]
# # BEGIN SOLUTION

# %%
def packed_bytes(layers, bits):
    # BEGIN SOLUTION
    return sum(math.ceil(n * bits / 8) + 4 * r + 2 * r + 4 * nb for n, r, nb in layers)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert packed_bytes([(10, 1, 0)], 3) == 4 + 4 + 2
assert packed_bytes([(8, 2, 2), (3, 1, 0)], 8) == (8 + 8 + 4 + 8) + (3 + 4 + 2)

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import tempfile
from pathlib import Path
from qevo_lite.grading import forbidden
from qevo_lite.quant import export, grid
from qevo_lite.quant.grid import QuantConfig
_ = torch.manual_seed(303)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 7, 3), torch.nn.ReLU(), torch.nn.Conv2d(7, 5, 1, bias=False),
                            torch.nn.Flatten(), torch.nn.Linear(5 * 4 * 4, 9))
for b, gran in ((2, "per_channel"), (3, "per_tensor"), (5, "per_channel")):
    state = grid.quantize_model(model, QuantConfig(b, granularity=gran))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.qevo"
        size = export.save_state(state, path, model)
        raw = path.read_bytes()
    payload = size - len(export.MAGIC) - 4 - int.from_bytes(raw[len(export.MAGIC):len(export.MAGIC) + 4], "little")
    layers = [(lq.codes.numel(), lq.scale.numel(), 0 if model.get_submodule(n).bias is None else
               model.get_submodule(n).bias.numel()) for n, lq in state.layers.items()]
    with forbidden((export, "save_state"), (export, "pack_codes"), namespaces=[packed_bytes.__globals__]):
        got = packed_bytes(layers, b)
    assert got == payload, (b, gran, got, payload)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
