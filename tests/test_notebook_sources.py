"""The percent-format notebook sources parse with jupytext and match the committed notebooks.

Each ``notebooks/src/<name>.py`` is read the way ``scripts/notebooks.py build`` reads it (jupytext,
format ``py:percent``) and compared with the committed ``notebooks/<name>.ipynb``: a source edited
without rebuilding (``./run.sh notebooks``) fails here.
"""
from __future__ import annotations

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
