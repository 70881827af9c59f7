# %% [raw]
# # ASSIGNMENT CONFIG
# name: 05_detection
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 05 · Quantized object detectors
#
# Its questions are also the exercises of the tutorial notebook `05_detection` (same prompts, stubs and public
# checks). Question 3 reads a finished run from `cached_results("detection_cells")` (nothing is retrained here).
# The checks below a question run on small fixed inputs; the grader runs further hidden tests on fresh random
# inputs against the package's (or torchvision's) own code, which your code may not call.

# %%
from qevo_lite.grading import cached_results

data = cached_results("detection_cells")
print(f"{len(data['cells'])} cells: {sorted({(c['arch'], c['bits']) for c in data['cells']})}")

# %% [raw]
# # BEGIN QUESTION
# name: q1_box_iou
# points: 1

# %% [markdown]
# **Question 1 (intersection over union).** Write `box_iou(a, b)`: the IoU of two boxes given as
# `(x1, y1, x2, y2)` in pixels (`x2 > x1`, `y2 > y1`); 0 when they do not overlap. mAP counts a detection as
# correct when its IoU with a ground-truth box of its class is above a threshold (0.5 for mAP@0.5; 0.5 to
# 0.95 in steps of 0.05 for mAP@[.5:.95]).

# %% [raw]
# # BEGIN SOLUTION

# %%
def box_iou(a, b):
    # BEGIN SOLUTION
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert abs(box_iou((0, 0, 2, 2), (1, 1, 3, 3)) - 1 / 7) < 1e-6
assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import torch
import torchvision.ops
from qevo_lite.grading import forbidden
g = torch.Generator().manual_seed(1212)
xy = torch.rand(200, 2, 2, generator=g) * 64
boxes = torch.cat([xy.min(1).values, xy.max(1).values + 0.5], 1)
want = torchvision.ops.box_iou(boxes[:100], boxes[100:]).diagonal()
with forbidden((torchvision.ops, "box_iou"), namespaces=[box_iou.__globals__], modules=("qevo_lite", "torchvision")):
    got = torch.tensor([box_iou(a.tolist(), b.tolist()) for a, b in zip(boxes[:100], boxes[100:])])
assert torch.allclose(got, want, atol=1e-6)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_encode_box
# points: 2

# %% [markdown]
# **Question 2 (a box on the detector's grid).** The detectors predict on a grid of cells `stride` pixels
# wide. Write `encode_box(box, stride)` for a box `(x1, y1, x2, y2)` in pixels: return `(ix, iy, w, h, dx,
# dy)`, where, in cell units (pixels / stride), `w, h` are the box's width and height, `(cx, cy)` its centre,
# `ix = min(int(cx), G - 1)` and `iy` likewise are the centre's cell (with `G = 64 // stride` cells per side on
# the 64x64 canvas), and `dx = cx - ix`, `dy = cy - iy` the centre's offset inside that cell.

# %% [raw]
# # BEGIN SOLUTION

# %%
def encode_box(box, stride):
    # BEGIN SOLUTION
    x1, y1, x2, y2 = (v / stride for v in box)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    last = 64 // stride - 1
    ix, iy = min(int(cx), last), min(int(cy), last)
    return ix, iy, w, h, cx - ix, cy - iy
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert tuple(round(v, 6) for v in encode_box((4, 8, 12, 20), 4)) == (2, 3, 2.0, 3.0, 0.0, 0.5)

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import torch
from qevo_lite.grading import forbidden
from qevo_lite.tasks.detection import targets as det_targets
g = torch.Generator().manual_seed(1313)
for _ in range(40):
    x1, y1 = (torch.rand(2, generator=g) * 40).tolist()
    w, h = (torch.rand(2, generator=g) * 20 + 4).tolist()
    box, label = [x1, y1, min(64.0, x1 + w), min(64.0, y1 + h)], int(torch.randint(0, 10, (1,), generator=g))
    dense = det_targets.encode_targets([{"boxes": torch.tensor([box]), "labels": torch.tensor([label])}], 10, 64)[0]
    iy, ix = [int(v) for v in torch.nonzero(dense[14])[0]]
    want = (ix, iy, *dense[10:14, iy, ix].tolist())
    with forbidden((det_targets, "encode_targets"), namespaces=[encode_box.__globals__]):
        got = encode_box(box, det_targets.STRIDE)
    assert got[:2] == want[:2] and all(abs(a - b) < 1e-5 for a, b in zip(got[2:], want[2:])), (got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_gain_over_peer
# points: 1

# %% [markdown]
# **Question 3 (the ES against a rounding peer).** Each cell of the cached run (a dict with `arch`, `bits`,
# `seed`, and held-out numbers such as `es_test_map`, `adaround_test_map`, `gptq_test_map`) is one seed.
# Write `gain_over_peer(cells, arch, bits, peer)`: the mean over seeds of the ES's held-out mAP@[.5:.95]
# minus the peer's (`peer` is `"gptq"` or `"adaround"`), in mAP points (x100). Then: at which bit widths does
# the ES beat AdaRound in the cached run?

# %% [raw]
# # BEGIN SOLUTION

# %%
def gain_over_peer(cells, arch, bits, peer):
    # BEGIN SOLUTION
    gains = [c["es_test_map"] - c[f"{peer}_test_map"] for c in cells if c["arch"] == arch and c["bits"] == bits]
    return 100 * sum(gains) / len(gains)
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
c0 = [c for c in data["cells"] if c["arch"] == "det_vgg_small" and c["bits"] == 3]
assert abs(gain_over_peer(data["cells"], "det_vgg_small", 3, "gptq")
           - 100 * sum(c["es_test_map"] - c["gptq_test_map"] for c in c0) / len(c0)) < 1e-6

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import torch
from qevo_lite.core import stats
from qevo_lite.experiment import summary
from qevo_lite.grading import forbidden
g = torch.Generator().manual_seed(1414)
cells = {}
for arch in ("det_a", "det_b"):
    for b in (2, 3):
        for s in range(3):
            c = {"task": "detection", "arch": arch, "bits": b, "seed": s, "es_run": True}
            for k in ("es", "gptq", "adaround", "rtn", "fp32"):
                c[f"{k}_test_map"] = float(torch.rand(1, generator=g))
            cells[f"{arch}/{b}/{s}"] = c
for arch in ("det_a", "det_b"):
    for b in (2, 3):
        for peer in ("gptq", "adaround"):
            mine = [c for c in cells.values() if c["arch"] == arch and c["bits"] == b]
            want = 100 * sum(c["es_test_map"] - c[f"{peer}_test_map"] for c in mine) / len(mine)
            with forbidden((summary, "summarize_cells"), (stats, "mean_std"), namespaces=[gain_over_peer.__globals__]):
                got = gain_over_peer(list(cells.values()), arch, b, peer)
            assert abs(got - want) < 1e-6, (arch, b, peer, got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
