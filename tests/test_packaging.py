"""What pyproject.toml declares: every runtime dependency has the lower bound that ``./run.sh test-oldest``
pins (scripts/oldest_versions.py), and the pretrained checkpoints are package data.

The lower bounds are versions the tests ran on: ``./run.sh test-oldest`` installs exactly them and runs
the unit tests and the notebooks. This test keeps the script and pyproject in step, so a dependency
added without a lower bound (or with a form the script cannot pin) fails here rather than going untested.
"""
import tomllib

import pytest
from conftest import ROOT, load_script

oldest = load_script("oldest_versions")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_runtime_dependency_is_pinned_to_its_lower_bound():
    declared = PYPROJECT["project"]["dependencies"]
    pins = oldest.runtime_lower_bounds()
    assert [f"{name}>={version}" for name, version in pins.items()] == declared
    assert all(version.count(".") == 2 for version in pins.values()), pins   # full versions: the pins are exact


def test_a_dependency_without_a_lower_bound_is_refused(tmp_path):
    text = (ROOT / "pyproject.toml").read_text().replace('"tqdm>=', '"tqdm<5,>=', 1)
    bad = tmp_path / "pyproject.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="tqdm"):
        oldest.runtime_lower_bounds(bad)


def test_checkpoints_are_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["qevo_lite"]
    shipped = {p.name for p in (ROOT / "qevo_lite" / "checkpoints").iterdir()}
    assert "manifest.json" in shipped and any(name.endswith(".pt") for name in shipped)
    assert "checkpoints/*.pt" in patterns and "checkpoints/manifest.json" in patterns
