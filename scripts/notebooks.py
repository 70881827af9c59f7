"""Build and execute the tutorial notebooks.

Sources are percent-format Python files in ``notebooks/src/`` (easy to diff and review), read with
jupytext (https://jupytext.readthedocs.io, format ``py:percent``):

    # %% [markdown]
    # # Title ...
    # %% tags=["parameters"]
    profile = "fast"
    # %%
    code ...

A third marker copies in the notebook's exercises from their one source, the graded assignment of the same name
(``grading/src/<name>.py``, otter-grader's format; see :func:`exercise_cells`):

* a code cell holding only ``# {{exercises}}``: the assignment's setup cell (its imports and cached data), then
  per question its prompt, the stub a student gets (each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block
  replaced by ``...``, as ``otter assign`` does) and its public checks inside ``with exercise(name):``, which
  prints whether they pass. Hidden tests and solutions stay in the assignment.

Two more markers are generated from the repository URL in ``pyproject.toml`` (``[project.urls]
Repository``, the one place it is written):

* ``{{colab_badge}}`` (in a markdown cell): the notebook's "Open in Colab" badge;
* a code cell holding only ``# {{install_cell}}``: a cell that installs qevo-lite where it is missing (Colab,
  a fresh machine) with ``pip install "qevo-lite[export] @ git+<URL>"`` (the export extra: notebook 01 runs the
  ONNX file with onnxruntime); ``QEVO_LITE_URL`` overrides the URL (a fork,
  or a ``git+file://`` clone for the offline test).

``python scripts/notebooks.py build``   writes ``notebooks/<name>.ipynb`` from each source (no outputs);
``python scripts/notebooks.py execute`` runs them top to bottom in a fresh kernel (fast profile)
and saves the outputs, as committed; ``python scripts/notebooks.py sync-markdown`` copies edited markdown into
the executed notebooks without re-running them. Pass notebook names to restrict any step.
"""
from __future__ import annotations

import re
import sys
import time
import tomllib
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "src", ROOT / "notebooks"
ASSIGNMENTS = ROOT / "grading" / "src"
FMT = "py:percent"
BADGE_MARKER, INSTALL_MARKER, EXERCISES_MARKER = "{{colab_badge}}", "# {{install_cell}}", "# {{exercises}}"
SOLUTION_BLOCK = re.compile(r"^([ \t]*)# BEGIN SOLUTION\n.*?^[ \t]*# END SOLUTION\n?", re.S | re.M)


def repository_url() -> str:
    """``[project.urls] Repository`` of pyproject.toml (https, no ``.git``)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["urls"]["Repository"].removesuffix(".git").rstrip("/")


def colab_url(notebook: str) -> str:
    """Colab's address of ``notebooks/<notebook>.ipynb`` on the repository's main branch (GitHub only)."""
    path = repository_url().split("github.com/", 1)[-1]
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}.ipynb"


def colab_badge(notebook: str) -> str:
    """The Markdown "Open in Colab" badge of one notebook."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


def install_cell() -> str:
    """The source of the generated install cell (the same in every notebook)."""
    return f'''# Installs qevo-lite where it is missing (Colab, a fresh machine); generated from pyproject.toml's URL.
# QEVO_LITE_URL overrides where it comes from, e.g. a fork or git+file:///path/to/a/clone.
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("qevo_lite") is None:
    url = os.environ.get("QEVO_LITE_URL", "git+{repository_url()}.git")
    print(f"installing qevo-lite from {{url}} (a minute; the pretrained models come with it)")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"qevo-lite[export] @ {{url}}"], check=True)
import qevo_lite

print(f"qevo-lite {{qevo_lite.__version__}} from {{os.path.dirname(qevo_lite.__file__)}}")'''


def student_stub(solution: str) -> str:
    """A solution cell as the student gets it: every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block -> ``...``."""
    return SOLUTION_BLOCK.sub(lambda m: f"{m.group(1)}...\n", solution).rstrip()


def _checks_cell(question: str, tests: list[str]) -> str:
    if not tests:
        raise SystemExit(f"{question}: no public check to copy into the notebook (every question needs one)")
    body = "\n".join("    " + line if line.strip() else "" for test in tests for line in test.splitlines())
    return f"with exercise({question!r}):\n{body}"


def exercise_cells(stem: str) -> list[nbformat.NotebookNode]:
    """The questions of the assignment ``grading/src/<stem>.py`` as a tutorial notebook shows them: a setup cell
    (the assignment's code cells before its first question), then per question its markdown prompt, its stub
    (:func:`student_stub`) and one cell with its public tests inside ``with exercise(name):``."""
    source = ASSIGNMENTS / f"{stem}.py"
    if not source.exists():
        raise SystemExit(f"{EXERCISES_MARKER} in {stem}: no assignment {source.relative_to(ROOT)}")
    setup = [f"# The exercises are the questions of assignment {stem[:2]} ({source.relative_to(ROOT)}), copied in by\n"
             "# scripts/notebooks.py: its prompts, the stubs a student gets and its public checks (a teacher's grader\n"
             "# adds hidden tests). Questions about a finished run read its cached results, not this notebook's.\n"
             "from qevo_lite.notebook import exercise"]
    cells, question, part, tests = [], None, "setup", []
    for cell in jupytext.read(source, fmt=FMT).cells:
        text = cell.source.strip()
        if cell.cell_type == "raw":
            marker = text.splitlines()[0].removeprefix("# ") if text else ""
            if marker == "BEGIN QUESTION":
                question, part, tests = re.search(r"^name:\s*(\S+)", text, re.M).group(1), "prompt", []
            elif marker in ("BEGIN SOLUTION", "BEGIN TESTS"):
                part = marker.split()[1].lower()
            elif marker == "END TESTS":
                cells.append(nbformat.v4.new_code_cell(_checks_cell(question, tests)))
                part = "done"
            continue
        if part == "setup" and cell.cell_type == "code":
            setup.append(text)
        elif part == "prompt" and cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif part == "solution" and cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(student_stub(cell.source)))
        elif part == "tests" and cell.cell_type == "code" and not re.search(r"^hidden:\s*true", text, re.M):
            tests.append(text)
    return [nbformat.v4.new_code_cell("\n\n".join(setup))] + cells


def read_source(path: Path) -> nbformat.NotebookNode:
    """A percent-format source -> a notebook without outputs, as committed.

    jupytext does the parsing; on top of it, cells left empty by a bare marker are dropped, cells
    keep only their ``tags`` metadata (not jupytext's layout hints such as ``lines_to_next_cell``),
    and the notebook gets a plain Python 3 kernelspec instead of jupytext's own metadata.
    """
    parsed = jupytext.read(path, fmt=FMT)
    cells = []
    for cell in parsed.cells:
        if not cell.source.strip():
            continue
        meta = {"tags": list(cell.metadata["tags"])} if cell.metadata.get("tags") else {}
        new = {"markdown": nbformat.v4.new_markdown_cell, "raw": nbformat.v4.new_raw_cell}.get(
            cell.cell_type, nbformat.v4.new_code_cell)
        source = cell.source.replace(BADGE_MARKER, colab_badge(path.stem))
        if cell.cell_type == "code" and source.strip() == EXERCISES_MARKER:
            cells.extend(exercise_cells(path.stem))
            continue
        if cell.cell_type == "code" and source.strip() == INSTALL_MARKER:
            source = install_cell()
        cells.append(new(source, metadata=meta))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def selected(names: list[str]) -> list[Path]:
    srcs = sorted(SRC.glob("[0-9]*.py"))
    return [s for s in srcs if not names or any(n in s.stem for n in names)]


def build(names: list[str]) -> None:
    for src in selected(names):
        nbformat.write(read_source(src), OUT / f"{src.stem}.ipynb")
        print(f"built {src.stem}.ipynb")


def sync_markdown(names: list[str]) -> None:
    """Copy edited markdown cells from the sources into the executed notebooks, keeping their outputs. Refuses
    when a code cell or the cell structure changed (then the notebook must be re-executed)."""
    for src in selected(names):
        path = OUT / f"{src.stem}.ipynb"
        built, nb = read_source(src), nbformat.read(path, as_version=4)
        same_code = len(built.cells) == len(nb.cells) and all(
            b.cell_type == c.cell_type and (b.cell_type == "markdown" or b.source == c.source)
            for b, c in zip(built.cells, nb.cells))
        if not same_code:
            raise SystemExit(f"{path.name}: code or cell structure changed; run build and execute instead.")
        for b, c in zip(built.cells, nb.cells):
            c.source = b.source
        nbformat.write(nb, path)
        print(f"synced the markdown of {path.name}")


def execute(names: list[str]) -> None:
    from nbclient import NotebookClient
    for src in selected(names):
        path = OUT / f"{src.stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(OUT)}}).execute()
        nbformat.write(nb, path)
        print(f"executed {path.name} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    action, names = (sys.argv[1] if len(sys.argv) > 1 else "build"), sys.argv[2:]
    {"build": build, "execute": execute, "sync-markdown": sync_markdown,
     "all": lambda n: (build(n), execute(n))}[action](names)
