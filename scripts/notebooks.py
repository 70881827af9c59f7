"""Build and execute the tutorial notebooks.

Sources are percent-format Python files in ``notebooks/src/`` (easy to diff and review), read with
jupytext (https://jupytext.readthedocs.io, format ``py:percent``):

    # %% [markdown]
    # # Title ...
    # %% tags=["parameters"]
    profile = "fast"
    # %%
    code ...

``python scripts/notebooks.py build``   writes ``notebooks/<name>.ipynb`` from each source (no outputs);
``python scripts/notebooks.py execute`` runs them top to bottom in a fresh kernel (fast profile)
and saves the outputs, as committed. Pass notebook names to restrict either step.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "src", ROOT / "notebooks"
FMT = "py:percent"


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
        cells.append(new(cell.source, metadata=meta))
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
    {"build": build, "execute": execute, "all": lambda n: (build(n), execute(n))}[action](names)
