"""The percent-format notebook sources parse with jupytext and match the committed notebooks.

Each ``notebooks/src/<name>.py`` is read the way ``scripts/notebooks.py build`` reads it (jupytext,
format ``py:percent``) and compared with the committed ``notebooks/<name>.ipynb``: a source edited
without rebuilding (``./run.sh notebooks``) fails here.
"""
from __future__ import annotations

import ast

import nbformat
import pytest
from conftest import ROOT, load_script

pytest.importorskip("jupytext")

SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9]*.py"))


builder = load_script("notebooks")


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def test_sources_found():
    assert len(SOURCES) >= 6, SOURCES
    assert [s.stem for s in SOURCES] == [s.stem for s in builder.selected([])]


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_source_structure(src):
    nb = builder.read_source(src)
    assert nb.cells, f"{src.name}: no cells"
    assert nb.cells[0].cell_type == "markdown", f"{src.name}: the first cell is not markdown"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{src.name}: {len(params)} cells tagged 'parameters', expected 1"
    assert params[0].cell_type == "code", f"{src.name}: the 'parameters' cell is not a code cell"


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_source_matches_committed_notebook(src):
    path = ROOT / "notebooks" / f"{src.stem}.ipynb"
    assert path.exists(), f"{path.name} missing: run ./run.sh notebooks"
    built, committed = _cells(builder.read_source(src)), _cells(nbformat.read(path, as_version=4))
    hint = f"{path.name} is out of date with {src.relative_to(ROOT)}: rebuild with ./run.sh notebooks"
    assert len(built) == len(committed), f"{hint} ({len(built)} cells in the source, {len(committed)} in the notebook)"
    for i, (b, c) in enumerate(zip(built, committed)):
        assert b == c, f"{hint} (first difference in cell {i}: {b[0]} {b[1][:80]!r} vs {c[0]} {c[1][:80]!r})"



@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_committed_notebook_is_executed(src):
    """Notebooks are committed executed: every cell whose output nbval checks has one (a rebuild from the source
    without executing wipes them, and nbval's lax mode would not notice), and the run-time cell has run."""
    nb = nbformat.read(ROOT / "notebooks" / f"{src.stem}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    checked = [c for c in code if c.source.startswith("# NBVAL_CHECK_OUTPUT")]
    assert checked and all(c.outputs for c in checked), f"{src.stem}: committed without outputs: run ./run.sh notebooks"
    assert any("report_run_time" in c.source and c.outputs for c in code), f"{src.stem}: the last cells did not run"

FACES = {"qevo_lite", "qevo_lite.notebook", "qevo_lite.quant", "qevo_lite.evaluators", "qevo_lite.rounding",
         "qevo_lite.es", "qevo_lite.viz", "qevo_lite.tasks",
         "qevo_lite.grading"}   # the exercises' cached results (copied in from the assignment)


def _package_imports(src) -> list[str]:
    """The package modules a built notebook (its exercises included) imports from (``from X import`` /
    ``import X``)."""
    code = [c.source for c in builder.read_source(src).cells if c.cell_type == "code"]
    tree = ast.parse("\n".join(line for cell in code for line in cell.splitlines() if not line.startswith(("%", "!"))))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qevo_lite"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("qevo_lite")]
    return found


@pytest.mark.parametrize("src", SOURCES, ids=[s.stem for s in SOURCES])
def test_notebooks_import_only_from_the_faces(src):
    """A notebook imports from ``qevo_lite``, ``qevo_lite.notebook``, a layer's face (its package, e.g.
    ``qevo_lite.es``) or ``qevo_lite.tasks`` (and a task's subpackage), never from a module inside a layer; its
    exercises (the assignment's questions) also from ``qevo_lite.grading``."""
    task_packages = {f"qevo_lite.tasks.{p.name}" for p in (ROOT / "qevo_lite" / "tasks").iterdir() if p.is_dir()}
    other = [m for m in _package_imports(src) if m not in FACES | task_packages]
    assert not other, f"{src.name} imports from modules behind a face: {other} (import from the layer's package)"


def test_install_cell_and_badges_come_from_pyproject_url():
    """The repository URL is written once (pyproject's [project.urls] Repository): every notebook's install cell
    and Colab badge, and the README's badge table, are generated from it."""
    url = builder.repository_url()
    readme = (ROOT / "README.md").read_text()
    for src in SOURCES:
        nb = builder.read_source(src)
        text = "\n".join(c.source for c in nb.cells)
        assert builder.colab_badge(src.stem) in nb.cells[0].source, f"{src.name}: no Colab badge in the first cell"
        assert [c.source for c in nb.cells if c.cell_type == "code"][0] == builder.install_cell(), \
            f"{src.name}: the first code cell is not the generated install cell"
        assert f"git+{url}.git" in text and "{{" not in text, src.name
        assert builder.colab_url(src.stem) in readme, f"README.md has no Colab badge for {src.stem}"
