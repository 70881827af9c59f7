"""One exercise system: the tutorial notebooks' exercises are their graded assignment's questions
(``grading/src/<name>.py``), copied in by ``scripts/notebooks.py`` (prompt, the student's stub, the public checks
inside ``qevo_lite.notebook.exercise``). The copy runs: with the assignment's reference solutions every check
passes, with the stubs every check says it is not passing yet (and nothing raises, so the notebook runs on)."""
from __future__ import annotations

import contextlib
import io
import tomllib

import jupytext
import nbformat
import pytest
from conftest import ROOT, load_script

from qevo_lite.grading import cached_results
from qevo_lite.notebook import exercise

builder = load_script("notebooks")
ASSIGNMENTS = sorted((ROOT / "grading" / "src").glob("[0-9][0-9]_*.py"))


def _questions(src) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in src.read_text().splitlines() if line.startswith("# name: q")]


def _run(cells, replace_stubs: dict[str, str] | None = None) -> str:
    """Execute ``cells`` (code) in one namespace, with the stubs replaced by ``replace_stubs`` (cell index ->
    source); returns what they printed."""
    out, namespace = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        for k, cell in enumerate(cells):
            exec(compile((replace_stubs or {}).get(k, cell.source), f"<cell {k}>", "exec"), namespace)  # noqa: S102
    return out.getvalue()


def _solutions(src) -> list[str]:
    """The assignment's solution cells (between its BEGIN SOLUTION and END SOLUTION markers), in order."""
    found, inside = [], False
    for cell in jupytext.read(src, fmt="py:percent").cells:
        marker = cell.source.strip().removeprefix("# ")
        if cell.cell_type == "raw":
            inside = {"BEGIN SOLUTION": True, "END SOLUTION": False}.get(marker, inside)
        elif inside and cell.cell_type == "code":
            found.append(cell.source)
    return found


@pytest.mark.parametrize("src", ASSIGNMENTS, ids=[s.stem for s in ASSIGNMENTS])
def test_the_copied_checks_pass_with_the_solutions_and_fail_with_the_stubs(src):
    cells = [c for c in builder.exercise_cells(src.stem) if c.cell_type == "code"]
    stubs = [k for k, c in enumerate(cells) if "\n    ..." in c.source and not c.source.startswith("with exercise(")]
    solutions = _solutions(src)
    assert len(stubs) == len(solutions) and "BEGIN SOLUTION" not in "".join(c.source for c in cells)
    questions = _questions(src)
    solved = _run(cells, dict(zip(stubs, solutions)))
    assert [f"{q}: passes" in solved for q in questions] == [True] * len(questions), solved
    blank = _run(cells)
    assert [f"{q}: not passing yet" in blank for q in questions] == [True] * len(questions), blank


@pytest.mark.parametrize("src", ASSIGNMENTS, ids=[s.stem for s in ASSIGNMENTS])
def test_every_tutorial_notebook_asks_its_assignments_questions_and_commits_them_unsolved(src):
    """The committed notebook holds each question's check, executed on the stub (an unfinished exercise fails),
    and no other exercise system (no solutions file, no teachers' cell)."""
    nb = nbformat.read(ROOT / "notebooks" / f"{src.stem}.ipynb", as_version=4)
    checks = {c.source.split("'")[1]: c for c in nb.cells if c.cell_type == "code" and c.source.startswith("with exercise(")}
    assert list(checks) == _questions(src)
    for question, cell in checks.items():
        printed = "".join(o.get("text", "") for o in cell.outputs)
        assert printed.startswith(f"{question}: not passing yet"), (question, printed)
    assert not (ROOT / "notebooks" / "solutions").exists()
    assert not any("check_solutions" in c.source for c in nb.cells)


def test_the_stub_replaces_each_solution_block_by_an_ellipsis():
    solution = ("def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    return x + y\n    # END SOLUTION\n\n\n"
                "def g():\n    if True:\n        # BEGIN SOLUTION\n        pass\n        # END SOLUTION\n    return 2\n")
    assert builder.student_stub(solution) == ("def f(x):\n    y = 1\n    ...\n\n\ndef g():\n    if True:\n"
                                              "        ...\n    return 2")


def test_an_exercise_check_reports_without_raising(capsys):
    with exercise("q1_demo"):
        assert 1 + 1 == 2
    with exercise("q2_demo"):
        assert 1 + 1 == 3, "one plus one is two"
    with exercise("q3_demo"):
        (...) - 1.0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("q1_demo: passes")
    assert out[1] == "q2_demo: not passing yet (AssertionError: one plus one is two)"
    assert out[2].startswith("q3_demo: not passing yet (TypeError: unsupported operand")


def test_cached_results_ship_with_the_package_and_unknown_names_are_refused():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["qevo_lite"]
    assert "cached_results/*.json" in patterns
    assert {"vgg_small", "resnet_small"} <= set(cached_results("classification_cells"))
    with pytest.raises(FileNotFoundError, match="classification_cells"):
        cached_results("classification")
