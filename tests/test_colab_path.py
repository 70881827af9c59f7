"""The Colab path, offline: the generated install cell in a fresh venv, then notebook 01 and the cheap part of
notebook 03 from outside the clone.

What Colab does is re-created with what this machine has: the repository URL of the install cell is
overridden with ``QEVO_LITE_URL=git+file://<a clone of this repository>``; the fresh venv sees the heavy
dependencies (torch, ...) of the test environment through a ``.pth`` file, but not qevo-lite itself, so the cell
must install it. Then the notebooks run headless from a folder outside the clone; the pretrained models must
come from the installed package (nothing retrained), the exercises must find the cached results among the
installed package data (the run fails otherwise), and the checked outputs must equal the committed ones.
Notebook 03 runs without its ES runs (the cells from the first ES run to the exercises, and the summary that
reads them): they take two of its three minutes, test nothing about the install, and nbval runs them in the
clone.
Real Colab (its preinstalled packages, its widget front end, Google Drive) is not reached from here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_nearest_neighbour_quantization", "03_vgg_classification")
# code cells left out, as (first cell's marker, marker of the cell that ends the span or None for the end)
LEFT_OUT = {"03_vgg_classification": (("cells, rows = walk.run(ctx", "# The exercises are the questions"),
                                      ("walk.print_summary(", None))}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the repository")


def _install_cell(nb) -> str:
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "QEVO_LITE_URL" in c.source]
    assert len(cells) == 1, "every notebook has exactly one generated install cell"
    return cells[0]


def _checked_outputs(nb) -> list[str]:
    """The text outputs of the cells nbval compares (``# NBVAL_CHECK_OUTPUT``)."""
    return ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
            for c in nb.cells if c.cell_type == "code" and c.source.startswith("# NBVAL_CHECK_OUTPUT")]


def _without(nb, spans):
    """``nb`` without the code cells of each ``(start, end)`` span of :data:`LEFT_OUT` (markers are substrings
    of a cell's source; the cell with ``end`` is kept); AssertionError if a marker is not found."""
    for start, end in spans:
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        first = next((i for i in code if start in nb.cells[i].source), None)
        assert first is not None, f"no cell with {start!r}"
        after = (i for i in code if i > first and end in nb.cells[i].source)
        stop = len(nb.cells) if end is None else next(after, None)
        assert stop is not None, f"no cell with {end!r} after {start!r}"
        nb.cells = [c for i, c in enumerate(nb.cells) if not (first <= i < stop and c.cell_type == "code")]
    return nb


def _deps_only(site: Path, into: Path) -> Path:
    """A folder of links to everything in ``site`` except qevo-lite's own install (its editable hook)."""
    into.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith(("qevo_lite", "__editable__", "_qevo_lite", "qevo-lite")):
            continue
        (into / entry.name).symlink_to(entry)
    return into


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A clone of the repository, a fresh venv whose only qevo-lite is the one the install cell installs."""
    tmp = tmp_path_factory.mktemp("colab")
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--upgrade-deps", str(venv)], check=True)   # a current pip, as Colab has
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    deps = _deps_only(Path(sysconfig.get_paths()["purelib"]), tmp / "deps")
    (site / "test_deps.pth").write_text(f"{deps}\n")
    work = tmp / "work"          # outside the clone: nothing of the repository is on the path
    work.mkdir()
    env = {**os.environ, "QEVO_LITE_URL": f"git+file://{clone}", "QEVO_DATA": str(tmp / "data"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("QEVO_CHECKPOINTS", None)
    env.pop("PYTHONPATH", None)
    return {"py": py, "site": site, "work": work, "env": env, "clone": clone}


def test_install_cell_installs_the_package_with_its_checkpoints(fresh_venv):
    py, env, work = fresh_venv["py"], fresh_venv["env"], fresh_venv["work"]
    probe = "import importlib.util; print(importlib.util.find_spec('qevo_lite') is None)"
    assert subprocess.run([str(py), "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "True", "qevo_lite must be missing before the cell runs"
    cell = _install_cell(nbformat.read(ROOT / "notebooks" / f"{NOTEBOOKS[0]}.ipynb", as_version=4))
    run = subprocess.run([str(py), "-c", cell], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"installing qevo-lite from git+file://{fresh_venv['clone']}" in run.stdout
    where = subprocess.run([str(py), "-c", "import qevo_lite.core.registry as r, json; print(json.dumps("
                            "[r.__file__, str(r.checkpoint_dir()), sorted(r.read_manifest())]))"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    module, checkpoints, keys = json.loads(where.stdout)
    assert module.startswith(str(fresh_venv["site"])), module           # the installed copy, not the clone
    assert checkpoints.startswith(str(fresh_venv["site"])) and "vgg_small-fashion_mnist" in keys
    assert (Path(checkpoints) / "vgg_small-fashion_mnist.pt").stat().st_size > 10_000
    # the cell is idempotent: with the package present it installs nothing
    again = subprocess.run([str(py), "-c", cell], cwd=work, env=env, capture_output=True, text=True, check=True)
    assert "installing" not in again.stdout


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_from_the_installed_package(fresh_venv, name):
    """Runs after the install test (same module fixture); a notebook executes outside the clone, prints no
    retraining, and its checked outputs equal the committed ones."""
    py, env, work = fresh_venv["py"], fresh_venv["env"], fresh_venv["work"]
    if subprocess.run([str(py), "-c", "import qevo_lite"], cwd=work, env=env).returncode != 0:
        pytest.skip("the install test did not install the package")
    committed = ROOT / "notebooks" / f"{name}.ipynb"
    nb = _without(nbformat.read(committed, as_version=4), LEFT_OUT.get(name, ()))
    nbformat.write(nb, work / committed.name)
    runner = ("import nbformat, sys; from nbclient import NotebookClient\n"
              f"nb = nbformat.read({committed.name!r}, as_version=4)\n"
              "NotebookClient(nb, timeout=900, kernel_name='python3').execute()\n"
              f"nbformat.write(nb, 'executed_' + {committed.name!r})\n")
    run = subprocess.run([str(py), "-c", runner], cwd=work, env={**env, "QEVO_PROFILE": "fast"},
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    executed = nbformat.read(work / f"executed_{committed.name}", as_version=4)
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "training it now" not in text, "a checkpoint was retrained instead of loaded from the package"
    assert str(fresh_venv["site"]) in text, "the install cell should report the installed copy"
    kept = _without(nbformat.read(committed, as_version=4), LEFT_OUT.get(name, ()))
    assert _checked_outputs(executed) == _checked_outputs(kept) and _checked_outputs(kept)
