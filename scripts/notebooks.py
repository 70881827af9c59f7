"""Build and execute the tutorial notebooks.

Sources are percent-format Python files in ``notebooks/src/`` (easy to diff and review):

    # %% [markdown]
    # # Title ...
    # %% tags=["parameters"]
    profile = "fast"
    # %%
    code ...

``python scripts/notebooks.py build``   writes ``notebooks/<name>.ipynb`` from each source;
``python scripts/notebooks.py execute`` runs them top to bottom in a fresh kernel (fast profile)
and saves the outputs, as committed. Pass notebook names to restrict either step.
"""
from __future__ import annotations

import ast
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SRC, OUT = ROOT / "notebooks" / "src", ROOT / "notebooks"
MARKER = re.compile(r"^# %%(?P<md> \[markdown\])?(?P<rest>.*)$")


def parse(text: str) -> nbformat.NotebookNode:
    """A percent-format source -> a notebook (markdown cells lose their leading '# ')."""
    cells, kind, meta, lines = [], None, {}, []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind is None or not body:
            return
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body, metadata=meta))
        else:
            cells.append(nbformat.v4.new_code_cell(body, metadata=meta))

    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            flush()
            kind, lines = ("markdown" if m["md"] else "code"), []
            meta = {}
            tags = re.search(r"tags=(\[.*?\])", m["rest"])
            if tags:
                meta["tags"] = ast.literal_eval(tags.group(1))
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def selected(names: list[str]) -> list[Path]:
    srcs = sorted(SRC.glob("[0-9]*.py"))
    return [s for s in srcs if not names or any(n in s.stem for n in names)]


def build(names: list[str]) -> None:
    for src in selected(names):
        nbformat.write(parse(src.read_text()), OUT / f"{src.stem}.ipynb")
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
