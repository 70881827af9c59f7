# %% [raw]
# # ASSIGNMENT CONFIG
# name: 03_vgg_classification
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 03 · The experiment on a VGG
#
# Its questions are also the exercises of the tutorial notebook `03_vgg_classification` (same prompts, stubs and
# public checks). The questions read the results of a finished run (`cached_results("classification_cells")`,
# written by `python scripts/grading.py cache` from the output of `./run.sh demo --profile fast`), so nothing is
# retrained or re-run here. The checks below a question run on those numbers; the grader runs further hidden tests
# on fresh random inputs against the package's own code (which your code may not call).

# %%
import statistics

import torch

from qevo_lite.grading import cached_results

data = cached_results("classification_cells")
vgg = data["vgg_small"]
print(f"{len(vgg['cells'])} cells of vgg_small; RTN rows at bits {sorted({r['bits'] for r in vgg['rtn_rows']})}")

# %% [raw]
# # BEGIN QUESTION
# name: q1_target_bits
# points: 1

# %% [markdown]
# **Question 1 (choose on the search split).** Write `target_bits(rtn_rows, fp32_search, points=2.0)`: the
# lowest bit width where per-channel RTN (rows with `granularity == "per_channel"`) loses at least `points`
# accuracy points (percent) against FP32 on the **search** split. Each row has `bits`, `granularity`,
# `search` and `test` accuracies (fractions). The test split must not decide anything.

# %% [raw]
# # BEGIN SOLUTION

# %%
def target_bits(rtn_rows, fp32_search, points=2.0):
    # BEGIN SOLUTION
    return min(r["bits"] for r in rtn_rows if r["granularity"] == "per_channel"
               and 100 * (fp32_search - r["search"]) >= points)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert target_bits(vgg["rtn_rows"], vgg["fp32_search_accuracy"]) == 2

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.grading import forbidden
from qevo_lite.tasks.classification import walk
g = torch.Generator().manual_seed(606)
for _ in range(50):
    rows = [{"bits": b, "granularity": gr, "search": float(torch.rand(1, generator=g)) * 0.3 + 0.6,
             "test": float(torch.rand(1, generator=g))} for b in (2, 3, 4, 8) for gr in ("per_channel", "per_tensor")]
    rows[-2]["search"] = 0.0          # W8 per channel always hurts: a target exists
    fp = 0.95
    want = walk.target_bits(rows, fp)
    with forbidden((walk, "target_bits"), namespaces=[target_bits.__globals__]):
        assert target_bits(rows, fp) == want

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_seed_noise
# points: 1

# %% [markdown]
# **Question 2 (seed noise).** Write `seed_noise(cells, bits, key="es_test_accuracy")`: the *sample*
# standard deviation over seeds of `key` among the cells (a list of dicts with `bits`, `seed` and `key`) at
# bit width `bits`; 0.0 when there is a single seed. The README's tables and the targets compare methods
# against this noise.

# %% [raw]
# # BEGIN SOLUTION

# %%
def seed_noise(cells, bits, key="es_test_accuracy"):
    # BEGIN SOLUTION
    values = [c[key] for c in cells if c["bits"] == bits]
    return statistics.stdev(values) if len(values) > 1 else 0.0
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
got = seed_noise(vgg["cells"], 2)
assert abs(got - vgg["es_test_accuracy_std"]["2"]) < 1e-6, got

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.core import stats
from qevo_lite.grading import forbidden
g = torch.Generator().manual_seed(707)
for n in (1, 2, 3, 7):
    cells = [{"bits": b, "seed": s, "es_test_accuracy": float(torch.rand(1, generator=g)),
              "adaround_test_accuracy": float(torch.rand(1, generator=g))} for b in (2, 3) for s in range(n)]
    for key in ("es_test_accuracy", "adaround_test_accuracy"):
        want = stats.mean_std([c[key] for c in cells if c["bits"] == 3])[1]
        with forbidden((stats, "mean_std"), namespaces=[seed_noise.__globals__]):
            got = seed_noise(cells, 3, key)
        assert abs(got - want) < 1e-6, (n, key, got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_moved_shares
# points: 2

# %% [markdown]
# **Question 3 (where the ES moved weights).** Write `moved_shares(rtn_codes, es_codes)` for two dicts
# `{layer: int16 codes}` with the same layers and shapes: return `(per_layer, overall)`, where `per_layer`
# maps each layer (in the same order) to the share of its codes that differ, and `overall` is the share of
# all codes that differ (every weight counts once, so big layers weigh more).

# %% [raw]
# # BEGIN SOLUTION

# %%
def moved_shares(rtn_codes, es_codes):
    # BEGIN SOLUTION
    per_layer, moved_n, total = {}, 0, 0
    for name, c in rtn_codes.items():
        k = int((es_codes[name] != c).sum())
        per_layer[name] = k / c.numel()
        moved_n, total = moved_n + k, total + c.numel()
    return per_layer, moved_n / total
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
a = {"conv": torch.zeros(2, 3, dtype=torch.int16), "fc": torch.zeros(4, dtype=torch.int16)}
b = {"conv": torch.tensor([[0, 1, 0], [0, 0, 0]], dtype=torch.int16), "fc": torch.tensor([1, -1, 0, 0], dtype=torch.int16)}
per_layer, overall = moved_shares(a, b)
assert list(per_layer) == ["conv", "fc"] and abs(per_layer["conv"] - 1 / 6) < 1e-6 and abs(overall - 0.3) < 1e-6

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.experiment import moved
from qevo_lite.grading import forbidden
from qevo_lite.quant.grid import QuantConfig, quantize_model
_ = torch.manual_seed(808)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1), torch.nn.Flatten(),
                          torch.nn.Linear(4, 10))
rtn = quantize_model(net, QuantConfig(3))
g = torch.Generator().manual_seed(9)
es = rtn.with_codes({n: torch.where(torch.rand(lq.codes.shape, generator=g) < 0.1,
                                    (lq.codes + 1).clamp(lq.qmin, lq.qmax), lq.codes) for n, lq in rtn.layers.items()})
want = moved.moved_analysis(rtn, es)
with forbidden((moved, "moved_analysis"), namespaces=[moved_shares.__globals__]):
    per_layer, overall = moved_shares({n: lq.codes for n, lq in rtn.layers.items()},
                                      {n: lq.codes for n, lq in es.layers.items()})
assert list(per_layer) == list(want["per_layer"])
assert all(abs(per_layer[n] - v["share"]) < 1e-6 for n, v in want["per_layer"].items())
assert abs(overall - want["share"]) < 1e-6

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
