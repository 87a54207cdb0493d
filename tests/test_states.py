"""The states live in grader/states.py; result.json's schema and what the grader writes agree with them."""

from __future__ import annotations

import json

from grader.results import CheckResult, GradeResult, result_schema
from grader.scoring import Outcome, status_of
from grader.states import CheckStatus, ResultStatus


def test_the_schema_allows_exactly_the_states():
    schema = result_schema()
    assert schema["properties"]["status"]["enum"] == [s.value for s in ResultStatus]
    assert schema["$defs"]["check"]["properties"]["status"]["enum"] == [s.value for s in CheckStatus]


def test_states_are_written_and_read_back_as_plain_strings():
    check = CheckResult(id="c", name="c", score=1.0, max_score=1.0, status=status_of(Outcome.passed("ok")),
                        message="ok")
    result = GradeResult(assignment="a", submission="s.ipynb", submission_sha256="0" * 64, score=1.0,
                         max_score=1.0, status=ResultStatus.GRADED, checks=[check])
    text = result.to_json()
    assert '"status": "graded"' in text and '"status": "passed"' in text
    back = GradeResult.from_dict(json.loads(text))
    assert back.status == ResultStatus.GRADED and back.checks[0].status == CheckStatus.PASSED


def test_outcomes_map_to_check_states():
    assert status_of(Outcome.passed("")) is CheckStatus.PASSED
    assert status_of(Outcome.partial(0.5, "")) is CheckStatus.FAILED
    assert status_of(Outcome.error("")) is CheckStatus.ERROR
    assert status_of(Outcome.skipped("")) is CheckStatus.SKIPPED
