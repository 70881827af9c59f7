"""The one experiment pipeline and `qevo reproduce`: outputs, resume, interruption, the full-profile
path, and a new task plugged in through the registry.

Everything runs on scikit-learn's digits (or a tiny ImageFolder made from them) with tiny budgets.
"""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import qevo_lite.es.stages as stages
import qevo_lite.experiment.cell_grid as cell_grid
from qevo_lite import load_splits
from qevo_lite.cli import main
from qevo_lite.evaluators.incremental import IncrementalEvaluator
from qevo_lite.core.io import jsonable
from qevo_lite.experiment.cell import run_cell
from qevo_lite.experiment.context import Context
from qevo_lite.experiment.profile import CellGrid, DataSpec, MethodSpec, Profile
from qevo_lite.experiment.parallel import CellPool
from qevo_lite.methods import AdaRoundConfig, EvolutionConfig, GlobalStage, QuadraticLocal, SampledLocal
from qevo_lite.reproduce import reproduce
from qevo_lite.tasks import EXPERIMENTS, TASKS, classification, get_profile, train_checkpoint

TIMING = ("wall_seconds", "local_seconds", "global_seconds", "seconds_this_run", "cells_reused")
TASK = classification.TASK
KEY = "classification/vgg_small/W{}/seed{}"


# the tiny sampled ES of these tests, and the quadratic one
TINY_ES = EvolutionConfig(SampledLocal(samples=32, evaluations=8, lam=4, moves=2), GlobalStage(budget=8, lam=4))
TINY_QUADRATIC = EvolutionConfig(QuadraticLocal(samples=32, generations=30), GlobalStage(budget=8, lam=4))


def tiny_profile(**kw):
    """The tests' classification profile with ``kw`` overridden (fields, or the ``budget`` knobs)."""
    return Profile("fast", "classification", DataSpec("digits", search_size=96, test_size=150),
                   CellGrid({"vgg": "vgg_small"}, bits=(2, 8), seeds=(0, 1)),
                   MethodSpec(TINY_ES, peers=(), report_every=1)).with_overrides(**kw)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint folder shared by the tests, with a digits VGG trained in seconds (about 97% accurate)."""
    directory = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(classification.RECIPES, ("vgg_small", "digits"), {"epochs": 5, "lr": 1e-2})
        train_checkpoint("vgg_small", "digits", splits=load_splits("digits", search_size=96), directory=directory,
                         progress=False)
    return directory


def run(out, ckpt, figures=False, **kw):
    ctx = Context(TASK, tiny_profile(**kw), device="cpu", checkpoint_dir=ckpt)
    return cell_grid.run_task(ctx, out, progress=False, figures=figures)


def strip_timing(obj):
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items()
                if not k.startswith(TIMING) and not k.endswith("_seconds") and k != "figures"}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def first(tmp_path_factory, ckpt):
    out = tmp_path_factory.mktemp("repro")
    return out, run(out, ckpt, figures=True)


def test_run_task_writes_json_markdown_codes_and_figures(first):
    out, res = first
    saved = json.loads((out / "results.json").read_text())
    assert strip_timing(saved) == strip_timing(res)
    assert set(saved["cells"]) == {KEY.format(b, s) for b in (2, 8) for s in (0, 1)}
    w2 = saved["cells"][KEY.format(2, 0)]
    assert w2["es_run"], "2-bit rounding of the digits VGG should lose accuracy and trigger the ES"
    for key in ("fp32_test_accuracy", "rtn_rule", "rtn_search_accuracy", "rtn_test_accuracy",
                "rtn_per_tensor_test_accuracy", "es_search_accuracy", "es_test_accuracy", "gain_accuracy",
                "gap_recovered", "evaluations", "local_evaluations", "global_evaluations", "wall_seconds", "history",
                "reports", "moved", "settings"):
        assert key in w2, key
    layers = len(w2["moved"]["per_layer"])
    assert w2["local_evaluations"] == 8 * layers and w2["global_evaluations"] == 8
    assert w2["evaluations"] == 8 * layers + 8
    assert [r["evaluations"] for r in w2["reports"]] == [0, 4, 8]         # report_every=1 generation of 4
    assert w2["es_test_accuracy"] == w2["reports"][-1]["accuracy"]
    assert w2["local_test_accuracy"] == w2["reports"][0]["accuracy"]
    assert w2["gain_accuracy"] == pytest.approx(w2["es_test_accuracy"] - w2["rtn_test_accuracy"])
    assert 0 < w2["moved"]["share"] < 1
    assert sum(v["moved"] for v in w2["moved"]["per_layer"].values()) == w2["moved"]["moved"]
    assert sum(w2["moved"]["residual_moved"]) == w2["moved"]["moved"]
    assert w2["search_images"] == 96 and w2["test_images"] == 150
    w8 = saved["cells"][KEY.format(8, 0)]
    assert not w8["es_run"] and "within" in w8["es_skipped_reason"]
    rows = {r["bits"]: r for r in saved["summary"]}
    assert rows[2]["seeds"] == [0, 1] and rows[2]["es_run"] and not rows[8]["es_run"]
    a, b = (saved["cells"][KEY.format(2, s)]["es_test_accuracy"] for s in (0, 1))
    assert rows[2]["es_test_accuracy"] == pytest.approx((a + b) / 2)
    assert rows[2]["noise"] == pytest.approx(abs(a - b) / 2 ** 0.5)          # sample std of two seeds
    assert set(saved["checks"]["vgg_small"]) >= {"target_bits", "gap_recovered", "target_met",
                                                 "es_within_noise_of_rtn_or_above"}
    md = (out / "results.md").read_text()
    assert "| vgg_small | W2 | ES from RTN (local + global) |" in md and "| vgg_small | W8 | RTN per-channel (" in md
    assert "gap recovered" in md
    for f in ("vgg_small_accuracy_vs_bits.png", "vgg_small_W2_curves.png", "vgg_small_W2_moved.png"):
        assert (out / f).stat().st_size > 1000 and f in saved["figures"]
    codes = cell_grid.load_codes(out, "classification", "vgg_small", 2, 0)
    assert set(codes) == set(w2["moved"]["per_layer"])
    assert not list((out / "checkpoints").glob("*.pt"))                     # removed once cells finish


def test_second_invocation_reuses_finished_cells(first, ckpt, monkeypatch):
    out, res = first
    calls = []
    monkeypatch.setattr(cell_grid, "run_cell", lambda *a, **k: calls.append(a[1:4]) or run_cell(*a, **k))
    again = run(out, ckpt)
    assert calls == [] and again["cells_reused"] == 4
    assert strip_timing(again["cells"]) == strip_timing(res["cells"])
    more = run(out, ckpt, seeds=(0, 1, 2))                     # only the new seed's cells run
    assert sorted(calls) == [("vgg_small", 2, 2), ("vgg_small", 8, 2)] and more["cells_reused"] == 4
    assert next(r for r in more["summary"] if r["bits"] == 2)["seeds"] == [0, 1, 2]
    calls.clear()
    run(out, ckpt, budget=12, bits=(2,))                        # other settings: recomputed, not reused
    assert sorted(calls) == [("vgg_small", 2, 0), ("vgg_small", 2, 1)]


def test_a_reused_cell_whose_codes_are_gone_is_rerun_to_the_same_numbers(first, ckpt, tmp_path, monkeypatch):
    import shutil
    out, res = tmp_path / "copy", first[1]
    shutil.copytree(first[0], out)
    json_file = out / "results.json"
    json_file.write_text(json.dumps({**json.loads(json_file.read_text()), "cells": res["cells"]}))
    cell_grid.codes_file(out, "classification", "vgg_small", 2, 1).unlink()
    calls = []
    monkeypatch.setattr(cell_grid, "run_cell", lambda *a, **k: calls.append(a[1:4]) or run_cell(*a, **k))
    again = run(out, ckpt)
    assert calls == [("vgg_small", 2, 1)]
    assert strip_timing(again["cells"][KEY.format(2, 1)])["es_test_accuracy"] == \
        res["cells"][KEY.format(2, 1)]["es_test_accuracy"]


def test_interrupted_run_resumes_to_the_same_results(first, ckpt, tmp_path, monkeypatch):
    _, res = first
    calls = []

    def stop_after_one(*a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return run_cell(*a, **k)

    monkeypatch.setattr(cell_grid, "run_cell", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, ckpt)
    assert list(json.loads((tmp_path / "results.json").read_text())["cells"]) == [KEY.format(2, 0)]
    monkeypatch.setattr(cell_grid, "run_cell", run_cell)
    resumed = run(tmp_path, ckpt)
    assert resumed["cells_reused"] == 1
    assert strip_timing(resumed["cells"]) == strip_timing(res["cells"])
    assert strip_timing(resumed["summary"]) == strip_timing(res["summary"])


def test_cell_interrupted_inside_the_es_resumes_from_its_checkpoints(first, ckpt, tmp_path, monkeypatch):
    """Ctrl-C in the local stage (after two layers) and then in the global stage: the cell resumes from
    its ES checkpoints and ends where an uninterrupted cell ends."""
    _, res = first
    ctx = Context(TASK, tiny_profile(), device="cpu", checkpoint_dir=ckpt)
    real_layerwise, real_eval = stages.run_layerwise, IncrementalEvaluator.evaluate
    layers = []

    def layerwise_stops_at_third(*a, **k):
        layers.append(1)
        if len(layers) == 3:
            raise KeyboardInterrupt
        return real_layerwise(*a, **k)

    monkeypatch.setattr(stages, "run_layerwise", layerwise_stops_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_cell(ctx, "vgg_small", 2, 0, checkpoint_dir=tmp_path)
    stem = "classification-vgg_small-W2-seed0"
    assert torch.load(tmp_path / f"{stem}-local.pt", weights_only=False)["done"] == 2
    monkeypatch.setattr(stages, "run_layerwise", real_layerwise)
    evals = []

    def evaluate_stops_at_sixth(self, *a, **k):
        evals.append(1)
        if len(evals) == 6:
            raise KeyboardInterrupt
        return real_eval(self, *a, **k)

    monkeypatch.setattr(IncrementalEvaluator, "evaluate", evaluate_stops_at_sixth)
    with pytest.raises(KeyboardInterrupt):
        run_cell(ctx, "vgg_small", 2, 0, checkpoint_dir=tmp_path)
    assert (tmp_path / f"{stem}-global.pt").exists()
    monkeypatch.setattr(IncrementalEvaluator, "evaluate", real_eval)
    result, codes = run_cell(ctx, "vgg_small", 2, 0, checkpoint_dir=tmp_path)
    expected = res["cells"][KEY.format(2, 0)]
    assert result.es.numbers["test"]["accuracy"] == expected["es_test_accuracy"]
    assert result.es.local_test["accuracy"] == expected["local_test_accuracy"]
    assert result.es.evaluations == expected["evaluations"]
    cell = result.to_json()
    assert cell["es_search_accuracy"] == expected["es_search_accuracy"]
    assert json.loads(json.dumps(cell["moved"])) == expected["moved"]
    assert strip_timing(jsonable(cell)) == strip_timing(expected)     # the same cell, field for field
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


def test_full_profile_path_on_an_image_folder_stand_in(tmp_path, capsys, monkeypatch):
    """The full profile's path (its dataset as an image folder, a model trained there, the ES and the tuned peers)
    at toy sizes; AdaRound and block reconstruction at 20 steps instead of the profile's 1,000 (most of a minute
    each, and not what the test checks)."""
    full = TASKS["classification"].profiles["full"]
    assert full.methods.peers == TASKS["classification"].profiles["fast"].methods.peers   # validated, not defaults
    peers = tuple(replace(c, steps=20) if hasattr(c, "steps") else c for c in full.methods.peers)
    monkeypatch.setitem(TASKS["classification"].profiles, "full", full.with_overrides(peers=peers))
    data = _image_folder(tmp_path / "standin")
    out = tmp_path / "full"
    rc = main(["--threads", "2", "reproduce", "--profile", "full", "--experiment", "resnet",
               "--dataset", f"folder:{data}", "--bits", "2", "--seeds", "0", "--budget", "8",
               "--local-budget", "4", "--search-size", "24", "--epochs", "1", "--min-drop", "-100",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    saved = json.loads((out / "classification" / "results.json").read_text())
    assert saved["profile"]["name"] == "full" and saved["profile"]["dataset"] == f"folder:{data}"
    cell = saved["cells"]["classification/resnet20/W2/seed0"]
    assert cell["arch"] == "resnet20" and cell["es_run"] and cell["global_evaluations"] == 8
    assert cell["test_images"] == 40 and cell["search_images"] == 24
    assert list((out / "pretrained").glob("resnet20-folder*.pt"))          # trained there, not in data/
    text = capsys.readouterr().out
    assert "| resnet20 | W2 | ES from RTN (local + global) |" in text and "results.json" in text
    assert "| resnet20 | W2 | AdaRound |" in text and cell["peers"] == ["gptq", "adaround", "brecq"]


def test_cli_rejects_unknown_experiment_and_bad_numbers(capsys):
    assert main(["reproduce", "--experiment", "segmentation", "--out", "unused"]) == 2
    assert "Unknown experiment" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--seeds", "x", "--out", "unused"])
    err = capsys.readouterr().err
    assert "--seeds" in err and "comma-separated whole numbers" in err and "'x'" in err
    with pytest.raises(ValueError, match="Unknown profile fields"):
        get_profile("classification", "fast", bugdet=3)


class ToyTask(type(TASK)):
    """A fourth task for the test: classification under another name, with its own profile."""

    name, title = "toy", "Toy"
    profiles = {"fast": tiny_profile(task="toy", bits=(8,), seeds=(0,))}


def test_a_new_task_plugs_in_with_one_registry_line(ckpt, tmp_path, monkeypatch):
    """A task registered in TASKS (and so in EXPERIMENTS) runs through `reproduce` into out/<name>/, gets the
    overrides, and its section joins results.md with its figure links pointing into its folder."""
    monkeypatch.setitem(TASKS, "toy", ToyTask())
    monkeypatch.setitem(EXPERIMENTS, "toy", ("toy", None))
    res = reproduce(["toy"], "fast", tmp_path, progress=False, device="cpu", checkpoint_dir=ckpt, test_size=100)
    saved = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert saved["task"] == "toy" and set(saved["cells"]) == {"toy/vgg_small/W8/seed0"}
    assert saved["cells"]["toy/vgg_small/W8/seed0"]["test_images"] == 100
    assert res["toy"]["figures"] == ["vgg_small_accuracy_vs_bits.png"]
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("## Toy (profile `fast`)") and "](toy/vgg_small_accuracy_vs_bits.png)" in text
    with pytest.raises(ValueError, match="Unknown experiment"):
        reproduce(["segmentation"], "fast", tmp_path)


def test_corrupt_results_json_is_named_and_left_untouched(tmp_path, capsys):
    (tmp_path / "classification").mkdir()
    bad = tmp_path / "classification" / "results.json"
    bad.write_text('{"cells": {oops')
    rc = main(["reproduce", "--experiment", "vgg", "--no-progress", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "not valid JSON" in err and "line 1" in err
    assert bad.read_text() == '{"cells": {oops'


def test_peers_and_the_es_from_their_codes_fill_the_table(tmp_path, ckpt):
    """Quadratic local stage + both peers: every method's held-out numbers and times are in the cell, the
    summary averages them over the seeds, the table has one line per method and the targets are computed."""
    res = run(tmp_path, ckpt, bits=(2,), es=TINY_QUADRATIC, peers=("gptq", AdaRoundConfig(steps=20)))
    cell = res["cells"][KEY.format(2, 0)]
    for peer in ("gptq", "adaround"):
        assert {f"{peer}_test_accuracy", f"{peer}_search_accuracy", f"{peer}_seconds", f"es_{peer}_test_accuracy",
                f"es_{peer}_seconds", f"es_{peer}_moved_share", f"gain_over_{peer}_accuracy"} <= set(cell)
        assert cell[f"gain_over_{peer}_accuracy"] == pytest.approx(cell[f"es_{peer}_test_accuracy"]
                                                                   - cell[f"{peer}_test_accuracy"])
    assert cell["local_method"] == "quadratic" and cell["local_evaluations"] > 0
    a, b = (res["cells"][KEY.format(2, s)]["adaround_test_accuracy"] for s in (0, 1))
    row = res["summary"][0]
    assert row["adaround_test_accuracy"] == pytest.approx((a + b) / 2)
    assert row["gptq_test_accuracy_std"] == 0.0          # GPTQ is deterministic: one run serves every seed
    md = (tmp_path / "results.md").read_text()
    for label in ("ES from RTN (local + global)", "GPTQ", "ES from GPTQ", "AdaRound", "ES from AdaRound"):
        assert f"| vgg_small | W2 | {label} |" in md
    targets = res["peer_targets"]
    assert [(t["arch"], t["bits"]) for t in targets] == [("vgg_small", 2)]
    best = targets[0]["peer"]                            # the peer of best held-out accuracy
    assert best == max(("gptq", "adaround"), key=lambda p: row[f"{p}_test_accuracy"])
    assert targets[0]["time_ratio"] == pytest.approx(row["wall_seconds"] / row[f"{best}_seconds"])
    # target (i) as the budget curves read it: reaches every peer in half its time and beats the best by > std
    es, peers = row["es_test_accuracy"], {p: row[f"{p}_test_accuracy"] for p in ("gptq", "adaround")}
    reaches = all(es >= v and row["wall_seconds"] <= 0.5 * row[f"{p}_seconds"] for p, v in peers.items())
    std = max(row["es_test_accuracy_std"], row[f"{best}_test_accuracy_std"])
    assert targets[0]["reaches"] == reaches and targets[0]["beats"] == (es - peers[best] > std)
    assert targets[0]["met"] == (reaches and es - peers[best] > std)
    assert "target (i)" in md


def test_peers_without_the_es_from_their_codes(tmp_path, ckpt):
    """``es_from_peers=False`` (the demo profiles): the peers' own lines, no "ES from <peer>" runs or lines."""
    res = run(tmp_path, ckpt, bits=(2,), seeds=(0,), es=TINY_QUADRATIC, peers=("gptq",), es_from_peers=False)
    cell = res["cells"][KEY.format(2, 0)]
    assert "gptq_test_accuracy" in cell and not any(k.startswith("es_gptq") for k in cell)
    md = (tmp_path / "results.md").read_text()
    assert "| vgg_small | W2 | GPTQ |" in md and "ES from GPTQ" not in md
    assert not any(" ± " in line for line in md.splitlines() if line.startswith("| vgg_small"))  # one seed: no std
    assert res["peer_targets"][0]["peers"] == {} and res["peer_targets"][0]["met"] is None   # one seed: no verdict
    assert "not decided (one seed)" in md


def test_side_by_side_reuses_the_context_and_shows_every_method(ckpt, monkeypatch):
    """The notebooks' side-by-side run: a context derived with another profile shares the loaded data and RTN
    baselines (no reload), every method gets a table line, and the check fails when the ES falls behind a peer."""
    from qevo_lite.experiment.side_by_side import check_side_by_side, run_side_by_side, side_by_side_markdown
    ctx = Context(TASK, tiny_profile(), device="cpu", checkpoint_dir=ckpt)
    rtn = ctx.rtn("vgg_small", 2)
    monkeypatch.setattr(TASK, "load_splits", lambda *a, **k: pytest.fail("the data was loaded again"))
    base = tiny_profile(es=TINY_QUADRATIC, peers=("gptq", AdaRoundConfig(steps=20)))
    res = run_side_by_side(ctx, bits=(2,), seeds=(0,), base=base, progress=False)
    assert ctx.with_profile(base).rtn("vgg_small", 2) is rtn
    md = side_by_side_markdown(res, TASK)
    for label in ("ES from RTN (local + global)", "GPTQ", "ES from GPTQ", "AdaRound", "ES from AdaRound"):
        assert f"| vgg_small | W2 | {label} |" in md
    assert "target (i)" in md and res["summary"][0]["seeds"] == [0]
    assert "comparisons" not in res or not res["comparisons"]
    row = res["summary"][0]
    row["es_test_accuracy"] = row["adaround_test_accuracy"] - 0.05       # five points behind AdaRound
    with pytest.raises(AssertionError):
        check_side_by_side(res, TASK, tolerance=0.01)
    row["es_test_accuracy"] = max(row["gptq_test_accuracy"], row["adaround_test_accuracy"])
    row["es_gptq_test_accuracy"], row["es_adaround_test_accuracy"] = row["gptq_test_accuracy"], row["es_test_accuracy"]
    check_side_by_side(res, TASK, tolerance=0.01)                                   # nothing behind: passes
    with pytest.raises(AssertionError, match="is not behind"):                      # a claimed lead must hold
        check_side_by_side(res, TASK, tolerance=0.01, behind=(("es_gptq", "gptq"),))
    row["adaround_test_accuracy"] = row["es_adaround_test_accuracy"] = row["es_test_accuracy"] + 0.05
    check_side_by_side(res, TASK, tolerance=0.01, behind=(("es", "adaround"),))  # the lead the notebook states
    with pytest.raises(ValueError, match="other data"):
        ctx.with_profile(tiny_profile(search_size=64))
    # a notebook picks some of the profile's peers by name, with or without the ES from their codes
    some = run_side_by_side(ctx, bits=(2,), seeds=(0,), base=base, peers=("adaround",), es_from_peers=False,
                            progress=False)
    md = side_by_side_markdown(some, TASK)
    assert "| vgg_small | W2 | AdaRound |" in md and "GPTQ" not in md and "ES from" not in md.replace(
        "ES from RTN", "")
    with pytest.raises(ValueError, match="brecq"):
        run_side_by_side(ctx, bits=(2,), seeds=(0,), base=base, peers=("brecq",), progress=False)
    # or passes a peer's config, e.g. the profile's peer at another budget: run as given
    cheaper = run_side_by_side(ctx, bits=(2,), seeds=(0,), base=base, peers=(AdaRoundConfig(steps=5), "gptq"),
                               es_from_peers=False, progress=False)
    assert [(p["method"], p.get("steps")) for p in cheaper["profile"]["peers"]] == [("adaround", 5), ("gptq", None)]
    with pytest.raises(ValueError, match="not the config of a registered method"):
        run_side_by_side(ctx, bits=(2,), seeds=(0,), base=base, peers=(object(),), progress=False)


def test_every_method_sees_the_weight_layout_the_evaluation_leaves(ckpt):
    """The classifier's evaluation runs the model in channels_last layout and converts it in place; the context
    converts it when it loads it, so a method run before the first evaluation sees the same weights, strides
    included, as one run after it (the CPU conv kernels round differently in each layout, and the ES's choices
    follow its float comparisons: a budget-curve run and a grid cell had given different ES codes at one seed)."""
    ctx = Context(TASK, tiny_profile(), device="cpu", checkpoint_dir=ckpt)
    fmodel, _ = ctx.model("vgg_small")
    strides = {n: p.stride() for n, p in fmodel.named_parameters()}
    convs = [p for p in fmodel.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    ctx.fp32("vgg_small")                                   # the evaluation: nothing left to convert
    assert {n: p.stride() for n, p in fmodel.named_parameters()} == strides
    # and so the ES run first gives the codes it gives after the FP32 numbers
    first = ctx.peer("vgg_small", 2, TINY_QUADRATIC, 0)["state"].codes()
    other = Context(TASK, tiny_profile(), device="cpu", checkpoint_dir=ckpt)
    other.fp32("vgg_small")
    after = other.peer("vgg_small", 2, TINY_QUADRATIC, 0)["state"].codes()
    assert all(torch.equal(first[k], after[k]) for k in first)


def test_every_method_runs_on_the_per_tensor_grid(tmp_path, ckpt):
    """``granularity="per_tensor"`` (``qevo reproduce --granularity per_tensor``): RTN, the peer and the ES choose
    codes on one scale per layer, their gains count from per-tensor RTN, and per-channel RTN is reported beside."""
    res = run(tmp_path, ckpt, bits=(2,), seeds=(0,), es=TINY_QUADRATIC, peers=("gptq",), es_from_peers=False,
              granularity="per_tensor", extra_granularities=("per_channel",))
    ctx = Context(TASK, tiny_profile(granularity="per_tensor", extra_granularities=("per_channel",)), device="cpu",
                  checkpoint_dir=ckpt)
    rtn = ctx.rtn("vgg_small", 2)
    assert all(lq.scale.numel() == 1 for lq in rtn["state"].layers.values())
    for method in ("gptq", TINY_QUADRATIC):
        state = ctx.peer("vgg_small", 2, method, 0)["state"]
        assert all(lq.scale.numel() == 1 for lq in state.layers.values())
        assert any(not torch.equal(lq.codes, rtn["state"].layers[n].codes) for n, lq in state.layers.items())
    cell = res["cells"][KEY.format(2, 0)]
    assert cell["rtn_test_accuracy"] == pytest.approx(rtn["test"]["accuracy"])
    assert cell["gain_accuracy"] == pytest.approx(cell["es_test_accuracy"] - rtn["test"]["accuracy"])
    md = (tmp_path / "results.md").read_text()
    assert "| vgg_small | W2 | RTN per-tensor" in md and "| vgg_small | W2 | RTN per-channel" in md
    with pytest.raises(ValueError, match="repeats the profile's granularity"):
        tiny_profile(granularity="per_tensor")          # the default extra grid is per_tensor itself


def test_cells_on_two_ray_workers_equal_the_serial_grid(tmp_path, ckpt, monkeypatch):
    """``workers=2`` (``qevo reproduce --workers 2``): the cells run on two Ray workers with one torch thread each
    and give the numbers and codes of a serial run with one thread, in one results.json that a second run reuses
    (without starting workers)."""
    profile = tiny_profile(es=TINY_QUADRATIC, peers=("gptq",))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = cell_grid.run_task(Context(TASK, profile, device="cpu", checkpoint_dir=ckpt), tmp_path / "serial",
                                    progress=False, figures=False)
        torch.set_num_threads(2)                      # shared out: one thread per worker
        ctx = Context(TASK, profile, device="cpu", checkpoint_dir=ckpt)
        par = cell_grid.run_task(ctx, tmp_path / "par", progress=False, figures=False, workers=2)
    finally:
        torch.set_num_threads(old)
    assert len(par["cells"]) == 4 and par["cells_reused"] == 0
    assert strip_timing(par["cells"]) == strip_timing(serial["cells"])
    assert [r.get("es_test_accuracy") for r in par["summary"]] == [r.get("es_test_accuracy") for r in serial["summary"]]
    assert any(r.get("es_test_accuracy") for r in par["summary"])
    for seed in (0, 1):                               # the ES ran at W2: its codes came back from the workers
        a, b = (cell_grid.load_codes(tmp_path / d, "classification", "vgg_small", 2, seed) for d in ("serial", "par"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(ctx.es_codes[("vgg_small", 2, seed)][k], b[k]) for k in b)
    monkeypatch.setattr(CellPool, "_start", lambda self: pytest.fail("workers started with nothing to run"))
    again = cell_grid.run_task(ctx, tmp_path / "par", progress=False, figures=False, workers=2)
    assert again["cells_reused"] == 4
    with pytest.raises(ValueError, match="at least 2"):
        CellPool(ctx, 1)


def test_without_a_global_stage_the_cell_holds_the_local_result(tmp_path, ckpt):
    """The default ES since 2026-12-06 is the local stage alone (global budget 0): a cell runs, records the
    local result as its result, the table names it "(local)", the target line says the global stage is off,
    and the figures leave out the fitness curves (nothing to draw)."""
    res = run(tmp_path, ckpt, figures=True, es=replace(TINY_QUADRATIC, global_stage=GlobalStage(budget=0)),
              bits=(2,), seeds=(0,), peers=(AdaRoundConfig(steps=5, samples=32),))
    cell = res["cells"][KEY.format(2, 0)]
    assert cell["es_run"] and cell["global_evaluations"] == 0 and cell["history"] == [] and cell["reports"] == []
    assert cell["evaluations"] == cell["local_evaluations"] > 0
    assert cell["local_test_accuracy"] == cell["es_test_accuracy"]
    assert cell["local_search_loss"] == pytest.approx(cell["es_search_loss"])
    md = (tmp_path / "results.md").read_text()
    assert "| vgg_small | W2 | ES from RTN (local) |" in md and "global stage over local: off" in md
    assert "no global stage" in md
    assert "vgg_small_W2_curves.png" not in res["figures"] and "vgg_small_W2_moved.png" in res["figures"]


def test_the_progress_bar_estimates_the_time_left_from_each_steps_reference_seconds(tmp_path, ckpt, monkeypatch,
                                                                                     capsys):
    """Each finished step of a cell moves the bar by its reference seconds (``Task.step_seconds``), in the order
    the cell runs them; a cell where RTN does not hurt (W8: its baseline only) counts its skipped steps when it
    ends, so the bar ends full; the bar says it estimates the time left; the hook is gone afterwards."""
    from qevo_lite.experiment import time_left
    seen = []

    class Recording(time_left.TimeLeft):
        def step(self, name):
            seen.append((name, self._bar.n))
            super().step(name)

        def close(self):
            seen.append(("close", self._bar.n, self._bar.total))
            super().close()

    monkeypatch.setattr(cell_grid, "TimeLeft", Recording)
    profile = tiny_profile(bits=(2, 8), seeds=(0,), es=TINY_QUADRATIC, peers=("gptq",), es_from_peers=True)
    ctx = Context(TASK, profile, device="cpu", checkpoint_dir=ckpt)
    cell_grid.run_task(ctx, tmp_path, progress=True, figures=False)
    assert [s[0] for s in seen] == ["baseline", "es", "gptq", "es_from:gptq", "baseline", "close"]
    w = TASK.step_seconds
    one_cell = w["baseline"] + 2 * w["es"] + w["gptq"]    # the ES from GPTQ's codes weighs what the ES does
    assert [s[1] for s in seen[:4]] == pytest.approx([0, w["baseline"], w["baseline"] + w["es"],
                                                      w["baseline"] + w["es"] + w["gptq"]])
    assert seen[4][1] == pytest.approx(one_cell)          # W2's cell done in full before W8's starts
    assert seen[5][1] == pytest.approx(2 * one_cell) and seen[5][2] == pytest.approx(2 * one_cell)
    assert "left (estimated)" in capsys.readouterr().err
    assert ctx.on_step is None


def test_a_peer_at_a_quarter_of_its_tuned_steps_weighs_a_quarter_in_the_estimate():
    from qevo_lite.experiment.time_left import peer_seconds
    from qevo_lite.methods import get_method
    brecq = next(c for c in TASK.tuned_peers if get_method(c).name == "brecq")
    gptq = next(c for c in TASK.tuned_peers if get_method(c).name == "gptq")
    out = peer_seconds(TASK.step_seconds, (gptq, replace(brecq, steps=brecq.steps // 4)), TASK.tuned_peers)
    assert out["brecq"] == pytest.approx(TASK.step_seconds["brecq"] / 4)
    assert out["gptq"] == TASK.step_seconds["gptq"] and out["es"] == TASK.step_seconds["es"]
