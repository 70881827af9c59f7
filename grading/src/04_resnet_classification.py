# %% [raw]
# # ASSIGNMENT CONFIG
# name: 04_resnet_classification
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 04 · The experiment on a ResNet
#
# Its questions are also the exercises of the tutorial notebook `04_resnet_classification` (same prompts, stubs
# and public checks). The questions read a finished run from `cached_results("classification_cells")` (nothing is
# retrained here). The checks below a question run on those numbers or on small fixed inputs; the grader runs
# further hidden tests on fresh random inputs against the package's (or torch's) own code, which your code may not
# call.

# %%
import torch

from qevo_lite.grading import cached_results

data = cached_results("classification_cells")
resnet = data["resnet_small"]
print(f"{len(resnet['cells'])} cells of resnet_small")

# %% [raw]
# # BEGIN QUESTION
# name: q1_fold_batchnorm
# points: 2

# %% [markdown]
# **Question 1 (folding batch-norm into a convolution).** At inference a BatchNorm2d after a convolution is
# a per-channel affine map, `y = gamma (z - mean) / sqrt(var + eps) + beta`, so it can be folded into the
# convolution's weight and bias before quantizing. Write `fold_bn(weight, bias, mean, var, gamma, beta,
# eps)`: `weight` (C_out, C_in, kh, kw), `bias` (C_out,) or `None`, the batch-norm's running `mean` and `var`,
# `gamma` (its weight), `beta` (its bias), all (C_out,). Return the folded `(weight, bias)`.

# %% [raw]
# # BEGIN SOLUTION

# %%
def fold_bn(weight, bias, mean, var, gamma, beta, eps):
    # BEGIN SOLUTION
    k = gamma / torch.sqrt(var + eps)
    b = bias if bias is not None else torch.zeros_like(mean)
    return weight * k.reshape(-1, 1, 1, 1), (b - mean) * k + beta
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
w, b = fold_bn(torch.ones(2, 1, 1, 1), None, torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0]),
               torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0]), 1.0)
assert torch.allclose(w.reshape(-1), torch.tensor([1.0, 1.0])) and torch.allclose(b, torch.tensor([-1.0, 1.0]))

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import torch.nn.utils.fusion as torch_fusion
from qevo_lite.grading import forbidden
from qevo_lite.quant import fold
_ = torch.manual_seed(909)
for has_bias in (True, False):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, bias=has_bias), torch.nn.BatchNorm2d(6))
    bn = net[1]
    with torch.no_grad():
        for t, (lo, hi) in ((bn.running_mean, (-1, 1)), (bn.running_var, (0.2, 3)), (bn.weight, (0.5, 2)),
                            (bn.bias, (-1, 1))):
            _ = t.uniform_(lo, hi)
    _ = net.eval()
    folded = fold.fold_batchnorm(net)
    conv = [m for m in folded.modules() if isinstance(m, torch.nn.Conv2d)][0]
    with forbidden((fold, "fold_batchnorm"), (torch_fusion, "fuse_conv_bn_weights"),
                   (torch_fusion, "fuse_conv_bn_eval"), namespaces=[fold_bn.__globals__],
                   modules=("qevo_lite", "torch")):
        w, b = fold_bn(net[0].weight.detach(), None if net[0].bias is None else net[0].bias.detach(), bn.running_mean,
                       bn.running_var, bn.weight.detach(), bn.bias.detach(), bn.eps)
    assert torch.allclose(w, conv.weight, atol=1e-6) and torch.allclose(b, conv.bias, atol=1e-6), has_bias

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_spearman
# points: 1

# %% [markdown]
# **Question 2 (does the ES move weights where rounding hurts?).** Write `spearman(xs, ys)`: the Spearman
# rank correlation of two equally long lists without ties (the Pearson correlation of their ranks). Then
# compute it between the layer sensitivity and the share of weights moved in the cached ResNet W2 run.

# %% [raw]
# # BEGIN SOLUTION

# %%
def spearman(xs, ys):
    # BEGIN SOLUTION
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for rank, i in enumerate(order):
            r[i] = float(rank)
        return r
    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert abs(spearman([1, 2, 3, 4], [10, 20, 30, 40]) - 1) < 1e-6
assert abs(spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) - 0.8) < 1e-6
rho = spearman(list(resnet["sensitivity_W2"].values()), list(resnet["moved_share_by_layer_W2_seed0"].values()))
assert -1 <= rho <= 1

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
g = torch.Generator().manual_seed(1010)
for n in (3, 8, 25):
    xs, ys = torch.randperm(n, generator=g).float(), torch.randn(n, generator=g)
    rx, ry = xs.argsort().argsort().double(), ys.argsort().argsort().double()
    want = float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])
    assert abs(spearman(xs.tolist(), ys.tolist()) - want) < 1e-6, n

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_toward_other_neighbour
# points: 2

# %% [markdown]
# **Question 3 (are the moved weights the near-ties?).** A weight's *rounding residual* `r = w / step +
# zero_point - rtn_code` lies in [-0.5, 0.5] (for unclipped weights). A weight with `r > 0` sits above its RTN
# code, so a move to `rtn_code + 1` goes to the *other* grid point bracketing it. Write
# `toward_other_neighbour(rtn_codes, new_codes, residual)` (three tensors of one shape): among the weights
# whose code changed, the share that moved in the direction of the sign of their residual (`None` if none
# moved). Random +/-1 moves give about one half.

# %% [raw]
# # BEGIN SOLUTION

# %%
def toward_other_neighbour(rtn_codes, new_codes, residual):
    # BEGIN SOLUTION
    delta = new_codes.int() - rtn_codes.int()
    mask = delta != 0
    if not mask.any():
        return None
    return float((torch.sign(delta[mask].float()) == torch.sign(residual[mask])).double().mean())
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
r = torch.tensor([0.3, -0.2, 0.4, -0.45])
assert abs(toward_other_neighbour(torch.zeros(4), torch.tensor([1, 1, 0, -1]), r) - 2 / 3) < 1e-6
assert toward_other_neighbour(torch.zeros(4), torch.zeros(4), r) is None

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.experiment import moved
from qevo_lite.grading import forbidden
from qevo_lite.quant.grid import QuantConfig, quantize_model
_ = torch.manual_seed(1111)
net = torch.nn.Sequential(torch.nn.Linear(30, 20))
rtn = quantize_model(net, QuantConfig(3))
lq = rtn.layers["0"]
g = torch.Generator().manual_seed(12)
for p in (0.05, 0.3):
    move = torch.rand(lq.codes.shape, generator=g) < p
    sign = torch.where(torch.rand(lq.codes.shape, generator=g) < 0.7, torch.sign(lq.residual()), -torch.sign(lq.residual()))
    new = torch.where(move, (lq.codes + sign.to(torch.int16)).clamp(lq.qmin, lq.qmax), lq.codes)
    want = moved.moved_analysis(rtn, rtn.with_codes({"0": new}))["toward_other_neighbour"]
    with forbidden((moved, "moved_analysis"), namespaces=[toward_other_neighbour.__globals__]):
        got = toward_other_neighbour(lq.codes, new, lq.residual())
    assert abs(got - want) < 1e-6, (p, got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
