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


def _model_scores():
    from conftest import assignment
    from grader.checks.catalog import ModelScore
    from grader.course.assignment import load_assignments

    for spec_id in sorted(load_assignments(SOLUTIONS.parent, problems=[])):
        spec = assignment(spec_id)
        for check in spec.checks:
            if isinstance(check.run, ModelScore):
                yield pytest.param(spec, check.run.recipe, id=f"{spec_id}:{check.id}")


@pytest.mark.parametrize("spec, recipe", list(_model_scores()))
def test_every_reference_model_is_a_chain_of_standard_layers_the_grader_trains(spec, recipe, options, tmp_path):
    # the rule that keeps gates out (grader.ml.graph.chain_problem) must let every course's own answer in
    import nbformat

    from grader.course.assignment import ResourceRequest
    from grader.ml.graph import chain_problem
    from grader.student import LocalContext, _Exchange

    namespace: dict = {}
    for cell in nbformat.read(SOLUTIONS / spec.notebook, as_version=4).cells:
        if cell.cell_type == "code" and "demo" not in cell.metadata.get("tags", []):
            exec(cell.source, namespace)  # the reference solution, as a student's kernel would hold it
    from grader.ml.datasets import DatasetMissing

    request = ResourceRequest(data_root=options.data_root, cache_dir=options.cache_dir, device="cpu")
    try:
        resources = spec.resources(request) if spec.resources else None
    except DatasetMissing as exc:
        pytest.skip(f"{spec.id} needs data that is absent: {exc}")
    ctx = LocalContext(namespace, _Exchange(tmp_path), seed=spec.seed)
    ctx.resources = resources
    description = recipe.describe(ctx)
    assert recipe.task.layers_only and description.graph is not None and description.graph.nodes
    assert description.linear_layers  # the reference was traced, not a stub
    assert chain_problem(description.graph) == ""
