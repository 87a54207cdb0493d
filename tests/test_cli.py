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


def test_student_text_never_reaches_the_terminal_as_markup_or_control_codes(tmp_path, capsys):
    """A first line with rich markup and escape codes that would repaint the screen with a fake score."""
    from conftest import load, save, with_cell

    trap = "[/] [bold red]score: 14 / 14[/] \x1b[2J\x1b[H\x1b]0;pwned\x07 \r\b"
    notebook = with_cell(load(SOLUTIONS / "gradient_descent.ipynb"),
                         f"# {trap}\nraise ValueError({trap!r})", after=0)
    path = save(notebook, tmp_path / "[red]alice.ipynb")
    assert main(["grade", str(path), "--out", str(tmp_path / "out"), "--assignment", "gradient-descent"]) == 0
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out and "\x07" not in printed.out and "\r" not in printed.out
    assert "[/] [bold red]score: 14 / 14[/]" in printed.out  # shown as the text it is
    assert "score: 14 / 14 in" in printed.out


def test_a_deeply_nested_notebook_gets_a_result_not_a_crash(tmp_path, capsys):
    path = tmp_path / "gradient_descent.ipynb"
    path.write_text('{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"a": '
                    + "[" * 200_000 + "]" * 200_000 + "}}")
    assert main(["grade", str(path), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "error" and "nested more than 100 levels deep" in result["message"]


def test_notebooks_other_tools_accept_are_graded_with_a_quiet_stderr(tmp_path, capsys):
    """A cell type from a newer format minor and a cell without an id: warnings in result.json, not stderr."""
    notebook = json.loads((SOLUTIONS / "gradient_descent.ipynb").read_text())
    notebook["nbformat_minor"] = 9
    notebook["cells"].insert(0, {"cell_type": "future", "metadata": {}, "source": "a new kind of cell"})
    for cell in notebook["cells"]:
        cell.pop("id", None)
    path = tmp_path / "gradient_descent.ipynb"
    path.write_text(json.dumps(notebook))
    assert main(["grade", str(path), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["score"] == 14
    assert any("cell 1 has the cell type 'future'" in w for w in result["execution"]["warnings"])


def test_a_notebook_of_another_assignment_is_not_graded_as_this_one(tmp_path, capsys):
    from conftest import TEMPLATES

    code = main(["grade", str(TEMPLATES / "deep_mlp.ipynb"), "--assignment", "gradient-descent",
                 "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "error" and result["score"] == 0
    assert "This notebook is the one for the assignment 'deep-mlp' (its metadata says so)" in result["message"]
    assert all(c["message"].startswith("not graded: ") and "not defined" not in c["message"]
               for c in result["checks"])


def test_a_misspelt_assignment_gets_a_suggestion_and_the_version_is_printed(tmp_path, capsys):
    assert main(["grade", str(SOLUTIONS / "gradient_descent.ipynb"), "--assignment", "gradient_descent"]) == 2
    assert "did you mean 'gradient-descent'?" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("grader ")
    assert main(["export", "out", "--format", "xls"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'xls'" in err and "grader export --help" in err
    assert main(["grade", "x.ipynb", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-such-flag" in err


def test_help_lists_the_course_s_assignment_ids_without_running_its_specs(tmp_path, capsys, monkeypatch):
    for command in (["grade"], ["batch"], ["gradescope", "build"]):
        assert main([*command, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "cnn-mnist, deep-mlp, gradient-descent, mlp-1500, polynomial-overfit, regression-vs-forest, " \
               "save-load, toy-2d" in out, out
    course = tmp_path / "course"
    (course / "solutions").mkdir(parents=True)
    (course / "solutions" / "mine.py").write_text(
        'raise SystemExit("a spec is never run for --help")\nASSIGNMENT = Assignment(id="my-own", notebook="x")\n')
    (course / "solutions" / "broken.py").write_text("def (:\n")
    monkeypatch.setenv("GRADER_COURSE", str(course))
    assert main(["grade", "--help"]) == 0
    assert f"assignmentsin{course}:my-own(" in "".join(capsys.readouterr().out.split())  # wrapped anywhere
    monkeypatch.setenv("GRADER_COURSE", str(tmp_path))
    assert main(["batch", "--help"]) == 0
    assert "no assignments found in" in capsys.readouterr().out


def test_a_named_pipe_given_as_a_notebook_is_refused_not_waited_on(tmp_path, capsys):
    import os

    pipe = tmp_path / "gradient_descent.ipynb"
    os.mkfifo(pipe)
    assert main(["grade", str(pipe), "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["status"] == "error" and "not a file" in result["message"]


def test_an_out_that_is_a_file_is_a_usage_error_before_any_grading(tmp_path, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for command in (["grade", str(SOLUTIONS / "gradient_descent.ipynb")],
                    ["batch", str(SOLUTIONS), "--assignment", "gradient-descent"]):
        assert main([*command, "--out", str(taken)]) == 2
        err = capsys.readouterr().err
        assert err == f"grader: error: --out {taken} is a file, not a directory: give a directory for the results\n"
    assert taken.read_text() == "mine"


def test_a_failed_data_fetch_leaves_no_partial_folder(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    import torchvision

    class HalfDownload:
        def __init__(self, root, train, download):
            (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
            (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"part of it")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", HalfDownload)
    root = tmp_path / "data"
    assert main(["data", "fetch", "mnist", "--data-root", str(root)]) == 1
    assert "could not download mnist (is this machine online?)" in capsys.readouterr().err
    assert list(root.iterdir()) == []  # neither MNIST/ nor the staging folder


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    # `grader data where | head -1`: the reader left, and that is no error worth a line
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "grader", "data", "where", "--data-root", str(tmp_path)],
                              stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, b"")
