import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (the scripts folder is not a package) and return it as a module."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    """The always-available embedded dataset (small, fast)."""
    from qevo_lite import load_splits
    return load_splits("digits", search_size=256, seed=0)


@pytest.fixture(scope="session")
def tiny_vgg(digits):
    """A small VGG trained for a few epochs on digits (seconds), BN folded."""
    from qevo_lite import build_model, train_classifier, fold_batchnorm
    torch.manual_seed(0)
    model = build_model("vgg_small", 1, 10)
    train_classifier(model, digits.train, epochs=4, progress=False)
    return fold_batchnorm(model)
