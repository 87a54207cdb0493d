"""The command line: exit status 0 whenever a submission was graded, one clear line otherwise."""

from __future__ import annotations

import json

from conftest import SOLUTIONS
from grader.cli import main


def test_grade_writes_result_json_and_exits_zero(tmp_path, capsys):
    code = main(["grade", str(SOLUTIONS / "gradient_descent.ipynb"), "--out", str(tmp_path), "--device", "cpu"])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["assignment"] == "gradient-descent"  # inferred from the notebook's metadata
    assert result["score"] == result["max_score"]
    assert "score: 14 / 14" in capsys.readouterr().out


def test_a_broken_notebook_is_graded_zero_with_exit_zero(tmp_path, capsys):
    broken = tmp_path / "gradient_descent.ipynb"
    broken.write_text("{ not json")
    assert main(["grade", str(broken), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "error" and result["score"] == 0


def test_unknown_assignment_is_a_usage_error(tmp_path, capsys):
    code = main(["grade", str(SOLUTIONS / "gradient_descent.ipynb"), "--assignment", "nope",
                 "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("grader: error: unknown assignment 'nope' (known: ") and "gradient-descent" in err


def test_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "absent.ipynb")]) == 2
    assert "absent.ipynb: no such file" in capsys.readouterr().err


def test_unidentifiable_notebook_asks_for_assignment(tmp_path, capsys):
    path = tmp_path / "homework.ipynb"
    path.write_text("{}")
    assert main(["grade", str(path)]) == 2
    assert "pass --assignment" in capsys.readouterr().err


def test_staff_audience_writes_the_full_view_too(tmp_path, capsys):
    code = main(["grade", str(SOLUTIONS / "gradient_descent.ipynb"), "--out", str(tmp_path), "--audience", "staff"])
    assert code == 0
    assert (tmp_path / "feedback.html").exists() and (tmp_path / "feedback-staff.html").exists()
    assert "Staff view" in (tmp_path / "feedback-staff.html").read_text()
    assert "Staff view" not in (tmp_path / "feedback.html").read_text()


def test_bad_paths_give_one_line_not_a_traceback(tmp_path, capsys):
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert main(["report", str(listed)]) == 2
    assert main(["report", str(tmp_path)]) == 1
    assert main(["grade", str(tmp_path)]) == 2
    assert main(["grade", str(SOLUTIONS / "gradient_descent.ipynb"), "--out", "/proc/grader-cannot-write"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(line.startswith("grader: error:") for line in lines), lines
    assert "is a directory; grade one notebook, or a class with grader batch" in lines[2]
