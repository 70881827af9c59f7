"""Image classification (the paper's VGG and ResNet experiments) as a task of the experiment pipeline.

Data: :func:`qevo_lite.core.data.load_splits` (``train`` for pretraining only, ``search`` held back from
pretraining, ``test`` the official test split). Models: :mod:`qevo_lite.core.models` (``vgg_small``,
``resnet_small`` on Fashion-MNIST; ``vgg11``, ``resnet20`` on CIFAR-10). Metric: held-out accuracy; the
ES minimises the search-split cross-entropy (nats).
"""
from __future__ import annotations


import torch

from ...core.data import load_splits
from ...core.evaluate import default_device, evaluate
from ...core.models import ARCHITECTURES, build_model
from ...core.train import train_classifier
from ...es.pipeline import EvolutionConfig, GlobalStage, QuadraticLocal, SampledLocal
from ...experiment.profile import CellGrid, DataSpec, MethodSpec, Profile
from ...methods import AdaRoundConfig, BlockReconstructionConfig, GPTQConfig
from ...experiment.task import Metric, Task, describe_es

# Training recipes of the committed checkpoints (epochs chosen to train in ~2 minutes on 2 CPU cores).
RECIPES = {
    ("vgg_small", "fashion_mnist"): {"epochs": 3, "lr": 3e-3},
    ("resnet_small", "fashion_mnist"): {"epochs": 2, "lr": 3e-3},
    ("vgg_small", "digits"): {"epochs": 30, "lr": 3e-3},
    ("resnet_small", "digits"): {"epochs": 30, "lr": 3e-3},
    ("vgg11", "cifar10"): {"epochs": 30, "lr": 2e-3},
    ("resnet20", "cifar10"): {"epochs": 30, "lr": 2e-3},
}
DEFAULT_RECIPE = {"epochs": 3, "lr": 3e-3}

# the peers at the settings chosen on the validation slice (docs/tuning.md: best mean of both models at W2)
TUNED_PEERS = (GPTQConfig(samples=1024, damp=0.01), AdaRoundConfig(lr=0.1, reduction="mean"),
               BlockReconstructionConfig(lr=0.1, fisher=False))
PROFILES = {
    # the ES: its local stage alone (the global stage added no held-out gain: qevo_lite.es.pipeline)
    # fast: the three peers tuned (notebooks 03 and 04 run them with one seed to stay within 4 minutes); full: the
    # same three at the settings validated on the fast profile's slice (not re-validated on CIFAR-10: no GPU has been
    # lent to run it; AdaRound's own defaults, lr 1e-3 and the error summed over channels, trailed lr 0.1 by 1.9
    # points at vgg_small W2 there, so a comparison at defaults would hand the ES a lead it did not earn)
    "fast": Profile("fast", "classification", DataSpec("fashion_mnist", search_size=1024, test_size=5000),
                    CellGrid({"vgg": "vgg_small", "resnet": "resnet_small"}, bits=(2, 3, 4, 8), seeds=(0, 1, 2),
                             min_drop_points=0.5),
                    MethodSpec(EvolutionConfig(QuadraticLocal(samples=256)), TUNED_PEERS,
                               report_every=2)),
    "full": Profile("full", "classification", DataSpec("cifar10", search_size=4096, test_size=None),
                    CellGrid({"vgg": "vgg11", "resnet": "resnet20"}, bits=(2, 3, 4, 8), seeds=(0, 1, 2),
                             min_drop_points=0.5),
                    MethodSpec(EvolutionConfig(QuadraticLocal(samples=1024)), TUNED_PEERS,
                               report_every=25)),
}
# ./run.sh demo: every method once at the headline width W2, one seed, one model
PROFILES["demo"] = PROFILES["fast"].headline(2, TUNED_PEERS, {"vgg": "vgg_small"})
# the ES as first built (the sampled local stage), which notebooks 03 and 04 walk
FIRST_ES = {"fast": EvolutionConfig(SampledLocal(samples=128, evaluations=200), GlobalStage(budget=64)),
            "full": EvolutionConfig(SampledLocal(samples=512, evaluations=1000), GlobalStage(budget=2000))}
FIRST_ES["demo"] = FIRST_ES["fast"]


class ClassificationTask(Task):
    """Classifiers: held-out accuracy, cross-entropy as the ES loss."""

    name = "classification"
    title = "Classification"
    metrics = (Metric("accuracy", "accuracy (%)"),)
    search_metrics = ("accuracy",)
    es_loss, es_metric = "cross_entropy", "default"
    hurt = 2.0
    architectures = tuple(ARCHITECTURES)
    first_es = FIRST_ES
    tuned_peers = TUNED_PEERS
    # each step's seconds in the demo (2-core AMD EPYC without AVX-512, clean clone, 2026-12-06): the weights of
    # qevo reproduce's time-left estimate (baseline: FP32, RTN and the held-out evaluations)
    step_seconds = {"baseline": 8, "es": 8, "gptq": 5, "adaround": 42, "brecq": 37}
    fast_layout = True   # its evaluation converts the model to channels_last (core.evaluate.to_fast_layout)
    profiles = PROFILES

    def load_splits(self, profile, download: bool | None = None):
        return load_splits(profile.data.dataset, search_size=profile.data.search_size, seed=profile.data.split_seed,
                           download=download)

    def build_model(self, arch: str, entry: dict):
        return build_model(arch, entry["in_channels"], entry["num_classes"])

    def train_model(self, arch, dataset, seed=0, epochs=None, device=None, progress=True, splits=None):
        recipe = dict(RECIPES.get((arch, dataset), DEFAULT_RECIPE))
        if epochs is not None:
            recipe["epochs"] = epochs
        splits = splits if splits is not None and splits.name == dataset else load_splits(dataset, seed=seed)
        torch.manual_seed(seed)
        model = build_model(arch, splits.in_channels, splits.num_classes)
        train_classifier(model, splits.train, epochs=recipe["epochs"], lr=recipe["lr"], seed=seed,
                         progress=progress, device=device or default_device())
        model.eval()
        return model.cpu(), {"in_channels": splits.in_channels, "num_classes": splits.num_classes,
                             "epochs": recipe["epochs"], "lr": recipe["lr"],
                             "fp32_test_accuracy": round(evaluate(model, splits.test)["accuracy"], 4)}

    def evaluate(self, ctx, model, split: str) -> dict:
        return evaluate(model, ctx.search if split == "search" else ctx.test)

    def rtn_score(self, model, split) -> float:
        return evaluate(model, split)["loss"]

    def describe(self, results: dict) -> str:
        p = results["profile"]
        return (f"Dataset `{p['dataset']}`; search split {p['search_size']} images (the ES fitness set, held back "
                f"from pretraining); held-out test {results.get('test_images', '?')} images (reported only, never "
                "used to select). Accuracies in %, the ES as mean ± sample std over the seeds. RTN = nearest "
                "rounding with the scale rule of lowest search loss. " + describe_es(p, "images", "cross-entropy") +
                f" The ES and the peers run where RTN is at least {p['min_drop_points']:g} points below FP32 on the "
                "search split. Gap "
                "recovered = (ES test - RTN test) / (FP32 test - RTN test). Weights moved = share of codes that "
                "differ from RTN.")


TASK = ClassificationTask()
