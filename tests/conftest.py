import importlib.metadata
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

pytest_plugins = ["pytester"]   # tests/test_packaging.py runs a small suite through this conftest's hook


def installed_versions(names) -> str:
    """``"brevitas 0.13.4, accelerate 1.15.0"``: the installed version of each distribution ("missing" if not)."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "missing"
    return ", ".join(f"{name} {version(name)}" for name in names)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test of a module that sets ``RAN_WITH = (distribution names, ...)`` (an optional cross-check
    against another library) says in its report which versions of those it ran with, so a break that a new
    release brings is recognised as one."""
    outcome = yield
    report = outcome.get_result()
    names = getattr(item.module, "RAN_WITH", None) if hasattr(item, "module") else None
    if names and report.failed and hasattr(report.longrepr, "addsection"):
        report.longrepr.addsection("versions it ran with", installed_versions(names))


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
