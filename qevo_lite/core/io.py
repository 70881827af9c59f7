"""Files that are never half-written, and JSON that says where it is broken.

Every file the package writes (checkpoints, manifests, results, ES progress) goes through
:func:`atomic_write`: a temporary file in the same folder is filled, then renamed over the target,
so an interrupted run leaves either the old file or the new one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path: str | Path, write) -> None:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, which then
    replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` into ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` (made JSON-ready by :func:`jsonable`) into ``path`` atomically, indented."""
    write_text(path, json.dumps(jsonable(obj), indent=1))


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` into ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def read_json(path: str | Path, what: str = "file", fix: str = "") -> dict:
    """The JSON object in ``path`` ({} when the file does not exist).

    A file that is not valid JSON raises ValueError naming the file, the line and column, ``what`` the
    file is and ``fix`` (what the user can do); the file itself is left untouched."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} ({what}) is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
                         f"Nothing was overwritten. {fix}".rstrip()) from None


def jsonable(obj):
    """Tuples to lists, tensors and numpy scalars to Python numbers, NaN/inf to None (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        return jsonable(obj.item())
    return obj
