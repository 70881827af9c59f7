"""`qevo reproduce` and the experiment runner: outputs, resume, interruption, the full-profile path.

Everything runs on scikit-learn's digits (or a tiny ImageFolder made from them) with tiny budgets.
"""
import json

import numpy as np
import pytest
import torch

import qevo_lite.experiments as ex
from qevo_lite import checkpoints, load_splits
from qevo_lite.cli import main

TIMING = ("wall_seconds", "local_seconds", "global_seconds", "seconds_this_run", "cells_reused")


def tiny_profile(**kw):
    base = dict(name="fast", dataset="digits", models={"vgg": "vgg_small"}, bits=(2, 8), seeds=(0, 1),
                search_size=96, test_size=150, local_samples=32, local_evaluations=8, local_moves=2, budget=8,
                lam=4, report_every=1)
    base.update(kw)
    return ex.Profile(**base)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint folder shared by the tests, with a digits VGG trained in seconds (about 97% accurate)."""
    directory = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(checkpoints.RECIPES, ("vgg_small", "digits"), {"epochs": 5, "lr": 1e-2})
        checkpoints.train_checkpoint("vgg_small", "digits", splits=load_splits("digits", search_size=96),
                                     directory=directory, progress=False)
    return directory


def run(out, ckpt, figures=False, **kw):
    return ex.reproduce(["vgg"], tiny_profile(**kw), out, progress=False, device="cpu", checkpoint_dir=ckpt,
                        figures=figures)


def strip_timing(obj):
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items() if not k.startswith(TIMING) and k != "figures"}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def first(tmp_path_factory, ckpt):
    out = tmp_path_factory.mktemp("repro")
    return out, run(out, ckpt, figures=True)


def test_reproduce_writes_json_markdown_and_figures(first):
    out, res = first
    saved = json.loads((out / "results.json").read_text())
    assert strip_timing(saved) == strip_timing(res)
    assert set(saved["cells"]) == {"vgg/W2/seed0", "vgg/W2/seed1", "vgg/W8/seed0", "vgg/W8/seed1"}
    w2 = saved["cells"]["vgg/W2/seed0"]
    assert w2["es_run"], "2-bit rounding of the digits VGG should lose accuracy and trigger the ES"
    for key in ("fp32_test_accuracy", "rtn_rule", "rtn_search_accuracy", "rtn_test_accuracy",
                "rtn_per_tensor_test_accuracy", "es_search_accuracy", "es_test_accuracy", "gain", "gap_recovered",
                "evaluations", "local_evaluations", "global_evaluations", "wall_seconds", "history", "reports",
                "moved", "settings"):
        assert key in w2, key
    layers = len(w2["moved"]["per_layer"])
    assert w2["local_evaluations"] == 8 * layers and w2["global_evaluations"] == 8
    assert w2["evaluations"] == 8 * layers + 8
    assert [r["evaluations"] for r in w2["reports"]] == [0, 4, 8]         # report_every=1 generation of 4
    assert w2["es_test_accuracy"] == w2["reports"][-1]["accuracy"]
    assert w2["gain"] == pytest.approx(w2["es_test_accuracy"] - w2["rtn_test_accuracy"])
    assert 0 < w2["moved"]["share"] < 1
    assert sum(v["moved"] for v in w2["moved"]["per_layer"].values()) == w2["moved"]["moved"]
    assert sum(w2["moved"]["residual_moved"]) == w2["moved"]["moved"]
    assert w2["search_images"] == 96 and w2["test_images"] == 150
    w8 = saved["cells"]["vgg/W8/seed0"]
    assert not w8["es_run"] and "within" in w8["es_skipped_reason"]
    rows = {r["bits"]: r for r in saved["summary"]}
    assert rows[2]["seeds"] == [0, 1] and rows[2]["es_run"] and not rows[8]["es_run"]
    a, b = (saved["cells"][f"vgg/W2/seed{s}"]["es_test_accuracy"] for s in (0, 1))
    assert rows[2]["es_test_accuracy"] == pytest.approx((a + b) / 2)
    assert rows[2]["noise"] == pytest.approx(abs(a - b) / 2 ** 0.5)          # sample std of two seeds
    assert set(saved["checks"]["vgg"]) >= {"target_bits", "gap_recovered", "target_met",
                                           "es_within_noise_of_rtn_or_above"}
    md = (out / "results.md").read_text()
    assert "| vgg_small | W2 |" in md and "| vgg_small | W8 |" in md and "gap recovered" in md
    for f in ("vgg_accuracy_vs_bits.png", "vgg_W2_curves.png", "vgg_W2_moved.png"):
        assert (out / f).stat().st_size > 1000 and f in saved["figures"]
    assert not list((out / "checkpoints").glob("*.pt"))                     # removed once cells finish


def test_second_invocation_reuses_finished_cells(first, ckpt, monkeypatch):
    out, res = first
    calls = []
    real = ex.run_cell
    monkeypatch.setattr(ex, "run_cell", lambda *a, **k: calls.append(a[1:4]) or real(*a, **k))
    again = run(out, ckpt)
    assert calls == [] and again["cells_reused"] == 4
    assert strip_timing(again["cells"]) == strip_timing(res["cells"])
    more = run(out, ckpt, seeds=(0, 1, 2))                     # only the new seed's cells run
    assert sorted(calls) == [("vgg", 2, 2), ("vgg", 8, 2)] and more["cells_reused"] == 4
    assert next(r for r in more["summary"] if r["bits"] == 2)["seeds"] == [0, 1, 2]
    calls.clear()
    run(out, ckpt, budget=12, bits=(2,))                        # other settings: recomputed, not reused
    assert sorted(calls) == [("vgg", 2, 0), ("vgg", 2, 1)]


def test_interrupted_run_resumes_to_the_same_results(first, ckpt, tmp_path, monkeypatch):
    _, res = first
    real = ex.run_cell
    calls = []

    def stop_after_one(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ex, "run_cell", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, ckpt)
    assert list(json.loads((tmp_path / "results.json").read_text())["cells"]) == ["vgg/W2/seed0"]
    monkeypatch.setattr(ex, "run_cell", real)
    resumed = run(tmp_path, ckpt)
    assert resumed["cells_reused"] == 1
    assert strip_timing(resumed["cells"]) == strip_timing(res["cells"])
    assert strip_timing(resumed["summary"]) == strip_timing(res["summary"])


def test_cell_interrupted_inside_the_es_resumes_from_its_checkpoints(first, ckpt, tmp_path, monkeypatch):
    """Ctrl-C in the local stage (after two layers) and then in the global stage: the cell resumes from
    its ES checkpoints and ends where an uninterrupted cell ends."""
    _, res = first
    ctx = ex.Context(tiny_profile(), device="cpu", checkpoint_dir=ckpt)
    real_layerwise, real_eval = ex.run_layerwise, ex.IncrementalEvaluator.evaluate
    layers = []

    def layerwise_stops_at_third(*a, **k):
        layers.append(1)
        if len(layers) == 3:
            raise KeyboardInterrupt
        return real_layerwise(*a, **k)

    monkeypatch.setattr(ex, "run_layerwise", layerwise_stops_at_third)
    with pytest.raises(KeyboardInterrupt):
        ex.run_cell(ctx, "vgg", 2, 0, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "vgg-W2-seed0-local.pt", weights_only=False)["done"] == 2
    monkeypatch.setattr(ex, "run_layerwise", real_layerwise)
    evals = []

    def evaluate_stops_at_sixth(self, *a, **k):
        evals.append(1)
        if len(evals) == 6:
            raise KeyboardInterrupt
        return real_eval(self, *a, **k)

    monkeypatch.setattr(ex.IncrementalEvaluator, "evaluate", evaluate_stops_at_sixth)
    with pytest.raises(KeyboardInterrupt):
        ex.run_cell(ctx, "vgg", 2, 0, checkpoint_dir=tmp_path)
    assert (tmp_path / "vgg-W2-seed0-global.pt").exists()
    monkeypatch.setattr(ex.IncrementalEvaluator, "evaluate", real_eval)
    cell = ex.run_cell(ctx, "vgg", 2, 0, checkpoint_dir=tmp_path)
    expected = res["cells"]["vgg/W2/seed0"]
    for key in ("es_test_accuracy", "es_search_accuracy", "local_test_accuracy", "evaluations", "moved"):
        assert cell[key] == expected[key], key
    assert not list(tmp_path.glob("*.pt"))


def _image_folder(root, size=16, train_per_class=12, test_per_class=4):
    """A tiny dataset in torchvision's ImageFolder layout (RGB PNGs made from the digits)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    counts = {}
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        part = "test" if i % 4 == 0 else "train"
        counts[(part, y)] = counts.get((part, y), 0) + 1
        if counts[(part, y)] > (test_per_class if part == "test" else train_per_class):
            continue
        a = (img * 255 / 16).astype(np.uint8)
        folder = root / part / f"class_{y}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([a, a[::-1], 255 - a], -1)).resize((size, size)).save(folder / f"{i}.png")
    return root


def test_full_profile_path_on_an_image_folder_stand_in(tmp_path, capsys):
    data = _image_folder(tmp_path / "standin")
    out = tmp_path / "full"
    rc = main(["--threads", "2", "reproduce", "--profile", "full", "--experiment", "resnet",
               "--dataset", f"folder:{data}", "--bits", "2", "--seeds", "0", "--budget", "8",
               "--local-budget", "4", "--search-size", "24", "--epochs", "1", "--min-drop", "-100",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["profile"]["name"] == "full" and saved["profile"]["dataset"] == f"folder:{data}"
    cell = saved["cells"]["resnet/W2/seed0"]
    assert cell["arch"] == "resnet20" and cell["es_run"] and cell["global_evaluations"] == 8
    assert cell["test_images"] == 40 and cell["search_images"] == 24
    assert list((out / "pretrained").glob("resnet20-folder*.pt"))          # trained there, not in data/
    text = capsys.readouterr().out
    assert "| resnet20 | W2 |" in text and "results.json" in text


def test_cli_rejects_unknown_experiment(capsys):
    assert main(["reproduce", "--experiment", "segmentation", "--out", "unused"]) == 2
    assert "Unknown experiment" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Unknown profile fields"):
        ex.get_profile("fast", bugdet=3)


def test_reproduce_dispatches_other_experiments_to_their_task_module(tmp_path, monkeypatch):
    """A non-classification experiment runs through its task module's reproduce_task in out/<name>/, with
    the task overrides only, and its table joins results.md with its figure links pointing into the folder."""
    import sys
    import types
    calls = []

    def reproduce_task(profile, out, **kw):
        calls.append((profile, out, kw))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text("## Toy\n\n![curve](toy.png) [paper](https://arxiv.org/abs/2605.05228)\n")
        return {"figures": ["toy.png"], "summary": [1]}

    module = types.ModuleType("toy_task")
    module.reproduce_task = reproduce_task
    monkeypatch.setitem(sys.modules, "toy_task", module)
    monkeypatch.setitem(ex.EXPERIMENTS, "toy", "toy")
    monkeypatch.setitem(ex.TASK_MODULES, "toy", "toy_task")
    res = ex.reproduce(["toy"], "fast", tmp_path, progress=False, device="cpu", bits=(3,), seeds=(1,),
                       dataset="digits", lam=4)
    (profile, out, kw), = calls
    assert profile == "fast" and out == tmp_path / "toy"
    assert kw["bits"] == (3,) and kw["seeds"] == (1,) and "dataset" not in kw and "lam" not in kw
    assert res["tasks"]["toy"]["summary"] == [1] and res["figures"] == ["toy/toy.png"]
    text = (tmp_path / "results.md").read_text()
    assert "![curve](toy/toy.png)" in text and "(https://arxiv.org/abs/2605.05228)" in text
    with pytest.raises(ValueError, match="Unknown experiment"):
        ex.reproduce(["segmentation"], "fast", tmp_path)
