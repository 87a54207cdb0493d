"""Reading submissions: every kind of bad file gets one clear message naming it."""

from __future__ import annotations

import json

import nbformat
import pytest

from conftest import SOLUTIONS
from grader.errors import NotebookError
from grader.intake.notebooks import code_cells, read_submission, skipped_cells


def test_reads_the_solution_and_its_assignment_hint():
    submission = read_submission(SOLUTIONS / "gradient_descent.ipynb")
    assert submission.assignment_hint == "gradient-descent"
    assert len(submission.sha256) == 64


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not a notebook: it is not UTF-8 text"),
    (b'{"cells": [', "is not a notebook: invalid JSON at line 1, column 12"),
    (b"[1, 2, 3]", "is JSON but not a Jupyter notebook"),
    (b'{"nbformat": 5, "cells": []}', "uses notebook format 5"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code"}]}',
     "cell 1 is malformed"),
])
def test_bad_files_are_refused_with_their_name(tmp_path, content, message):
    path = tmp_path / "alice.ipynb"
    path.write_bytes(content)
    with pytest.raises(NotebookError) as error:
        read_submission(path)
    assert error.value.message.startswith("alice.ipynb")
    assert message in error.value.message


def test_a_huge_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.ipynb"
    with open(path, "wb") as f:
        f.truncate(60 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(NotebookError, match=r"huge.ipynb is 60 MB; a notebook may be at most 50 MB"):
        read_submission(path)


def test_missing_file(tmp_path):
    with pytest.raises(NotebookError, match=r"nobody.ipynb: no such file"):
        read_submission(tmp_path / "nobody.ipynb")


def test_nbformat_3_is_upgraded_with_a_warning(tmp_path):
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": [
        {"cell_type": "code", "input": "x = 1", "language": "python", "outputs": []}]}]}
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(v3))
    submission = read_submission(path)
    assert [c.source for c in code_cells(submission.notebook)] == ["x = 1"]
    assert "format 3" in submission.warnings[0]


def test_empty_notebook_has_no_cells_to_run(tmp_path):
    path = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    assert code_cells(read_submission(path).notebook) == []


def test_demo_cells_are_skipped():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("a = 1"),
        nbformat.v4.new_code_cell("plot()", metadata={"tags": ["demo"]}),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("   "),
        nbformat.v4.new_code_cell("b = 2", metadata={"tags": ["skip-execution"]}),
    ])
    assert [c.index for c in code_cells(notebook)] == [0]
    assert skipped_cells(notebook) == [1, 4]
    assert code_cells(notebook)[0].label == "cell 1 (a = 1)"
