"""The per-submission outputs: one ordered list of formats, written the same by grade and batch."""

from __future__ import annotations

import pytest

from conftest import REPO
from grader.grading.ledger import Ledger
from grader.reports.outputs import OUTPUTS, render_outputs, write_outputs
from grader.results import GradeResult

FULL_MARKS = REPO / "tests" / "fixtures" / "reports" / "gradient-descent-full-marks.result.json"


@pytest.fixture()
def result() -> GradeResult:
    return GradeResult.read(FULL_MARKS)


def test_a_student_gets_result_json_then_feedback(result, tmp_path):
    written = write_outputs(result, tmp_path)
    assert written == [tmp_path / "result.json", tmp_path / "feedback.html"]
    assert GradeResult.read(tmp_path / "result.json") == result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feedback.html", "result.json"]  # no temp files left


def test_staff_also_get_the_full_view(result, tmp_path):
    written = write_outputs(result, tmp_path, audience="staff")
    assert [p.name for p in written] == ["result.json", "feedback.html", "feedback-staff.html"]
    assert "Staff view" in (tmp_path / "feedback-staff.html").read_text()
    assert "Staff view" not in (tmp_path / "feedback.html").read_text()


def test_an_unknown_audience_writes_nothing(result, tmp_path):
    with pytest.raises(ValueError, match="audience"):
        write_outputs(result, tmp_path / "out", audience="teacher")
    assert not (tmp_path / "out").exists()


def test_batch_writes_through_the_same_list_and_signs_the_result(result, tmp_path):
    ledger = Ledger(tmp_path / "key")
    ledger.write(render_outputs(result, audience="staff"), tmp_path / "alice")
    assert sorted(p.name for p in (tmp_path / "alice").iterdir()) == [
        "feedback-staff.html", "feedback.html", "result.json", "result.json.sig"]
    assert ledger.trusted_result(tmp_path / "alice") == result


def test_a_result_the_grader_did_not_write_is_not_trusted(result, tmp_path):
    ledger = Ledger(tmp_path / "key")
    ledger.write(render_outputs(result), tmp_path / "alice")
    forged = (tmp_path / "alice" / "result.json").read_text().replace('"score": 14.0', '"score": 13.0', 1)
    (tmp_path / "alice" / "result.json").write_text(forged)
    assert ledger.trusted_result(tmp_path / "alice") is None
    write_outputs(result, tmp_path / "bob")  # unsigned
    assert ledger.trusted_result(tmp_path / "bob") is None
    assert Ledger(tmp_path / "other-key").trusted_result(tmp_path / "alice") is None
    assert oct((tmp_path / "key" / "results.key").stat().st_mode & 0o777) == "0o600"


def test_result_json_comes_first():
    # later formats (Gradescope, ...) are translations of it, so it exists before they are made
    assert OUTPUTS[0].__name__ == "result_json"
