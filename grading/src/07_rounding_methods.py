# %% [raw]
# # ASSIGNMENT CONFIG
# name: 07_rounding_methods
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 07 · Rounding methods: the pieces behind GPTQ, AdaRound and the ES's local stage
#
# Its questions are also the exercises of the tutorial notebook `07_rounding_methods` (same prompts, stubs and
# public checks). Each question asks for one piece of a method; the checks below a question run on small fixed
# inputs, and the grader runs further hidden tests on fresh random inputs against the package's own implementation
# (which your code may not call).

# %%
import torch

# %% [raw]
# # BEGIN QUESTION
# name: q1_output_error
# points: 1

# %% [markdown]
# **Question 1 (weight error vs output error).** Write `output_error(d, h)`: `d^T H d` for a weight change
# `d` (K,) and the layer's input Hessian `H = X X^T` (K, K). It is the change of one output row's squared
# error when its residual is zero, i.e. `||d X||^2`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def output_error(d, h):
    # BEGIN SOLUTION
    return d @ h @ d
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
x = torch.arange(12.0).reshape(3, 4) / 10
d = torch.tensor([1.0, -2.0, 0.5])
assert abs(float(output_error(d, x @ x.T)) - float((d @ x).pow(2).sum())) < 1e-5

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
g = torch.Generator().manual_seed(7)
for k in (1, 5, 17):
    x = torch.randn(k, 50, generator=g, dtype=torch.float64)
    d = torch.randn(k, generator=g, dtype=torch.float64)
    assert abs(float(output_error(d, x @ x.T)) - float((d @ x).pow(2).sum())) < 1e-8

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_move_change
# points: 2

# %% [markdown]
# **Question 2 (the quadratic fitness of the ES's local stage).** For one output row with linear term `g`
# (K,), Hessian `H` (K, K) and grid step `step`, write `move_change(g, h, step, i, j, si, sj)`: the exact
# change of the row's squared output error when code `i` moves by `si` and code `j` by `sj` steps
# (`si, sj` in {-1, +1}, `i != j`). With `d` the weight change, it is `2 d.g + d^T H d`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def move_change(g, h, step, i, j, si, sj):
    # BEGIN SOLUTION
    di, dj = step * si, step * sj
    return 2 * (di * g[i] + dj * g[j]) + di * di * h[i, i] + dj * dj * h[j, j] + 2 * di * dj * h[i, j]
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
g0, h0 = torch.tensor([1.0, 0.0, -1.0]), torch.eye(3)
assert abs(float(move_change(g0, h0, 0.5, 0, 2, 1, 1)) - 0.5) < 1e-6   # 2*(0.5 - 0.5) + 0.25 + 0.25

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import qevo_lite as qv
from qevo_lite.evaluators.quadratic import LayerQuadratic
from qevo_lite.grading import forbidden
_ = torch.manual_seed(11)
layer = torch.nn.Linear(10, 5)
lq = qv.quantize_model(torch.nn.Sequential(layer), bits=3).layers["0"]
x = torch.randn(80, 10)
q = LayerQuadratic(layer, lq, x, layer(x).detach() + 0.1 * torch.randn(80, 5))
cases = [(r, i, j, si, sj) for r in (0, 4) for (i, j) in ((1, 3), (9, 0)) for si in (-1, 1) for sj in (-1, 1)]
want = [float(q.delta(torch.tensor([r]), torch.tensor([[i, j]]), torch.tensor([[si, sj]]))) for r, i, j, si, sj in cases]
with forbidden((LayerQuadratic, "delta"), namespaces=[move_change.__globals__]):
    got = [float(move_change(q.g[r], q.h[0], float(q.step[r]), i, j, si, sj)) for r, i, j, si, sj in cases]
for a, b in zip(got, want):
    assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), (a, b)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_rounding_regulariser
# points: 1

# %% [markdown]
# **Question 3 (AdaRound's regulariser).** Write `rounding_regulariser(h, beta)`: `sum(1 - |2 h - 1|^beta)`
# over relaxed roundings `h` in [0, 1]. It is zero when every `h` is 0 or 1 and largest at 0.5; with a large
# `beta` it is almost flat, with `beta = 2` it pushes hard towards 0 or 1.

# %% [raw]
# # BEGIN SOLUTION

# %%
def rounding_regulariser(h, beta):
    # BEGIN SOLUTION
    return (1 - (2 * h - 1).abs() ** beta).sum()
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert abs(float(rounding_regulariser(torch.tensor([0.0, 1.0, 0.5]), 2.0)) - 1.0) < 1e-6

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.grading import forbidden
from qevo_lite.rounding import adaround as adaround_module
g = torch.Generator().manual_seed(3)
for beta in (2.0, 7.5, 20.0):
    h = torch.rand(200, generator=g)
    want = float(adaround_module.rounding_regulariser(h, beta))
    with forbidden((adaround_module, "rounding_regulariser"), namespaces=[rounding_regulariser.__globals__]):
        got = float(rounding_regulariser(h, beta))
    assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (beta, got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
