"""The autoencoder experiment: model, splits, metrics, the MSE fitness, and `reproduce_task` outputs/resume.

Everything runs on scikit-learn's digits (normal classes 0-4) with tiny sizes and budgets.
"""
import json
import math

import pytest
import torch
from torch import nn

import qevo_lite.tasks.autoencoder as ae
from qevo_lite.core.registry import read_manifest
from qevo_lite.experiment.context import Context
from qevo_lite.experiment.cell_grid import codes_file, run_task
from qevo_lite.experiment.profile import CellGrid, DataSpec, MethodSpec, Profile
from qevo_lite.methods import EvolutionConfig, GlobalStage, SampledLocal
from qevo_lite.tasks import load_pretrained, train_checkpoint
from qevo_lite.evaluators.full import FullEvaluator
from qevo_lite.evaluators.incremental import IncrementalEvaluator
from qevo_lite.evaluators.base import reconstruction_mse
from qevo_lite.quant.grid import quantize_model

TIMING = ("wall_seconds", "local_seconds", "global_seconds", "seconds_this_run", "cells_reused")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the tiny models gain nothing from two, and lose a lot when the cores are shared."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_profile(**kw):
    """The tests' autoencoder profile with ``kw`` overridden (fields, or the ``budget`` knobs)."""
    es = EvolutionConfig(SampledLocal(samples=32, evaluations=8, lam=4, moves=2), GlobalStage(budget=8, lam=4))
    return Profile("fast", "autoencoder", DataSpec("digits", search_size=64, test_size=120),
                   CellGrid({"ae": ae.ARCH}, bits=(2, 8), seeds=(0, 1), extra_granularities=("per_tensor",),
                            min_rise_percent=2.0),
                   MethodSpec(es, peers=(), report_every=1),
                   ae.AutoencoderOptions(normal_classes=(0, 1, 2, 3, 4))).with_overrides(**kw)


def run(out, ckpt, figures=False, **kw):
    ctx = Context(ae.TASK, tiny_profile(**kw), device="cpu", checkpoint_dir=ckpt)
    return run_task(ctx, out, progress=False, figures=figures)


@pytest.fixture(scope="module")
def splits():
    return ae.ae_splits("digits", seed=0, search_size=96, test_size=200)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint folder with a digits autoencoder trained in a few seconds."""
    directory = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ae.RECIPES, "digits", {"epochs": 5, "lr": 5e-3})
        train_checkpoint(ae.ARCH, "digits", directory=directory, progress=False, device="cpu")
    return directory


def test_model_shapes_and_layers():
    model = ae.build_model(ae.ARCH, {"in_channels": 1, "image_size": 28}).eval()
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 1, 28, 28)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 8 and sum(m.weight.numel() for m in layers) == 56352
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())
    assert ae.ConvAutoencoder(3, 32, latent=8).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 4"):
        ae.ConvAutoencoder(1, 30)
    with pytest.raises(ValueError, match="conv_autoencoder"):
        ae.build_model("vgg_small", {})


def test_splits_have_no_class_or_image_leakage(splits):
    normal = set(splits.normal_classes)
    assert normal == {0, 1, 2, 3, 4}
    assert set(splits.train.y.tolist()) <= normal and set(splits.search.y.tolist()) <= normal
    assert not set(splits.train_indices.tolist()) & set(splits.search_indices.tolist())
    assert len(splits.search) == 96 and len(splits.test) == 200
    assert set(splits.test_normal.y.tolist()) <= normal
    anomalous = splits.test_is_anomaly
    assert anomalous.any() and (~anomalous).any()
    assert all((int(y) not in normal) == bool(a) for y, a in zip(splits.test.y, anomalous))
    assert len(splits.test_normal) == int((~anomalous).sum())
    # x is normalised with the training mean/std: de-normalised pixels lie in [0, 1]
    pix = splits.train.x * splits.pixel_std.reshape(1, -1, 1, 1) + splits.pixel_mean.reshape(1, -1, 1, 1)
    assert pix.min() > -1e-5 and pix.max() < 1 + 1e-5
    with pytest.raises(ValueError, match="proper subset"):
        ae.ae_splits("digits", normal_classes=tuple(range(10)))
    with pytest.raises(ValueError, match="exceeds"):
        ae.ae_splits("digits", search_size=5000)


def test_mse_fitness_matches_a_hand_computation(splits):
    torch.manual_seed(0)
    fmodel = ae.build_model(ae.ARCH, {}).eval()
    from qevo_lite.quant.fold import fold_batchnorm
    fmodel = fold_batchnorm(fmodel)
    state = quantize_model(fmodel, bits=4)
    search = splits.search.subset(40)
    qmodel = state.to_model(fmodel)
    with torch.no_grad():
        recon = qmodel(search.x)
    hand = torch.stack([((recon[i] - search.x[i]) ** 2).sum() / recon[i].numel() for i in range(len(search))])
    assert torch.allclose(reconstruction_mse(recon, search.x), hand, atol=1e-6)
    assert torch.allclose(ae.per_image_mse(recon, search.x), hand, atol=1e-6)
    for cls in (FullEvaluator, IncrementalEvaluator):
        ev = cls(fmodel, state, search, loss="mse", metric=None, chunk_size=16)
        assert torch.allclose(ev.reference_eval.losses, hand, atol=1e-5)
        assert ev.reference_eval.fitness == pytest.approx(float(hand.mean()), rel=1e-5)
    assert ae.search_mse(qmodel, search) == pytest.approx(float(hand.mean()), rel=1e-5)


def test_auroc_on_constructed_scores():
    is_anomaly = torch.tensor([0, 0, 0, 1, 1])
    assert ae.auroc(torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9]), is_anomaly) == 1.0
    assert ae.auroc(torch.tensor([0.8, 0.9, 0.7, 0.1, 0.2]), is_anomaly) == 0.0
    # anomaly 0.5 beats two of the three normals, anomaly 0.9 beats all three: 5 of 6 pairs
    assert ae.auroc(torch.tensor([0.1, 0.2, 0.6, 0.5, 0.9]), is_anomaly) == pytest.approx(5 / 6)


def test_psnr_is_on_the_pixel_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 28, 28, generator=g)
    recon = x + 0.1 * torch.randn(5, 1, 28, 28, generator=g)
    mean, std = torch.tensor([0.3]), torch.tensor([0.35])
    mse_pixels = float(((recon - x) * std).pow(2).mean())
    assert ae.psnr_db(recon, x, mean, std) == pytest.approx(10 * math.log10(1 / mse_pixels), rel=1e-5)
    # a perfect de-normalised error of 0.1 everywhere is 20 dB
    assert ae.psnr_db(x + 0.1 / 0.35, x, mean, std) == pytest.approx(20.0, abs=1e-3)


def test_trained_checkpoint_detects_anomalies(ckpt):
    entry = read_manifest(ckpt)[f"{ae.ARCH}-digits"]
    assert entry["normal_classes"] == [0, 1, 2, 3, 4] and entry["in_channels"] == 1
    assert entry["fp32_auroc"] > 0.6 and entry["fp32_test_mse"] > 0 and entry["fp32_test_psnr"] > 0
    model, _ = load_pretrained(ae.ARCH, "digits", directory=ckpt, train_if_missing=False)
    assert isinstance(model, ae.ConvAutoencoder)


def strip_timing(obj):
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if not k.startswith(TIMING) and k != "figures"}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def first(tmp_path_factory, ckpt):
    out = tmp_path_factory.mktemp("ae_repro")
    return out, run(out, ckpt, figures=True)


KEY = "autoencoder/conv_autoencoder/W{}/seed{}"


def test_run_task_writes_json_markdown_and_figures(first):
    out, res = first
    saved = json.loads((out / "results.json").read_text())
    assert strip_timing(saved) == strip_timing(res)
    assert set(saved["cells"]) == {KEY.format(b, s) for b in (2, 8) for s in (0, 1)}
    w2 = saved["cells"][KEY.format(2, 0)]
    assert w2["es_run"], "2-bit rounding of the autoencoder should raise the search MSE and trigger the ES"
    assert w2["rtn_search_mse"] > w2["fp32_search_mse"]
    layers = len(w2["moved"]["per_layer"])
    assert w2["local_evaluations"] == 8 * layers and w2["global_evaluations"] == 8
    assert [r["evaluations"] for r in w2["reports"]] == [0, 4, 8]
    assert w2["es_test_mse"] == w2["reports"][-1]["mse"] and w2["es_test_auroc"] == w2["reports"][-1]["auroc"]
    assert w2["es_search_mse"] <= w2["rtn_search_mse"] + 1e-6   # plus selection never gets worse on search
    assert w2["gain_mse"] == pytest.approx(w2["rtn_test_mse"] - w2["es_test_mse"])
    assert w2["gain_auroc"] == pytest.approx(w2["es_test_auroc"] - w2["rtn_test_auroc"])
    assert 0 <= w2["es_test_auroc"] <= 1 and w2["search_images"] == 64 and w2["test_images"] == 120
    w8 = saved["cells"][KEY.format(8, 0)]
    assert not w8["es_run"] and "search mse" in w8["es_skipped_reason"]
    rows = {r["bits"]: r for r in saved["summary"]}
    assert rows[2]["es_run"] and rows[2]["es_test_mse_std"] >= 0 and not rows[8]["es_run"]
    md = (out / "results.md").read_text()
    assert md.startswith("## Autoencoder") and "| conv_autoencoder | W2 | ES from RTN (local + global) |" in md
    assert res["figures"] and all((out / f).stat().st_size > 1000 for f in res["figures"])
    assert all(f"]({f})" in md for f in res["figures"])
    assert "conv_autoencoder_W2_reconstructions.png" in res["figures"]
    assert codes_file(out, "autoencoder", ae.ARCH, 2, 0).exists()
    assert not list((out / "checkpoints").glob("*.pt"))   # ES progress files are removed when a cell is done


def test_run_task_resumes_and_reruns_on_changed_settings(first, ckpt):
    out, res = first
    again = run(out, ckpt)
    assert again["cells_reused"] == 4
    assert strip_timing(again["cells"]) == strip_timing(res["cells"])
    codes = codes_file(out, "autoencoder", ae.ARCH, 2, 0)
    codes.unlink()   # the figures need the ES codes: a cell whose codes are gone is rerun, to the same numbers
    redone = run(out, ckpt)
    assert redone["cells_reused"] == 3 and codes.exists()
    assert strip_timing(redone["cells"]) == strip_timing(res["cells"])
    changed = run(out, ckpt, bits=(2,), seeds=(0,), budget=4)
    assert changed["cells_reused"] == 0 and changed["cells"][KEY.format(2, 0)]["global_evaluations"] == 4
