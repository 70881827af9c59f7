"""The package's layering, checked by reading the source (``ast`` only; nothing of the package is imported).

Layers, lowest first; a module may import only from its own layer or a lower one (see docs/architecture.md):

    0 core   1 quant   2 evaluators   3 rounding   4 es   5 methods   6 viz   7 experiment   8 tasks   9 top (modules
    directly in qevo_lite/: __init__, reproduce, bench, cli, ...)

Inside ``tasks``, a task subpackage (``tasks/<name>/``) imports neither another task subpackage nor the
registry ``tasks/__init__.py``. Besides: no import cycle, no function-level import of a package module
(except in ``cli.py``), no ``importlib`` / ``__import__``, no module over 400 lines, no function over 60 lines
but the named exceptions.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE = "qevo_lite"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# every folder directly under qevo_lite/ must be here; a new one must be placed in a layer
LAYERS = {"core": 0, "quant": 1, "evaluators": 2, "rounding": 3, "es": 4, "methods": 5, "viz": 6, "experiment": 7,
          "tasks": 8}
TOP = 9  # qevo_lite/__init__.py and every module directly in qevo_lite/
NON_CODE_FOLDERS = {"checkpoints", "cached_results"}  # data files only (pretrained models, the assignments' inputs)
LAZY_IMPORTS_ALLOWED = {f"{PACKAGE}.cli"}
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    source: str        # importing module (a package's __init__ is named after the package)
    target: str        # imported package module, resolved to an absolute name
    line: int
    text: str          # the import statement as written
    module_level: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def _files() -> dict[str, Path]:
    """``{module name: path}`` of every .py file under qevo_lite/."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "__pycache__" not in p.parts}


@lru_cache(maxsize=None)
def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in _files().items()}


def _rel(name: str) -> str:
    return str(_files()[name].relative_to(ROOT.parent))


def _function_parents(tree: ast.AST) -> dict[ast.AST, bool]:
    """For every node: is it inside a function (or lambda) body?"""
    inside: dict[ast.AST, bool] = {}

    def walk(node: ast.AST, in_function: bool) -> None:
        inside[node] = in_function
        child_in = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            walk(child, child_in)

    walk(tree, False)
    return inside


def _resolve(source: str, node: ast.ImportFrom) -> str | None:
    """The absolute base module of ``from ... import``; None when it climbs above the package."""
    if node.level == 0:
        return node.module
    is_package = _files()[source].name == "__init__.py"
    parts = source.split(".") if is_package else source.split(".")[:-1]
    if node.level - 1 >= len(parts):
        return None
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_package(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


@lru_cache(maxsize=None)
def _imports() -> tuple[list[Import], list[str]]:
    """Every import of a package module, and the imports that cannot be resolved to one."""
    modules = _files()
    found, unresolved = [], []
    for source, tree in _trees().items():
        inside = _function_parents(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            text = ast.unparse(node)
            where = f"{_rel(source)}:{node.lineno}: {text}"
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if _in_package(a.name)]
            else:
                base = _resolve(source, node)
                if base is None:
                    unresolved.append(f"{where} (relative import above the package)")
                    continue
                if not _in_package(base):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)  # a submodule, or a name in ``base``
            for target in dict.fromkeys(targets):
                if target not in modules:
                    unresolved.append(f"{where} (no module {target})")
                    continue
                found.append(Import(source, target, node.lineno, text, not inside[node]))
    return found, unresolved


def _layer(name: str) -> int | None:
    """The layer of module ``name``; None for a folder missing from :data:`LAYERS`."""
    parts = name.split(".")
    if len(parts) == 1 or _files()[name].parent == ROOT:
        return TOP
    return LAYERS.get(parts[1])


def _task_unit(name: str) -> str | None:
    """``qevo_lite.tasks.<x>`` when ``name`` lies in the task subpackage ``tasks/<x>/``, else None."""
    parts = name.split(".")
    if len(parts) >= 3 and parts[1] == "tasks" and (ROOT / "tasks" / parts[2]).is_dir():
        return ".".join(parts[:3])
    return None


def _fmt(imp: Import) -> str:
    return f"{_rel(imp.source)}:{imp.line}: {imp.text}"


def test_every_folder_has_a_layer():
    folders = sorted(p.name for p in ROOT.iterdir()
                     if p.is_dir() and p.name != "__pycache__" and not p.name.startswith("."))
    unplaced = [f for f in folders if f not in LAYERS and f not in NON_CODE_FOLDERS]
    assert not unplaced, ("Folders with no layer: " + ", ".join(f"qevo_lite/{f}/" for f in unplaced)
                          + ". Give each a layer in LAYERS of tests/test_architecture.py (and in "
                          "docs/architecture.md).")


def test_imports_only_go_down():
    found, unresolved = _imports()
    bad = list(unresolved)
    for imp in found:
        src, dst = _layer(imp.source), _layer(imp.target)
        if src is None or dst is None:
            bad.append(f"{_fmt(imp)}  ({imp.source if src is None else imp.target} is in a folder with no layer)")
            continue
        if dst > src:
            bad.append(f"{_fmt(imp)}  (layer {src} {imp.source} imports layer {dst} {imp.target})")
            continue
        unit = _task_unit(imp.source)
        if unit is None:
            continue
        if imp.target == f"{PACKAGE}.tasks":
            bad.append(f"{_fmt(imp)}  (task subpackage {unit} imports the task registry {imp.target})")
        other = _task_unit(imp.target)
        if other is not None and other != unit:
            bad.append(f"{_fmt(imp)}  (task subpackage {unit} imports another task subpackage {other})")
    assert not bad, "Imports that go up a layer or across tasks:\n" + "\n".join(bad)


def _cycles(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle per strongly connected component with a cycle (Tarjan, then a path inside the component)."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, {}):
                comps.append(comp)

    for v in sorted(edges):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        paths, seen = {start: [start]}, {start}  # breadth-first back to ``start`` inside the component
        queue, cycle = [start], None
        while queue and cycle is None:
            v = queue.pop(0)
            for w in sorted(edges.get(v, {})):
                if w == start:
                    cycle = paths[v] + [start]
                    break
                if w in comp and w not in seen:
                    seen.add(w)
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        cycles.append(cycle)
    return cycles


def test_no_import_cycle():
    import sys
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(_files()) + 100))
    edges: dict[str, dict[str, Import]] = {}
    for imp in _imports()[0]:
        if imp.module_level:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    cycles = _cycles(edges)
    msgs = [" -> ".join(c) + "\n" + "\n".join(f"    {_fmt(edges[a][b])}" for a, b in zip(c, c[1:]))
            for c in cycles]
    assert not cycles, "Module-level import cycles:\n" + "\n".join(msgs)


def test_no_function_level_package_imports():
    bad = [_fmt(imp) for imp in _imports()[0]
           if not imp.module_level and imp.source not in LAZY_IMPORTS_ALLOWED]
    assert not bad, ("Function-level imports of package modules (import at module level; only cli.py "
                     "imports lazily):\n" + "\n".join(bad))


def test_no_loading_by_module_name():
    bad = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            hit = None
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "importlib" for a in node.names):
                hit = ast.unparse(node)
            elif (isinstance(node, ast.ImportFrom) and node.level == 0
                  and (node.module or "").split(".")[0] == "importlib"):
                hit = ast.unparse(node)
            elif isinstance(node, ast.Name) and node.id in ("__import__", "importlib"):
                hit = node.id
            elif isinstance(node, ast.Attribute) and node.attr == "__import__":
                hit = ast.unparse(node)
            if hit:
                line = _files()[name].read_text(encoding="utf-8").splitlines()[node.lineno - 1].strip()
                bad.append(f"{_rel(name)}:{node.lineno}: {hit} in `{line}`")
    assert not bad, "importlib / __import__ in the package (import modules by name with `import`):\n" + "\n".join(bad)


def test_module_size():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _files().items()}
    bad = [f"{_rel(n)} ({n}): {k} lines" for n, k in sorted(sizes.items()) if k > MAX_LINES]
    assert not bad, f"Modules over {MAX_LINES} lines (split them):\n" + "\n".join(bad)


MAX_FUNCTION_LINES = 60
# the functions allowed over MAX_FUNCTION_LINES (docstring included), each with why (docs/architecture.md)
LONG_FUNCTIONS = {
    "qevo_lite.user_model.quantize": "the user's one entry point: 24 lines of API docstring, 40 of checks and dispatch",
    "qevo_lite.viz.widgets.es_explorer": "an ipywidgets explorer: its callbacks are closures over its widgets",
    "qevo_lite.quant.flips.random_boundary_flips": "25 lines of docstring on the experiment it runs, 38 of code",
}


def test_function_size():
    """No function over MAX_FUNCTION_LINES lines (its docstring included) but the named exceptions, and every
    exception still exists and is still long (an entry that no longer applies is removed)."""
    long = {}
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = f"{_rel(name)}:{node.lineno}: {length} lines"
    bad = [where for key, where in sorted(long.items()) if key not in LONG_FUNCTIONS]
    assert not bad, (f"Functions over {MAX_FUNCTION_LINES} lines (split them, or name them in LONG_FUNCTIONS "
                     "with why):\n" + "\n".join(bad))
    stale = sorted(set(LONG_FUNCTIONS) - set(long))
    assert not stale, f"LONG_FUNCTIONS entries that are no longer over {MAX_FUNCTION_LINES} lines: {stale}"
