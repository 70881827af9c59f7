"""The graded assignments (``grading/``, otter-grader): every teacher source builds a student notebook without
solutions or hidden tests and an autograder; the solutions get full marks, the blank student notebook gets
zero on every question, and a submission that calls the package's own implementation fails the hidden test.

Each grading runs ``otter run`` (no Docker): the submission executes in this environment, then the tests.
Building and grading are single-threaded subprocesses (interpreter and kernel start-up, small cells), so the
module runs them two at a time, each with one torch thread, and the tests read their results.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
from conftest import ROOT, load_script

pytest.importorskip("otter")

grading = load_script("grading")
SOURCES = grading.sources()
NAMES = [s.stem for s in SOURCES]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}   # two at a time share two cores


def two_at_a_time(jobs: dict) -> dict:
    """Run the zero-argument callables of ``jobs`` two at a time; ``{key: result}`` (the first error raises)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return two_at_a_time({src.stem: lambda src=src: grading.build(src, out, env=ONE_THREAD) for src in SOURCES})


def forbidden_submission(dist, folder):
    """Assignment 01 with question 1 answered by the package's own quantize_tensor (which its hidden test
    forbids); returns ``(name, path)``."""
    name = "01_nearest_neighbour_quantization"
    nb = nbformat.read(dist[name] / "student" / f"{name}.ipynb", as_version=4)
    stub = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def rtn_codes"))
    stub.source = ("from qevo_lite.quant import grid\nfrom qevo_lite.quant.grid import QuantConfig\n\n\n"
                   "def rtn_codes(w, bits):\n    return grid.quantize_tensor(w, QuantConfig(bits, granularity="
                   "'per_tensor', scale_rule='maxabs_full'))[0]\n")
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")
    return name, folder / f"{name}.ipynb"


@pytest.fixture(scope="module")
def graded(dist, tmp_path_factory):
    """Every assignment's solutions (``autograder/``) and blank student notebook graded, and the forbidden
    submission of :func:`forbidden_submission`: ``{(name, "solved" | "blank" | "forbidden"): (scores, out)}``."""
    tmp = tmp_path_factory.mktemp("graded")
    submissions = {}
    for name in NAMES:
        submissions[name, "solved"] = (name, dist[name] / "autograder" / f"{name}.ipynb")
        submissions[name, "blank"] = (name, dist[name] / "student" / f"{name}.ipynb")
    submissions["01_nearest_neighbour_quantization", "forbidden"] = forbidden_submission(dist, tmp / "forbidden")

    def job(key, name, path):
        out = tmp / f"{key[0]}-{key[1]}"
        return lambda: (grading.grade(dist[name], path, out, env=ONE_THREAD), out)
    return two_at_a_time({key: job(key, *sub) for key, sub in submissions.items()})


def test_every_tutorial_notebook_has_an_assignment_with_three_questions():
    tutorials = sorted(p.stem for p in (ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
    assert [s.stem for s in SOURCES] == tutorials
    for src in SOURCES:
        text = src.read_text()
        assert text.count("# # BEGIN QUESTION") >= 3, src.name
        assert text.count("hidden: true") >= text.count("# # BEGIN QUESTION"), f"{src.name}: a question without a hidden test"


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_has_no_solutions_or_hidden_tests(dist, name):
    student = nbformat.read(dist[name] / "student" / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "hidden: true" not in text and "forbidden(" not in text
    assert text.count("grader.check(") >= 3


@pytest.mark.parametrize("name", NAMES)
def test_solutions_get_full_marks_and_the_blank_notebook_zero(graded, name):
    solved, _ = graded[name, "solved"]
    assert len(solved) >= 3 and all(score == top for score, top in solved.values()), solved
    blank, _ = graded[name, "blank"]
    assert set(blank) == set(solved) and all(score == 0 for score, _ in blank.values()), blank


def test_calling_the_package_fails_the_hidden_test(graded):
    """Question 1 of assignment 01 answered with the package's own quantize_tensor: the public check passes,
    the hidden test (which forbids it) does not."""
    scores, out = graded["01_nearest_neighbour_quantization", "forbidden"]
    score, top = scores["q1_rtn_codes"]
    assert 0 < score < top, scores                               # public check passed, hidden test failed
    results = json.loads((out / "results.json").read_text())
    hidden = next(t for t in results["tests"] if t["name"] == "q1_rtn_codes")
    assert "ForbiddenCall" in hidden["output"]


@pytest.mark.parametrize("name", NAMES)
def test_the_tutorials_stubs_are_the_student_notebooks(dist, name):
    """The stubs copied into the tutorial notebook (scripts/notebooks.py) are the ones otter gives the student."""
    builder = load_script("notebooks")
    student = nbformat.read(dist[name] / "student" / f"{name}.ipynb", as_version=4)
    handed_out = {c.source.strip() for c in student.cells if c.cell_type == "code"}
    copied = [c.source for c in builder.exercise_cells(name) if c.cell_type == "code" and "\n    ..." in c.source
              and not c.source.startswith("with exercise(")]
    assert len(copied) >= 3 and all(stub in handed_out for stub in copied), copied
