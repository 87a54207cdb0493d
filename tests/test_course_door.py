"""Course authors have one door: a spec imports from grader.course and nowhere else in the grader."""

from __future__ import annotations

import ast

import pytest

import grader.course
from conftest import SOLUTIONS

SPECS = sorted(SOLUTIONS.glob("*.py"))


def grader_imports(path) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "grader":
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "grader"]
    return found


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_a_spec_imports_the_grader_only_through_grader_course(spec):
    imports = grader_imports(spec)
    assert imports, f"{spec.name} imports nothing from grader.course"
    elsewhere = [module for module, _ in imports if module != "grader.course"]
    assert not elsewhere, f"{spec.name} reaches past grader.course into {', '.join(elsewhere)}"
    for _, names in imports:
        assert set(names) <= set(grader.course.__all__), set(names) - set(grader.course.__all__)


def test_the_door_names_only_what_it_holds():
    assert all(hasattr(grader.course, name) for name in grader.course.__all__)
    assert len(set(grader.course.__all__)) == len(grader.course.__all__)


def test_the_door_catches_a_spec_that_reaches_past_it(tmp_path):
    spec = tmp_path / "sneaky.py"
    spec.write_text("from grader.course import Assignment\nfrom grader.sandbox import Limits\n")
    assert [module for module, _ in grader_imports(spec)] == ["grader.course", "grader.sandbox"]
