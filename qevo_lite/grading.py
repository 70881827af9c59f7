"""Helpers for the graded assignments (``grading/src``, whose questions are also the tutorial notebooks' exercises):
the cached results of a finished run that questions read, and hidden tests that a student cannot pass by calling
the package's own implementation of what the exercise asks for.

A hidden test computes the reference answer with the package first, then calls the student's function inside
:func:`forbidden`, which replaces every reference to the package's function (in the loaded modules and in the
student's notebook namespace) with one that raises :class:`ForbiddenCall`.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

CACHED_RESULTS = Path(__file__).with_name("cached_results")


def cached_results(name: str) -> dict:
    """The small cached results of a finished ``./run.sh demo --profile fast`` that assignments read, so that
    nothing is retrained or re-run: ``"classification_cells"`` or ``"detection_cells"`` (package data in
    ``qevo_lite/cached_results/``, written by ``python scripts/grading.py cache``; they ship with the package, so
    the exercises also run in Colab)."""
    path = CACHED_RESULTS / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in CACHED_RESULTS.glob("*.json"))
        raise FileNotFoundError(f"No cached results named {name!r}; known: {known}.")
    return json.loads(path.read_text())


class ForbiddenCall(RuntimeError):
    """Raised by a function a graded exercise must not call."""


def _blocker(name: str):
    def blocked(*args, **kwargs):
        raise ForbiddenCall(f"This exercise asks you to write {name} yourself; calling the library's own "
                            f"{name} is not allowed here.")
    return blocked


@contextmanager
def forbidden(*targets, namespaces=(), modules=("qevo_lite", "torchvision", "sklearn", "torchmetrics")):
    """Within the block, every reference to the objects in ``targets`` raises :class:`ForbiddenCall` when
    called.

    Args:
        targets: ``(owner, attribute)`` pairs, e.g. ``(qevo_lite.quant.grid, "quantize_tensor")`` or
            ``(LayerQuadratic, "delta")``.
        namespaces: further dicts to patch, e.g. the student function's ``__globals__`` (where a name
            imported with ``from ... import`` lives).
        modules: prefixes of the loaded modules whose attributes are patched too.

    Example::

        want = reference(x)                                   # the package's answer, computed first
        with forbidden((grid, "quantize_tensor"), namespaces=[student_fn.__globals__]):
            got = student_fn(x)
    """
    originals = [getattr(owner, attr) for owner, attr in targets]
    ids = {id(o): (o, _blocker(getattr(o, "__qualname__", attr))) for o, (_, attr) in zip(originals, targets)}
    patched = []   # (dict-like owner or object, key, original)

    def patch_dict(d):
        for k, v in list(d.items()):
            if id(v) in ids and v is ids[id(v)][0]:
                patched.append((d, k, v))
                d[k] = ids[id(v)][1]

    for owner, attr in targets:
        original = getattr(owner, attr)
        patched.append((owner, attr, original))
        setattr(owner, attr, ids[id(original)][1])
    for name, mod in list(sys.modules.items()):
        if mod is not None and name.split(".")[0] in modules:
            patch_dict(vars(mod))
    for ns in namespaces:
        patch_dict(ns)
    try:
        yield
    finally:
        for owner, key, original in reversed(patched):
            if isinstance(owner, dict):
                owner[key] = original
            else:
                setattr(owner, key, original)
