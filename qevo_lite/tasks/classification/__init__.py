"""Image classification: VGG and ResNet on Fashion-MNIST (fast) or CIFAR-10 (full), notebooks 03 and 04.

``TASK`` is the task of the experiment pipeline; :mod:`.walk` holds the notebooks' steps.
"""
from . import walk
from .task import DEFAULT_RECIPE, PROFILES, RECIPES, TASK, TUNED_PEERS, ClassificationTask

__all__ = ["DEFAULT_RECIPE", "PROFILES", "RECIPES", "TASK", "TUNED_PEERS", "ClassificationTask", "walk"]
