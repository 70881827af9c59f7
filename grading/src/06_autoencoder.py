# %% [raw]
# # ASSIGNMENT CONFIG
# name: 06_autoencoder
# init_cell: true
# check_all_cell: false
# export_cell: false
# run_tests: false
# solutions_pdf: false
# generate: true

# %% [markdown]
# # Assignment 06 · An autoencoder for anomaly detection
#
# Its questions are also the exercises of the tutorial notebook `06_autoencoder` (same prompts, stubs and public
# checks). The checks below a question run on small fixed inputs; the grader runs further hidden tests on fresh
# random inputs against the package's (or scikit-learn's) own code, which your code may not call.

# %%
import math

import torch

# %% [raw]
# # BEGIN QUESTION
# name: q1_psnr
# points: 1

# %% [markdown]
# **Question 1 (PSNR).** The autoencoder's MSE is measured on *normalised* pixels (`(x - mean) / std`). Write
# `psnr_from_mse(mse, pixel_std)`: the peak signal-to-noise ratio in dB on the [0, 1] pixel scale of a
# one-channel image set, `10 log10(1 / mse_pixels)`, where `mse_pixels` is the MSE on that scale.

# %% [raw]
# # BEGIN SOLUTION

# %%
def psnr_from_mse(mse, pixel_std):
    # BEGIN SOLUTION
    return 10 * math.log10(1.0 / (pixel_std ** 2 * mse))
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert abs(psnr_from_mse(0.01, 1.0) - 20.0) < 1e-6
assert abs(psnr_from_mse(1.0, 0.1) - 20.0) < 1e-6

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
from qevo_lite.grading import forbidden
from qevo_lite.tasks.autoencoder import metrics as ae_metrics
g = torch.Generator().manual_seed(1515)
for _ in range(5):
    x = torch.randn(16, 1, 8, 8, generator=g)
    recon = x + 0.3 * torch.randn(16, 1, 8, 8, generator=g)
    mean, std = torch.rand(1, generator=g), torch.rand(1, generator=g) * 0.5 + 0.1
    want = ae_metrics.psnr_db(recon, x, mean, std)
    mse = float((recon - x).pow(2).mean())
    with forbidden((ae_metrics, "psnr_db"), namespaces=[psnr_from_mse.__globals__]):
        got = psnr_from_mse(mse, float(std))
    assert abs(got - want) < 1e-3, (got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q2_auroc
# points: 2

# %% [markdown]
# **Question 2 (AUROC by counting pairs).** The anomaly detector flags an image when its reconstruction
# error (its *score*) is high. Its AUROC is the probability that a random anomaly scores higher than a random
# normal image (ties count one half). Write `auroc(scores, is_anomaly)` for a 1-D float tensor of scores and a
# 1-D bool tensor, by comparing every (anomaly, normal) pair.

# %% [raw]
# # BEGIN SOLUTION

# %%
def auroc(scores, is_anomaly):
    # BEGIN SOLUTION
    pos, neg = scores[is_anomaly], scores[~is_anomaly]
    diff = pos[:, None].double() - neg[None, :].double()
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
assert auroc(torch.tensor([0.1, 0.2, 0.9, 0.8]), torch.tensor([False, False, True, True])) == 1.0
assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([False, True])) == 0.5

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import sklearn.metrics
from qevo_lite.grading import forbidden
from qevo_lite.tasks.autoencoder import metrics as ae_metrics
g = torch.Generator().manual_seed(1616)
for n, sep in ((50, 0.0), (200, 0.7), (120, 2.0)):
    is_anomaly = torch.rand(n, generator=g) < 0.4
    scores = torch.randn(n, generator=g) + sep * is_anomaly.float()
    scores[:10] = scores[:10].round()          # some ties
    want = ae_metrics.auroc(scores, is_anomaly)
    with forbidden((ae_metrics, "auroc"), (sklearn.metrics, "roc_auc_score"), namespaces=[auroc.__globals__]):
        got = auroc(scores, is_anomaly)
    assert abs(got - want) < 1e-6, (n, got, want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION

# %% [raw]
# # BEGIN QUESTION
# name: q3_auroc_per_class
# points: 1

# %% [markdown]
# **Question 3 (which anomaly is hard?).** The anomalies are several classes. Write
# `auroc_per_class(scores, y, normal_classes)`: `{class: AUROC of that class's images against the normal
# images}` for each class in `y` outside `normal_classes`, in increasing class order (use your `auroc`).

# %% [raw]
# # BEGIN SOLUTION

# %%
def auroc_per_class(scores, y, normal_classes):
    # BEGIN SOLUTION
    normal = torch.isin(y, torch.tensor(list(normal_classes)))
    out = {}
    for c in sorted(set(y.tolist()) - set(int(k) for k in normal_classes)):
        keep = normal | (y == c)
        out[c] = auroc(scores[keep], (y[keep] == c))
    return out
    # END SOLUTION

# %% [raw]
# # END SOLUTION

# %% [raw]
# # BEGIN TESTS

# %%
got = auroc_per_class(torch.tensor([0.1, 0.2, 0.9, 0.15]), torch.tensor([0, 0, 5, 7]), (0,))
assert list(got) == [5, 7] and got[5] == 1.0 and got[7] == 0.5, got

# %%
""" # BEGIN TEST CONFIG
hidden: true
""" # END TEST CONFIG
import sklearn.metrics
from qevo_lite.grading import forbidden
from qevo_lite.tasks.autoencoder import metrics as ae_metrics
g = torch.Generator().manual_seed(1717)
y = torch.randint(0, 10, (300,), generator=g)
scores = torch.randn(300, generator=g) + 0.2 * y.float()
normal = (0, 2, 3, 4, 6)
want = {}
for c in sorted(set(y.tolist()) - set(normal)):
    keep = torch.isin(y, torch.tensor(normal)) | (y == c)
    want[c] = ae_metrics.auroc(scores[keep], y[keep] == c)
with forbidden((ae_metrics, "auroc"), (sklearn.metrics, "roc_auc_score"), namespaces=[auroc_per_class.__globals__]):
    got = auroc_per_class(scores, y, normal)
assert list(got) == list(want) and all(abs(got[c] - want[c]) < 1e-6 for c in want)

# %% [raw]
# # END TESTS

# %% [raw]
# # END QUESTION
