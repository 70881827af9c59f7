"""Object detection (the paper's detection experiment) as a task of the experiment pipeline.

Why not torchvision's detectors? FCOS, RetinaNet, SSD and Faster R-CNN take a *list* of images and a
*list* of target dicts, resize and batch them internally, match anchors or points to boxes inside
``forward`` (data-dependent Python control flow) and return the *batch mean* of their losses. The ES
needs the opposite on every one of its thousands of evaluations: the incremental evaluator traces
``model(x)`` with ``torch.fx`` (tensor in, tensor out), caches the activations upstream of the changed
layers, and compares a candidate with its parent image by image (a paired test for early rejection),
so it needs a loss per image. So the detectors here (:mod:`.models`) are compact CenterNet-style
single-shot detectors whose forward is one tensor in, one tensor out; targets, loss and decoding are in
:mod:`.targets`, mAP (torchmetrics, COCO-style) in :mod:`.metrics`, the generated canvases in :mod:`.data`.

The experiment: RTN per channel with the scale rule of lowest search-split detection loss, then the
global (1+lambda) ES on the per-image detection loss of the search canvases, held-out mAP on the test
canvases at the end. The local stage runs the per-channel ES on each layer's exact quadratic output error,
weighted per output position by the squared gradient of the detection loss (validated: docs/tuning.md)
(the older sampled local ES, 128 evaluations per layer, had lowered held-out mAP at VGG W3; AdaRound, which
minimises the same layer-output error, raises it: the objective was fine, the search was weak). After the grid, :mod:`.comparison` compares the loss with mAP as fitness.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from ...core.evaluate import default_device
from ...core.train import train_loop
from ...experiment.cell_grid import run_cells
from ...es.pipeline import EvolutionConfig, GlobalStage, QuadraticLocal
from ...experiment.profile import CellGrid, DataSpec, MethodSpec, Profile
from ...methods import AdaRoundConfig, BlockReconstructionConfig, GPTQConfig
from ...experiment.task import Metric, Task, describe_es
from .comparison import comparison_markdown, run_fitness_comparison, summarize_comparison
from .data import TEST_CANVASES, TRAIN_CANVASES, load_dataset
from .metrics import detection_loss_on, evaluate_detector, predict
from .models import ARCHITECTURES, RECIPES, build_model
from .plots import plot_before_after, plot_fitness_comparison, plot_samples
from .targets import STRIDE, detection_loss

_MODELS = {"vgg": "det_vgg_small", "resnet": "det_resnet_small"}
# the ES's local stage on the detectors: the layer-output error weighted per output position by the squared
# gradient of the detection loss, on all 192 search canvases (docs/tuning.md, "The ES's local fitness": validation
# mAP 51.3 / 52.1 against 47.6 / 49.2 unweighted on 64 canvases, 3 seeds; it hurts on the classifiers and the
# autoencoder, which keep the plain output error)


@dataclass(frozen=True)
class DetectionOptions:
    """Detection's own profile settings: the fitness comparison ``qevo reproduce`` adds (the ES's global stage
    scored by the detection loss or by mAP, :mod:`.comparison`), read by this task alone.

    Attributes:
        compare_budget: global-stage evaluations per comparison run (0: no comparison).
        compare_model: the detector it runs on, at the lowest bit width where that detector ran the ES.
        compare_seeds: its seeds.
    """

    compare_budget: int = 0
    compare_model: str = "det_vgg_small"
    compare_seeds: tuple = (0,)


# the peers at the settings validated on this task's own validation slice (docs/tuning.md, "Detection": canvases
# 192-575 of the search pool). The fast profile runs them without the ES from each peer's codes: with three
# peers at 100-160 s each per detection cell that would add three ES runs per cell and tell what notebooks 03
# and 06 already show (started from a peer, the ES ends near where it ends from RTN, or undoes block
# reconstruction's trades).
TUNED_PEERS = (GPTQConfig(samples=1024, damp=0.01), AdaRoundConfig(lr=0.1, reduction="mean"),
               BlockReconstructionConfig(lr=0.1, fisher=True))
PROFILES = {
    # the ES: its local stage alone (the global stage added no held-out gain: qevo_lite.es.pipeline)
    "fast": Profile("fast", "detection", DataSpec("glyph_boxes", search_size=192, test_size=400),
                    CellGrid(_MODELS, bits=(2, 3, 4), extra_granularities=(), min_drop_points=1.0),
                    MethodSpec(EvolutionConfig(QuadraticLocal(samples=192, weighting="fisher")),
                               TUNED_PEERS, es_from_peers=False, report_every=None),
                    DetectionOptions(compare_budget=12, compare_seeds=(0, 1, 2))),
    "full": Profile("full", "detection", DataSpec("voc", search_size=2048, test_size=5000),
                    CellGrid(_MODELS, bits=(2, 3, 4, 8), extra_granularities=(), min_drop_points=1.0),
                    # the peers as validated for fast (docs/tuning.md)
                    MethodSpec(EvolutionConfig(QuadraticLocal(samples=512, weighting="fisher")), TUNED_PEERS,
                               es_from_peers=False, report_every=None),
                    DetectionOptions(compare_budget=200, compare_seeds=(0,))),
}
# ./run.sh demo: every method once at the headline width W2, one seed
PROFILES["demo"] = PROFILES["fast"].headline(2, TUNED_PEERS, {"vgg": "det_vgg_small"}).with_overrides(
    options=replace(PROFILES["fast"].options, compare_budget=0))   # no fitness comparison: notebook 05 shows it
# the ES as first built, which notebook 05 walks: the global stage alone
FIRST_ES = {"fast": EvolutionConfig(None, GlobalStage(budget=24)), "full": EvolutionConfig(None, GlobalStage(budget=2000))}
FIRST_ES["demo"] = FIRST_ES["fast"]


def train_detector(model, train, epochs: int = 6, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                   device="cpu", progress: bool = True) -> list[dict]:
    """Train ``model`` in place on :func:`~.targets.detection_loss` (:func:`qevo_lite.core.train.train_loop`,
    AdamW, one-cycle, weight decay 5e-4, channels_last batches: faster convs on the CPU).

    Returns one ``{"epoch", "loss", "seconds"}`` per epoch."""
    history = train_loop(model, train, lambda out, x, y: detection_loss(out, y).mean(), epochs, batch_size, lr,
                         seed=seed, device=device, progress=progress, fast_layout=True)
    model.eval()
    return history


class DetectionTask(Task):
    """Detectors: held-out mAP (COCO-style, torchmetrics), the per-image detection loss as the ES loss."""

    name = "detection"
    title = "Detection"
    metrics = (Metric("map", "mAP@[.5:.95] (%)"), Metric("map50", "mAP@0.5 (%)"))
    search_metrics = ("map", "map50")
    es_loss, es_metric = staticmethod(detection_loss), None
    hurt = 2.0
    plotted_metrics = 2
    architectures = tuple(ARCHITECTURES)
    first_es = FIRST_ES
    tuned_peers = TUNED_PEERS
    # each step's seconds in the demo (2-core AMD EPYC without AVX-512, clean clone, 2026-12-06): the weights of
    # qevo reproduce's time-left estimate (baseline: FP32, RTN and the held-out evaluations)
    step_seconds = {"baseline": 16, "es": 26, "gptq": 4, "adaround": 159, "brecq": 145}
    fast_layout = True   # its evaluation converts the model to channels_last (core.evaluate.to_fast_layout)
    options_type = DetectionOptions
    study_options = ("compare_budget", "compare_model", "compare_seeds")
    profiles = PROFILES

    def load_splits(self, profile, download: bool | None = None):
        data = profile.data
        return load_dataset(data.dataset, seed=data.split_seed, train_size=0, search_size=data.search_size,
                            test_size=data.test_size, download=download)

    def build_model(self, arch, entry):
        return build_model(arch, entry)

    def train_model(self, arch, dataset="glyph_boxes", seed=0, epochs=None, device=None, progress=True, splits=None):
        recipe = dict(RECIPES.get(arch, {"epochs": 6, "lr": 3e-3}))
        if epochs is not None:
            recipe["epochs"] = epochs
        splits = load_dataset(dataset, seed=seed, train_size=TRAIN_CANVASES, test_size=TEST_CANVASES)
        torch.manual_seed(seed)
        model = build_model(arch, {"in_channels": splits.train.x.shape[1], "num_classes": splits.num_classes})
        t0 = time.perf_counter()
        history = train_detector(model, splits.train, epochs=recipe["epochs"], lr=recipe["lr"], seed=seed,
                                 device=device or default_device(), progress=progress)
        seconds = time.perf_counter() - t0
        model = model.cpu().eval().to(memory_format=torch.contiguous_format)
        test = evaluate_detector(model, splits.test)
        return model, {"in_channels": splits.train.x.shape[1], "num_classes": splits.num_classes,
                       "canvas": splits.canvas, "stride": STRIDE, "train_canvases": len(splits.train),
                       "glyph_source": splits.glyph_source, "epochs": recipe["epochs"], "lr": recipe["lr"],
                       "train_seconds": round(seconds, 1), "final_train_loss": round(history[-1]["loss"], 4),
                       "fp32_test_map50": round(test["map50"], 4), "fp32_test_map": round(test["map"], 4)}

    def unavailable(self, profile) -> str | None:
        if profile.data.dataset == "voc":
            return ("Detection has no paper-scale path yet: the full profile would need Pascal VOC and a real "
                    "detector, and only the loader of VOC exists (its training and evaluation do not). Run detection "
                    "with --profile fast (generated glyph canvases); the other experiments of the full profile run.")
        return None

    def evaluate(self, ctx, model, split: str) -> dict:
        return evaluate_detector(model, ctx.search if split == "search" else ctx.test)

    def rtn_score(self, model, split) -> float:
        return detection_loss_on(model, split)

    def describe(self, results: dict) -> str:
        p = results["profile"]
        return (f"Generated `{p['dataset']}` canvases ({results.get('canvas', 64)}x{results.get('canvas', 64)}, 1-3 "
                f"{results.get('glyph_source', 'glyph')} glyphs each, boxes tight around the glyph pixels); search "
                f"split {p['search_size']} canvases of training glyphs never trained on (the ES fitness set); held-out "
                f"test {p['test_size']} canvases of the official test glyphs (reported only). mAP by torchmetrics "
                "(COCO-style, in %), the ES as mean ± sample std over the seeds. RTN = nearest rounding "
                "with the scale rule of lowest search-split detection loss. "
                + describe_es(p, "canvases", "per-image detection loss") + f" The ES and the peers run where RTN is at least {p['min_drop_points']:g} points of mAP@[.5:.95] below FP32 on the "
                "search split. Weights moved = share of codes that differ from RTN.")

    def without_studies(self, profile):
        """``profile`` without the fitness comparison (``compare_budget`` 0)."""
        return profile.with_overrides(options=replace(profile.options, compare_budget=0))

    def extra(self, ctx, results: dict, out, progress: bool) -> dict:
        """The fitness comparison (loss vs mAP) at the lowest bit width where the profile's compare model
        ran the ES (resumable through ``out/results.json``)."""
        p = ctx.profile
        model, budget = p.options.compare_model, p.options.compare_budget
        es_bits = sorted({r["bits"] for r in results["summary"] if r["es_run"] and r["arch"] == model})
        extra = {"canvas": ctx.splits.canvas, "glyph_source": ctx.splits.glyph_source, "comparisons": [],
                 "comparison": None}
        if not budget or not es_bits:
            return extra
        b = es_bits[0]
        settings = {**ctx.settings(model), "compare_budget": budget}
        jobs = [(f"fitness/{model}/W{b}/seed{s}", settings,
                 lambda s=s: {"settings": settings, **run_fitness_comparison(ctx, model, b, s, budget)})
                for s in p.options.compare_seeds]
        header = {k: results[k] for k in ("version", "task", "profile")}
        json_path = None if out is None else out / "results.json"
        comparisons, reused = run_cells(jobs, json_path, header, progress, desc="fitness comparison")
        extra["comparisons"] = list(comparisons.values())
        extra["comparison"] = summarize_comparison(extra["comparisons"])
        extra["cells_reused"] = results["cells_reused"] + reused
        return extra

    def extra_markdown(self, results: dict) -> str:
        return comparison_markdown(results["comparison"]) if results.get("comparison") else ""

    def figures(self, ctx, results: dict) -> list:
        """Sample canvases; FP32 / RTN / ES boxes at the lowest ES bit width (first seed); the comparison."""
        figs = [(plot_samples(ctx.test, ctx.splits.classes, n=8), "detection_samples.png")]
        rows = results["summary"]
        es_bits = sorted({r["bits"] for r in rows if r["es_run"]})
        if es_bits:
            b, seed, idx = es_bits[0], results["profile"]["seeds"][0], list(range(4))
            preds, x = {}, ctx.test.x[:len(idx)]
            for arch in [r["arch"] for r in rows if r["es_run"] and r["bits"] == b]:
                fmodel, _ = ctx.model(arch)
                short = arch.removeprefix("det_").removesuffix("_small")
                preds[f"{short} FP32"] = predict(fmodel, x)
                preds[f"{short} RTN W{b}"] = predict(ctx.rtn(arch, b)["state"].to_model(fmodel), x)
                preds[f"{short} ES W{b}"] = predict(ctx.es_model(arch, b, seed), x)
            figs.append((plot_before_after(ctx.test, preds, idx, ctx.splits.classes), f"detection_W{b}_boxes.png"))
        if results.get("comparisons"):
            figs.append((plot_fitness_comparison(results["comparisons"]), "detection_fitness_comparison.png"))
        return figs


TASK = DetectionTask()
