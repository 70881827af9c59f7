"""Graded assignments with otter-grader: teacher sources -> student notebooks + autograders; grading.

    python scripts/grading.py build [NN ...]          # grading/dist/NN/{student,autograder}
    python scripts/grading.py grade NN SUBMISSION.ipynb [--out DIR]
    python scripts/grading.py cache --results results/reproduce-fast   # refresh qevo_lite/cached_results/*.json

The teacher's source of assignment NN is ``grading/src/NN_*.py`` (jupytext percent format with otter's
``BEGIN QUESTION`` / ``BEGIN SOLUTION`` / ``BEGIN TESTS`` markers; hidden tests carry ``hidden: true``).
Questions about a finished run read its cached results with ``qevo_lite.grading.cached_results`` (package data,
``qevo_lite/cached_results``), so nothing is copied next to the notebook. ``build`` converts the source to a
notebook and runs ``otter assign``: ``student/`` holds the notebook to hand out (no
solutions, no hidden tests), ``autograder/`` the solutions notebook and the autograder zip. ``grade`` runs
``otter run`` (no Docker: the submission runs in this environment) and prints the score per question.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from qevo_lite.grading import CACHED_RESULTS

ROOT = Path(__file__).resolve().parents[1]
SRC, DIST = ROOT / "grading" / "src", ROOT / "grading" / "dist"
DATA = CACHED_RESULTS   # package data: the notebooks' exercises read it too


def sources(numbers=None) -> list[Path]:
    """The teacher sources, all or those whose two-digit prefix is in ``numbers``."""
    found = sorted(SRC.glob("[0-9][0-9]_*.py"))
    if numbers:
        found = [p for p in found if p.name[:2] in numbers]
        if len(found) != len(set(numbers)):
            raise SystemExit(f"No source for some of {numbers} in {SRC}.")
    return found


def build(src: Path, dist: Path = DIST, env: dict | None = None) -> Path:
    """``otter assign`` one source into ``dist/<stem>``; returns that folder. ``env``: the subprocess's
    environment (default: this one's)."""
    import jupytext
    stage = dist / "_stage" / src.stem
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    jupytext.write(nb, stage / f"{src.stem}.ipynb")
    out = dist / src.stem
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "otter", "assign", f"{src.stem}.ipynb", str(out.resolve())], cwd=stage,
                   check=True, env=env)
    return out


def autograder_zip(folder: Path) -> Path:
    """The autograder zip ``otter assign`` wrote into ``folder/autograder``."""
    zips = sorted((folder / "autograder").glob("*.zip"))
    if not zips:
        raise SystemExit(f"No autograder zip in {folder / 'autograder'}; run `build` first.")
    return zips[-1]


def grade(folder: Path, submission: Path, out: Path, env: dict | None = None) -> dict:
    """Grade ``submission`` with the autograder of ``folder``; returns ``{question: (score, possible)}``.
    ``env``: the environment of ``otter run`` and the kernel it starts (default: this one's)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "otter", "run", "-a", str(autograder_zip(folder).resolve()), "-o",
                    str(out.resolve()), str(submission.resolve())], check=True, cwd=out, env=env)
    results = json.loads((out / "results.json").read_text())   # Gradescope's format: one entry per question
    return {t["name"]: (t["score"], t["max_score"]) for t in results["tests"] if "max_score" in t}


def cache(results: Path) -> None:
    """Write the small inputs of the assignments that read a finished run (``./run.sh demo --profile fast``'s folder)."""
    cls = json.loads((results / "classification" / "results.json").read_text())
    keep = ("arch", "bits", "seed", "fp32_search_accuracy", "fp32_test_accuracy", "rtn_search_accuracy",
            "rtn_test_accuracy", "es_search_accuracy", "es_test_accuracy", "gptq_test_accuracy",
            "adaround_test_accuracy", "es_gptq_test_accuracy", "es_adaround_test_accuracy")
    out = {}
    for arch in sorted({c["arch"] for c in cls["cells"].values()}):
        cells = [c for c in cls["cells"].values() if c["arch"] == arch]
        rows = [{"bits": c["bits"], "granularity": g, "search": c[f"{p}_search_accuracy"], "test": c[f"{p}_test_accuracy"]}
                for c in cells if c["seed"] == 0 for g, p in (("per_channel", "rtn"), ("per_tensor", "rtn_per_tensor"))]
        es = [{k: c[k] for k in keep if k in c} for c in cells if c.get("es_run")]
        w2 = next(c for c in cells if c["bits"] == 2 and c["seed"] == 0)
        out[arch] = {"fp32_search_accuracy": cells[0]["fp32_search_accuracy"],
                     "fp32_test_accuracy": cells[0]["fp32_test_accuracy"], "rtn_rows": rows, "cells": es,
                     "es_test_accuracy_std": {str(r["bits"]): r["es_test_accuracy_std"] for r in cls["summary"]
                                              if r["arch"] == arch and r["es_run"]},
                     "sensitivity_W2": {n: v["sensitivity"] for n, v in w2["moved"]["per_layer"].items()},
                     "moved_share_by_layer_W2_seed0": {n: v["share"] for n, v in w2["moved"]["per_layer"].items()}}
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "classification_cells.json").write_text(json.dumps(out, indent=1) + "\n")
    det_files = sorted(results.parent.glob("*/detection/results.json"))
    det_cells = {}
    for f in det_files:
        det_cells.update(json.loads(f.read_text())["cells"])
    keep = ("arch", "bits", "seed") + tuple(f"{m}_test_{k}" for m in ("fp32", "rtn", "es", "gptq", "adaround",
                                                                      "es_gptq", "es_adaround") for k in ("map", "map50"))
    det = [{k: c[k] for k in keep if k in c} for c in det_cells.values() if "adaround_test_map" in c]
    (DATA / "detection_cells.json").write_text(json.dumps({"cells": det}, indent=1) + "\n")
    print(f"wrote {DATA / 'classification_cells.json'} and {DATA / 'detection_cells.json'} ({len(det)} detection cells)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="student notebooks and autograders into grading/dist")
    b.add_argument("numbers", nargs="*", help="two-digit assignment numbers (default: all)")
    g = sub.add_parser("grade", help="grade one submission")
    g.add_argument("number")
    g.add_argument("submission", type=Path)
    g.add_argument("--out", type=Path, default=None)
    c = sub.add_parser("cache", help="refresh qevo_lite/cached_results from a finished ./run.sh demo --profile fast")
    c.add_argument("--results", type=Path, default=ROOT / "results" / "reproduce-fast")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        for src in sources(args.numbers):
            print(f"built {build(src)}")
    elif args.cmd == "grade":
        src = sources([args.number])[0]
        scores = grade(DIST / src.stem, args.submission, args.out or DIST / src.stem / "graded")
        for q, (s, m) in scores.items():
            print(f"{q}: {s:g} / {m:g}")
        print(f"total: {sum(s for s, _ in scores.values()):g} / {sum(m for _, m in scores.values()):g}")
    else:
        cache(args.results)


if __name__ == "__main__":
    main()
