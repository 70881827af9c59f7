# %% [raw]
# # ASSIGNMENT CONFIG
# name: 02_es_operators
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 02 · The evolution strategy and its operators
#
# Its questions are also the exercises of the tutorial notebook `02_es_operators` (same prompts, stubs and public
# checks). The checks below a question run on small fixed inputs; the grader runs further hidden tests on fresh
# random inputs, against the package's own code where it has one (which your code may not call).

# %%
import torch

from qevo_lite.quant import QuantConfig, quantize_model

# %% [raw]
# # BEGIN QUESTION
# name: q1_one_fifth_rule
# points: 2

# %% [markdown]
# **Question 1 (Rechenberg's 1/5 success rule, per offspring).** A (1+λ) ES makes `lam` children per
# generation; a child *succeeds* when it beats the parent. Write `one_fifth_p(successes, p0, window, lam,
# p_min=1e-5)`: given the number of successful children of each generation (a list of ints), return the
# mutation rate after each generation, starting from `p0`. After every `window` generations, with `rate` =
# the successes of those `window` generations divided by `window * lam`, multiply `p` by 1.22 if
# `rate > 1/5`, by 0.82 if `rate < 1/5`, keep it if exactly 1/5, and keep it within `[p_min, 1]`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def one_fifth_p(successes, p0, window, lam, p_min=1e-5):
    # BEGIN SOLUTION
    p, out = p0, []
    for gen in range(1, len(successes) + 1):
        if gen % window == 0:
            rate = sum(successes[gen - window:gen]) / (window * lam)
            p = min(1.0, max(p_min, p * (1.22 if rate > 0.2 else 0.82 if rate < 0.2 else 1.0)))
        out.append(p)
    return out
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
got = one_fifth_p([4, 4, 0, 0, 2, 1], 0.01, 2, 8)
want = [0.01, 0.0122, 0.0122, 0.0122 * 0.82, 0.0122 * 0.82, 0.0122 * 0.82 ** 2]   # 8/16 > 1/5, 0 < 1/5, 3/16 < 1/5
assert len(got) == 6 and all(abs(a - b) < 1e-6 for a, b in zip(got, want)), got

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.es import engine
from qevo_lite.grading import forbidden
g = torch.Generator().manual_seed(404)
for lam, window in ((4, 1), (8, 3), (16, 5)):
    succ = torch.randint(0, lam + 1, (60,), generator=g).tolist()
    p, want = 0.3, []
    for gen in range(1, 61):
        if gen % window == 0:
            p = engine.one_fifth_rule(p, succ[gen - window:gen], lam, 1e-5)
        want.append(p)
    with forbidden((engine, "one_fifth_rule"), namespaces=[one_fifth_p.__globals__]):
        got = one_fifth_p(succ, 0.3, window, lam)
    assert len(got) == 60 and all(abs(a - b) <= 1e-12 + 1e-9 * b for a, b in zip(got, want)), (lam, window)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_plus_selection
# points: 1

# %% [markdown]
# **Question 2 (plus selection).** In a (1+λ) ES the parent competes with its children. Write
# `plus_select(parent_fitness, children_fitness)`: the index of the best child (lowest fitness: a loss) if it
# is not worse than the parent, else `-1` (the parent stays). Ties between children go to the first; a
# child that ties the parent is accepted (it lets the search drift across plateaus).

# %% [raw]
# # BEGIN SOLUTION

# %%
def plus_select(parent_fitness, children_fitness):
    # BEGIN SOLUTION
    best = min(range(len(children_fitness)), key=lambda i: (children_fitness[i], i))
    return best if children_fitness[best] <= parent_fitness else -1
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert plus_select(1.0, [1.2, 0.9, 0.95]) == 1
assert plus_select(0.5, [0.6, 0.7]) == -1

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
assert plus_select(0.5, [0.5, 0.7]) == 0, "a child that ties the parent is accepted"
assert plus_select(1.0, [0.3, 0.3, 0.9]) == 0, "ties between children go to the first"
g = torch.Generator().manual_seed(505)
for _ in range(200):
    kids = (torch.rand(int(torch.randint(1, 12, (1,), generator=g)), generator=g)).tolist()
    parent = float(torch.rand(1, generator=g))
    best = min(range(len(kids)), key=lambda i: (kids[i], i))
    assert plus_select(parent, kids) == (best if kids[best] <= parent else -1)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_mutate_boundary
# points: 2

# %% [markdown]
# **Question 3 (a mutation operator).** Write `mutate_boundary(codes, lq, p, g)` that only moves weights
# sitting close to a rounding boundary: each weight whose residual *with respect to `codes`*,
# `w / step + zero_point - codes`, has magnitude above 0.4 is picked with probability `p` (draw with the
# generator `g`) and moved one code towards its float value (the sign of the residual), clamped to
# `lq.qmin..lq.qmax`. Return new codes; do not modify `codes`. (`lq` is a `LayerQuant`: `lq.weight`,
# `lq.step()` (the scale broadcast to the weight), `lq.zero_point` (per row), `lq.qmin`, `lq.qmax`.)

# %% [raw]
# # BEGIN SOLUTION

# %%
def mutate_boundary(codes, lq, p, g):
    # BEGIN SOLUTION
    zp = lq.zero_point.reshape((-1,) + (1,) * (codes.dim() - 1))
    resid = lq.weight / lq.step() + zp - codes.float()
    pick = (resid.abs() > 0.4) & (torch.rand(codes.shape, generator=g) < p)
    return torch.where(pick, (codes + torch.sign(resid).to(torch.int16)).clamp(lq.qmin, lq.qmax), codes)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
_ = torch.manual_seed(0)
lq = quantize_model(torch.nn.Sequential(torch.nn.Linear(40, 30)), QuantConfig(3)).layers["0"]
before = lq.codes.clone()
out = torch.as_tensor(mutate_boundary(lq.codes, lq, 0.5, torch.Generator().manual_seed(1)))
assert torch.equal(lq.codes, before), "the parent's codes were modified"
assert out.shape == before.shape and (out != before).any()

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
for seed, bits, p in ((1, 2, 0.1), (2, 4, 0.3), (3, 3, 0.05)):
    _ = torch.manual_seed(seed)
    lq = quantize_model(torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3)), QuantConfig(bits)).layers["0"]
    start = lq.codes.clone()
    out = torch.as_tensor(mutate_boundary(start, lq, p, torch.Generator().manual_seed(seed)))
    resid = lq.weight / lq.step() + lq.zero_point.reshape(-1, 1, 1, 1) - start.float()
    step = out.int() - start.int()
    moved = step != 0
    assert torch.all(resid[moved].abs() > 0.4) and torch.all(step[moved].abs() == 1)
    assert torch.all(torch.sign(step[moved].float()) == torch.sign(resid[moved]))
    assert out.min() >= lq.qmin and out.max() <= lq.qmax
    stuck = ((resid > 0) & (start == lq.qmax)) | ((resid < 0) & (start == lq.qmin))
    movable = ((resid.abs() > 0.4) & ~stuck).sum().item()
    assert abs(moved.sum().item() / movable - p) < 0.04 + 3 * (p / movable) ** 0.5, (seed, moved.sum().item(), movable)
    again = torch.as_tensor(mutate_boundary(start, lq, p, torch.Generator().manual_seed(seed)))
    assert torch.equal(out, again), "the same generator seed must give the same codes"

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
