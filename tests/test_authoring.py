"""`grader assign`: templates are generated from solutions, never hand-edited."""

from __future__ import annotations

import json
import math
from typing import Any

import nbformat
import pytest

from conftest import SOLUTIONS, TEMPLATES
from grader.cli import main
from grader.course.authoring import make_template, render, strip_cell_source
from grader.errors import UsageError


@pytest.mark.parametrize("solution", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_template_is_what_assign_makes(solution):
    template = TEMPLATES / solution.name
    assert template.exists(), f"run: grader assign {solution} --out assignments"
    expected = render(make_template(nbformat.read(solution, as_version=4), name=solution.name))
    assert template.read_text() == expected, f"assignments/{solution.name} is stale: run grader assign"


def test_solution_regions_become_stubs_with_hints():
    source = ("def f(x):\n"
              "    ### BEGIN SOLUTION: square it\n"
              "    return x * x\n"
              "    ### END SOLUTION\n"
              "y = 1")
    stripped, regions = strip_cell_source(source, where="nb, cell 1")
    assert regions == 1
    assert stripped == ("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError('square it')\ny = 1")


def test_stub_lines_replace_the_raise():
    source = "### BEGIN SOLUTION\nLR = 1e-3\n### STUB LR = None  # your value\n### END SOLUTION"
    assert strip_cell_source(source, where="x")[0] == "LR = None  # your value"


def test_hidden_tests_are_removed():
    source = "x = 1\n### BEGIN HIDDEN TESTS\nassert x == 1\n### END HIDDEN TESTS\nprint(x)"
    assert strip_cell_source(source, where="x")[0] == "x = 1\nprint(x)"


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1", "not closed"),
    ("x = 1\n### END SOLUTION", "without its BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "inside a solution region"),
])
def test_broken_markers_name_the_cell_and_line(source, problem):
    with pytest.raises(UsageError, match=problem):
        strip_cell_source(source, where="nb.ipynb, cell 3")


def test_assign_command_writes_the_template_and_the_bundle(tmp_path, capsys):
    assert main(["assign", str(SOLUTIONS / "gradient_descent.ipynb"), "--out", str(tmp_path)]) == 0
    written = tmp_path / "gradient_descent.ipynb"
    assert written.read_text() == (TEMPLATES / "gradient_descent.ipynb").read_text()
    assert ((tmp_path / "gradient_descent.checks.json").read_text()
            == (TEMPLATES / "gradient_descent.checks.json").read_text())
    assert "wrote" in capsys.readouterr().out


def test_assign_refuses_a_notebook_without_markers(tmp_path, capsys):
    plain = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), plain)
    assert main(["assign", str(plain), "--out", str(tmp_path / "out")]) == 2
    assert "no '### BEGIN SOLUTION' markers" in capsys.readouterr().err


@pytest.mark.parametrize("solution", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_student_bundle_is_what_assign_makes(solution, tmp_path):
    """assignments/NAME.checks.json is generated too (model bundles need their dataset's first rows)."""
    from conftest import data_root
    from grader.course.assignment import ResourceRequest
    from grader.course.authoring import write_bundle
    from grader.ml.datasets import DatasetMissing

    try:
        written = write_bundle(solution, tmp_path, ResourceRequest(data_root(), tmp_path / "cache", "cpu"))
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    assert written is not None, f"no spec names {solution.name}"
    committed = TEMPLATES / written.name
    assert committed.exists(), f"assignments/{written.name} is missing: run grader assign {solution}"
    difference = _first_difference(json.loads(committed.read_text()), json.loads(written.read_text()))
    assert difference is None, f"assignments/{written.name} is stale at {difference}: run grader assign {solution}"


def _first_difference(committed: Any, made: Any, where: str = "the top") -> str | None:
    """Where two bundles differ, or None. Expected values the reference computed differ in their last bits
    from one CPU to another (the BLAS kernels a CPU gets: seen between two x86-64 machines for
    polynomial-overfit's least squares, 4e-12 relative), so floats agree to 1e-9, a thousand times
    tighter than the tightest judge (1e-6); every other value is compared exactly."""
    if isinstance(committed, float) and isinstance(made, float):
        return None if math.isclose(committed, made, rel_tol=1e-9) else f"{where}: {committed} != {made}"
    if isinstance(committed, dict) and isinstance(made, dict):
        if committed.keys() != made.keys():
            return f"{where}: keys {sorted(committed.keys() ^ made.keys())}"
        return next(filter(None, (_first_difference(committed[k], made[k], f"{where}/{k}") for k in committed)), None)
    if isinstance(committed, list) and isinstance(made, list):
        if len(committed) != len(made):
            return f"{where}: {len(committed)} items != {len(made)}"
        pairs = zip(committed, made, strict=True)
        return next(filter(None, (_first_difference(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(pairs))), None)
    return None if type(committed) is type(made) and committed == made else f"{where}: {committed!r} != {made!r}"


def test_templates_end_with_a_check_cell_that_grading_skips():
    template = nbformat.read(TEMPLATES / "gradient_descent.ipynb", as_version=4)
    last = template.cells[-1]
    assert last.source == "from grader.student import check\ncheck()" and last.metadata["tags"] == ["demo"]
