"""result.json is a documented contract: grader/schemas/result.schema.json, which every result meets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, SOLUTIONS, TEMPLATES
from grader.cli import main
from grader.results import result_schema

FIXTURES = sorted((REPO / "tests" / "fixtures" / "reports").glob("*.result.json"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = result_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # the schema itself is valid draft 2020-12
    return jsonschema.Draft202012Validator(schema)


def problems(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


def graded(tmp_path: Path, notebook: Path) -> dict:
    assert main(["grade", str(notebook), "--out", str(tmp_path), "--device", "cpu"]) == 0
    return json.loads((tmp_path / "result.json").read_text())


def test_the_schema_is_draft_2020_12(validator):
    assert result_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_every_report_fixture_meets_the_schema(validator, path):
    assert problems(validator, json.loads(path.read_text())) == []


def test_a_graded_reference_solution_meets_the_schema(validator, tmp_path, capsys):
    result = graded(tmp_path, SOLUTIONS / "gradient_descent.ipynb")
    assert result["status"] == "graded" and result["execution"]["cells_run"] > 0
    assert problems(validator, result) == []


def test_a_graded_unsolved_template_meets_the_schema(validator, tmp_path, capsys):
    result = graded(tmp_path, TEMPLATES / "gradient_descent.ipynb")
    assert result["score"] == 0 and {c["status"] for c in result["checks"]} == {"failed"}
    assert problems(validator, result) == []


def test_an_unreadable_notebook_s_result_meets_the_schema(validator, tmp_path, capsys):
    broken = tmp_path / "gradient_descent.ipynb"
    broken.write_text("{ not json")
    result = graded(tmp_path / "out", broken)
    assert result["status"] == "error" and result["execution"] == {}
    assert problems(validator, result) == []


def test_a_student_record_is_allowed(validator):
    document = json.loads(FIXTURES[0].read_text())
    document["student"] = {"name": "Alice", "email": "alice@example.org"}
    assert problems(validator, document) == []


def _without_score(d):
    del d["score"]


def _first_check(d):
    return d["checks"][0]


BROKEN = {
    "missing score": _without_score,
    "score as text": lambda d: d.update(score="14"),
    "result status not graded or error": lambda d: d.update(status="done"),
    "check status not in the enum": lambda d: _first_check(d).update(status="ok"),
    "visibility not in the enum": lambda d: _first_check(d).update(visibility="secret"),
    "check without max_score": lambda d: _first_check(d).pop("max_score"),
    "details not an object": lambda d: _first_check(d).update(details=[1, 2]),
    "unknown top-level key": lambda d: d.update(grade="A"),
    "timings without total_s": lambda d: d["timings"].pop("total_s"),
    "a timing that is not a number": lambda d: d["timings"].update(train_s="fast"),
    "cell problem of an unknown kind": lambda d: d["execution"]["problems"].append(
        {"cell_index": 0, "kind": "oops", "message": "", "source": "", "error_name": "", "traceback": []}),
    "student not an object": lambda d: d.update(student="alice"),
}


@pytest.mark.parametrize("break_it", BROKEN.values(), ids=BROKEN.keys())
def test_broken_documents_are_rejected(validator, break_it):
    document = copy.deepcopy(json.loads((REPO / "tests" / "fixtures" / "reports" /
                                         "gradient-descent-full-marks.result.json").read_text()))
    assert problems(validator, document) == []
    break_it(document)
    assert problems(validator, document) != []


def test_free_form_parts_stay_open(validator):
    document = json.loads(FIXTURES[0].read_text())
    document["checks"][0]["details"] = {"anything": {"nested": [1, "two"]}}
    document["environment"]["gpu"] = "H100"
    document["timings"]["train_s"] = 12.5
    assert problems(validator, document) == []
