"""The graded assignments (``grading/``, otter-grader): every teacher source builds a student notebook without
solutions or hidden tests and an autograder; the solutions get full marks, the blank student notebook gets
zero on every question, and a submission that calls the package's own implementation fails the hidden test.

Each grading runs ``otter run`` (no Docker): the submission executes in this environment, then the tests.
"""
from __future__ import annotations

import json

import nbformat
import pytest
from conftest import ROOT, load_script

pytest.importorskip("otter")

grading = load_script("grading")
SOURCES = grading.sources()


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return {src.stem: grading.build(src, out) for src in SOURCES}


def test_every_tutorial_notebook_has_an_assignment_with_three_questions():
    tutorials = sorted(p.stem for p in (ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))
    assert [s.stem for s in SOURCES] == tutorials
    for src in SOURCES:
        text = src.read_text()
        assert text.count("# # BEGIN QUESTION") >= 3, src.name
        assert text.count("hidden: true") >= text.count("# # BEGIN QUESTION"), f"{src.name}: a question without a hidden test"


@pytest.mark.parametrize("name", [s.stem for s in SOURCES])
def test_student_notebook_has_no_solutions_or_hidden_tests(dist, name):
    student = nbformat.read(dist[name] / "student" / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "hidden: true" not in text and "forbidden(" not in text
    assert text.count("grader.check(") >= 3


@pytest.mark.parametrize("name", [s.stem for s in SOURCES])
def test_solutions_get_full_marks_and_the_blank_notebook_zero(dist, name, tmp_path):
    solved = grading.grade(dist[name], dist[name] / "autograder" / f"{name}.ipynb", tmp_path / "solved")
    assert len(solved) >= 3 and all(score == top for score, top in solved.values()), solved
    blank = grading.grade(dist[name], dist[name] / "student" / f"{name}.ipynb", tmp_path / "blank")
    assert set(blank) == set(solved) and all(score == 0 for score, _ in blank.values()), blank


def test_calling_the_package_fails_the_hidden_test(dist, tmp_path):
    """Question 1 of assignment 01 answered with the package's own quantize_tensor: the public check passes,
    the hidden test (which forbids it) does not."""
    name = "01_nearest_neighbour_quantization"
    nb = nbformat.read(dist[name] / "student" / f"{name}.ipynb", as_version=4)
    stub = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def rtn_codes"))
    stub.source = ("from qevo_lite.quant import grid\nfrom qevo_lite.quant.grid import QuantConfig\n\n\n"
                   "def rtn_codes(w, bits):\n    return grid.quantize_tensor(w, QuantConfig(bits, granularity="
                   "'per_tensor', scale_rule='maxabs_full'))[0]\n")
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    scores = grading.grade(dist[name], path, tmp_path / "graded")
    score, top = scores["q1_rtn_codes"]
    assert 0 < score < top, scores                               # public check passed, hidden test failed
    results = json.loads((tmp_path / "graded" / "results.json").read_text())
    hidden = next(t for t in results["tests"] if t["name"] == "q1_rtn_codes")
    assert "ForbiddenCall" in hidden["output"]


@pytest.mark.parametrize("name", [s.stem for s in SOURCES])
def test_the_tutorials_stubs_are_the_student_notebooks(dist, name):
    """The stubs copied into the tutorial notebook (scripts/notebooks.py) are the ones otter gives the student."""
    builder = load_script("notebooks")
    student = nbformat.read(dist[name] / "student" / f"{name}.ipynb", as_version=4)
    handed_out = {c.source.strip() for c in student.cells if c.cell_type == "code"}
    copied = [c.source for c in builder.exercise_cells(name) if c.cell_type == "code" and "\n    ..." in c.source
              and not c.source.startswith("with exercise(")]
    assert len(copied) >= 3 and all(stub in handed_out for stub in copied), copied
