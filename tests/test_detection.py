"""The detection half of issue 5: generated canvases, target encoding, loss, decoding, tracing, the experiment.

Everything is tiny (scikit-learn digits, a few canvases, one training epoch) so the file runs in well
under a minute on 2 cores.
"""
import json
import warnings

import pytest
import torch

import qevo_lite.experiment.cell_grid as cell_grid
import qevo_lite.tasks.detection as D
import qevo_lite.tasks.detection.data as dd
import qevo_lite.tasks.detection.data as det_data
import qevo_lite.tasks.detection.task as det_task
from qevo_lite.core.data import DatasetUnavailable
from qevo_lite.evaluators.full import FullEvaluator
from qevo_lite.evaluators.incremental import IncrementalEvaluator
from qevo_lite.quant.fold import fold_batchnorm, quantizable_layers
from qevo_lite.quant.grid import QuantConfig, quantize_model
from qevo_lite.experiment.context import Context
from qevo_lite.experiment.cell_grid import run_task
from qevo_lite.methods import EvolutionConfig, GlobalStage, SampledLocal
from qevo_lite.tasks import get_profile


def block_glyphs():
    """Ten synthetic 28x28 glyphs: class k is a filled 12x8 block of brightness 20 (k + 1), so a box's
    brightest pixel tells which class was pasted there."""
    g = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    for k in range(10):
        g[k, 0, 6:18, 10:18] = 20 * (k + 1)
    return g, torch.arange(10)


def test_canvases_boxes_inside_tight_nonoverlapping_and_labelled():
    glyphs, labels = block_glyphs()
    images, targets = dd.make_canvases(glyphs, labels, 40, canvas=64, seed=3)
    assert images.shape == (40, 1, 64, 64) and images.dtype == torch.uint8
    covered = torch.zeros(40, 64, 64, dtype=torch.bool)
    for i, t in enumerate(targets):
        boxes, labs = t["boxes"], t["labels"]
        assert boxes.dtype == torch.float32 and labs.dtype == torch.int64 and len(boxes) >= 1
        for (x1, y1, x2, y2), lab in zip(boxes.int().tolist(), labs.tolist()):
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64               # inside the image
            crop = images[i, 0, y1:y2, x1:x2]
            # tight: every border row and column of the box holds a glyph pixel
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
            assert abs(int(crop.max()) - 20 * (lab + 1)) <= 1                  # the label is the glyph's class
            assert not covered[i, y1:y2, x1:x2].any()                          # no two boxes overlap
            covered[i, y1:y2, x1:x2] = True
    assert not (images[:, 0] > 0)[~covered].any()                              # no glyph pixel outside its box


def test_canvases_are_deterministic_per_seed():
    glyphs, labels = block_glyphs()
    a, ta = dd.make_canvases(glyphs, labels, 10, seed=1)
    b, tb = dd.make_canvases(glyphs, labels, 10, seed=1)
    c, _ = dd.make_canvases(glyphs, labels, 10, seed=2)
    assert torch.equal(a, b) and all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))
    assert not torch.equal(a, c)


def test_digits_fallback_and_disjoint_glyph_splits(monkeypatch):
    real = dd.load_arrays

    def no_fashion(name, root=None, download=False):
        if name == "fashion_mnist":
            raise DatasetUnavailable("not installed")
        return real(name, root, download)

    monkeypatch.setattr(dd, "load_arrays", no_fashion)
    with pytest.warns(UserWarning, match="digits"):
        s = dd.load_detection_splits(train_size=8, search_size=4, test_size=4, glyphs="auto")
    assert s.glyph_source == "digits" and s.num_classes == 10
    assert len(set(s.train_glyphs.tolist()) & set(s.search_glyphs.tolist())) == 0
    assert s.train.x.shape == (8, 1, 64, 64) and s.search.y.shape == (4, 15, 16, 16)
    assert 0 <= float(s.test.x.min()) and float(s.test.x.max()) <= 1


@pytest.fixture(scope="module")
def small():
    return dd.load_detection_splits(train_size=32, search_size=16, test_size=16, glyphs="digits")


def test_encode_decode_round_trip_gives_map_one(small):
    y = small.test.y
    preds = D.decode(D.outputs_from_targets(y))
    assert D.mean_average_precision(preds, small.test.targets) == {"map": 1.0, "map50": 1.0}
    for got, want in zip(D.targets_from_dense(y), small.test.targets):
        order = torch.argsort(got["boxes"][:, 0] * 100 + got["boxes"][:, 1])
        ref = torch.argsort(want["boxes"][:, 0] * 100 + want["boxes"][:, 1])
        assert torch.allclose(got["boxes"][order], want["boxes"][ref], atol=1e-4)
        assert torch.equal(got["labels"][order], want["labels"][ref])


def test_per_image_loss_shape_and_perfect_prediction_is_lower(small):
    y = small.search.y
    perfect = D.outputs_from_targets(y)
    noisy = perfect + 0.5 * torch.randn(perfect.shape, generator=torch.Generator().manual_seed(0))
    lp, ln = D.detection_loss(perfect, y), D.detection_loss(noisy, y)
    assert lp.shape == (len(y),) and ln.shape == (len(y),)
    assert (lp < ln).all() and float(lp.max()) < 0.2  # the focal loss is not 0 at soft targets
    assert torch.allclose(D.map_fitness(perfect, y), torch.zeros(len(y)))


@pytest.mark.parametrize("arch", sorted(D.ARCHITECTURES))
def test_detector_traces_folds_and_evaluates_incrementally(arch, small):
    torch.manual_seed(0)
    model = D.build_model(arch, {"in_channels": 1, "num_classes": 10})
    model.train()
    with torch.no_grad():
        model(small.train.x)  # non-trivial BN statistics
    model.eval()
    folded = fold_batchnorm(model)
    assert isinstance(folded, torch.fx.GraphModule)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = small.search.x
    assert torch.allclose(folded(x), model(x), atol=1e-4)
    assert folded(x).shape == (len(x), 14, 16, 16)
    state = quantize_model(folded, QuantConfig(3, "symmetric", "per_channel", "maxabs_full"))
    assert set(state.layers) == set(quantizable_layers(folded))
    inc = IncrementalEvaluator(folded, state, small.search, loss=D.detection_loss, metric=None)
    full = FullEvaluator(folded, state, small.search, loss=D.detection_loss, metric=None)
    cand = dict(state.codes())
    name = list(cand)[len(cand) // 2]
    moved = cand[name].clone()
    moved.view(-1)[:7] = (moved.view(-1)[:7] + 1).clamp(max=state.layers[name].qmax)
    cand[name] = moved
    assert inc.evaluate(cand).fitness == pytest.approx(full.evaluate(cand).fitness, rel=1e-6)


def test_unknown_override_raises():
    with pytest.raises(ValueError, match="Unknown profile fields"):
        get_profile("detection", "fast", no_such_field=1)


def test_run_task_writes_outputs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(det_task, "TRAIN_CANVASES", 128)
    monkeypatch.setattr(det_task, "TEST_CANVASES", 24)
    monkeypatch.setattr(det_data, "_SPLITS_CACHE", {})
    out, ck = tmp_path / "out", tmp_path / "pretrained"
    prof = get_profile("detection", "fast", dataset="glyph_boxes_digits", models={"vgg": "det_vgg_small"}, bits=[2],
                       seeds=[0], search_size=16, test_size=16, peers=[], min_drop_points=-100.0, train_epochs=1,
                       es=EvolutionConfig(SampledLocal(samples=8, evaluations=2, lam=4), GlobalStage(budget=4, lam=4)),
                       options=D.DetectionOptions(compare_budget=4, compare_seeds=(0, 1, 2)))
    ctx = Context(D.TASK, prof, device="cpu", checkpoint_dir=ck)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_task(ctx, out, progress=False)
    data = json.loads((out / "results.json").read_text())
    assert "detection/det_vgg_small/W2/seed0" in data["cells"] and "fitness/det_vgg_small/W2/seed0" in data["cells"]
    cell = data["cells"]["detection/det_vgg_small/W2/seed0"]
    assert cell["es_run"] and 0 <= cell["es_test_map50"] <= 1 and cell["global_evaluations"] == 4
    assert cell["local_evaluations"] > 0 and len(cell["local_log"]) == 7  # the local stage visited every layer
    assert cell["gain_map"] == pytest.approx(cell["es_test_map"] - cell["rtn_test_map"])
    assert res["comparison"]["loss"]["test_map50"] == data["comparisons"][0]["loss"]["test_map50"]
    md = (out / "results.md").read_text()
    assert md.startswith("## Detection") and "| det_vgg_small | W2 | ES from RTN (local + global) |" in md
    assert "Fitness comparison" in md
    assert "detection_W2_boxes.png" in res["figures"] and "det_vgg_small_map_vs_bits.png" in res["figures"]
    for f in res["figures"]:
        assert (out / f).stat().st_size > 0 and f"]({f})" in md
    assert (ck / "manifest.json").exists()

    def fail(*a, **k):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(cell_grid, "run_cell", fail)
    monkeypatch.setattr(det_task, "run_fitness_comparison", fail)
    again = run_task(Context(D.TASK, prof, device="cpu", checkpoint_dir=ck), out, progress=False, figures=False)
    assert again["cells_reused"] == 1 + len(prof.options.compare_seeds)   # the ES cell and each comparison seed


def test_the_full_detection_profile_stops_with_a_clear_error(tmp_path, capsys):
    from qevo_lite.cli import main
    from qevo_lite.reproduce import reproduce
    with pytest.raises(ValueError, match="no paper-scale path"):
        reproduce(["detection"], "full", tmp_path)
    assert main(["reproduce", "--experiment", "detection", "--profile", "full", "--out", str(tmp_path)]) != 0
    assert "no paper-scale path" in capsys.readouterr().err
