"""What pyproject.toml declares: every runtime dependency has the lower bound that ``./run.sh test-oldest``
pins (scripts/dependency_versions.py), the test lock agrees with pyproject, and the pretrained checkpoints are
package data.

The lower bounds are versions the tests ran on: ``./run.sh test-oldest`` installs exactly them and runs
the unit tests and the notebooks. This test keeps the script and pyproject in step, so a dependency
added without a lower bound (or with a form the script cannot pin) fails here rather than going untested.
"""
import re
import tomllib

import pytest
from packaging.requirements import Requirement
from conftest import ROOT, load_script

versions = load_script("dependency_versions")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements" / "test.lock"


def test_every_runtime_dependency_is_pinned_to_its_lower_bound():
    declared = PYPROJECT["project"]["dependencies"]
    pins = versions.runtime_lower_bounds()
    assert [f"{name}>={version}" for name, version in pins.items()] == declared
    assert all(version.count(".") == 2 for version in pins.values()), pins   # full versions: the pins are exact


def test_a_dependency_without_a_lower_bound_is_refused(tmp_path):
    text = (ROOT / "pyproject.toml").read_text().replace('"tqdm>=', '"tqdm<5,>=', 1)
    bad = tmp_path / "pyproject.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="tqdm"):
        versions.runtime_lower_bounds(bad)


def test_checkpoints_are_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["qevo_lite"]
    shipped = {p.name for p in (ROOT / "qevo_lite" / "checkpoints").iterdir()}
    assert "manifest.json" in shipped and any(name.endswith(".pt") for name in shipped)
    assert "checkpoints/*.pt" in patterns and "checkpoints/manifest.json" in patterns


def locked_versions() -> dict[str, str]:
    """``{normalised name: version}`` from requirements/test.lock (``name==version`` lines)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_lock_pins_every_dependency_and_extra_within_pyproject():
    """The lock ``./run.sh test`` installs with covers every runtime dependency and every extra CI installs,
    each exactly, and each pin satisfies pyproject's range (a stale lock after a bound changed fails here)."""
    pins = locked_versions()
    assert pins and all(re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", v) for v in pins.values()), "not all pins are exact"
    wanted = list(PYPROJECT["project"]["dependencies"])
    for extra in ("test", "crosscheck", "classroom"):
        wanted += PYPROJECT["project"]["optional-dependencies"][extra]
    for requirement in map(Requirement, wanted):
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is not in requirements/test.lock: run ./run.sh lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock has {name}=={pins[name]}, outside pyproject's {requirement}: run ./run.sh lock")


def test_capped_dependencies_are_found_in_every_extra(tmp_path):
    """test-newest lifts exactly the caps pyproject writes (accelerate's, while Brevitas breaks with 1.16)."""
    assert "accelerate" in versions.capped_dependencies()
    text = (ROOT / "pyproject.toml").read_text().replace('"tqdm>=4.64.0"', '"tqdm>=4.64.0,<5"', 1)
    bad = tmp_path / "pyproject.toml"
    bad.write_text(text)
    assert "tqdm" in versions.capped_dependencies(bad)


def test_a_failing_cross_check_names_the_versions_it_ran_with(pytester):
    """conftest's report hook: a failure in a module with ``RAN_WITH`` lists those distributions' versions."""
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text().replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(test_other_library='RAN_WITH = ("pytest", "no-such-distribution")\n'
                                          "def test_breaks():\n    assert False\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*versions it ran with*", f"pytest {pytest.__version__}, no-such-distribution missing"])
