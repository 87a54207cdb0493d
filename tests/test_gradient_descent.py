"""The gradient-descent assignment graded end to end, for good and broken submissions."""

from __future__ import annotations

import json

import pytest

from conftest import (SOLUTIONS, TEMPLATES, assignment, check, edit_source, grade, load, save, scores,
                      with_cell, with_definition, without_definition)

SOLUTION = SOLUTIONS / "gradient_descent.ipynb"
FULL = 14.0


@pytest.fixture(scope="module")
def spec():
    return assignment("gradient-descent", cell_timeout_s=5, total_timeout_s=120)


@pytest.fixture(scope="module")
def solution():
    return load(SOLUTION)


def test_reference_solution_earns_full_marks(spec, options):
    result = grade(SOLUTION, spec, options)
    assert result.status == "graded"
    assert result.score == result.max_score == FULL, [c.message for c in result.checks if c.status != "passed"]
    assert all(c.status == "passed" for c in result.checks)
    assert result.execution["problems"] == []
    assert result.execution["demo_cells_skipped"], "the demo cells are tagged and skipped"
    assert result.environment["sandbox"]["isolation"] in ("bwrap", "unshare", "none")


def test_template_earns_zero_and_names_each_function(spec, options):
    result = grade(TEMPLATES / "gradient_descent.ipynb", spec, options)
    assert result.status == "graded"
    assert result.score == 0
    assert all(c.status == "failed" for c in result.checks)
    for function in ("linear_grad", "fit_linear", "mlp_forward", "mlp_grad", "fit_mlp"):
        assert any(f"{function} is not implemented yet" in c.message for c in result.checks), function


def test_gradient_with_a_sign_error(spec, options, solution, tmp_path):
    broken = edit_source(solution, "linear_grad", "residual = a * x + b - y", "residual = y - (a * x + b)")
    result = grade(save(broken, tmp_path / "sign.ipynb"), spec, options)
    assert scores(result) == {"linear-grad": 0, "fit-linear": 0, "fit-linear-steps": 0, "mlp-forward": 2,
                              "mlp-grad": 3, "fit-mlp": 2, "fit-mlp-steps": 1, "numpy-only": 1}
    assert "wrong gradient at 3 of 3" in check(result, "linear-grad").message
    assert "should get within 0.1 of a=3, b=4" in check(result, "fit-linear").message


def test_backprop_through_torch_is_refused(spec, options, solution, tmp_path):
    cheat = with_definition(solution, "mlp_grad", '''
def mlp_grad(x, y, params):
    import torch
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    out = torch.relu(torch.tensor(x)[:, None] * t["a1"] + t["b1"]) @ t["a2"] + t["b2"]
    torch.mean((out - torch.tensor(y)) ** 2).backward()
    return {k: v.grad.numpy() for k, v in t.items()}
''')
    result = grade(save(cheat, tmp_path / "torch.ipynb"), spec, options)
    assert scores(result)["mlp-grad"] == 0
    assert scores(result)["fit-mlp"] == 0  # fit_mlp calls mlp_grad
    assert result.score == FULL - 3 - 2 - 1 - 1
    message = check(result, "numpy-only").message
    assert message.startswith("mlp_grad, fit_mlp need torch") and "Use NumPy only" in message


def test_module_level_torch_import_is_reported_and_the_rest_graded(spec, options, solution, tmp_path):
    notebook = with_cell(solution, "import torch", after=1)
    result = grade(save(notebook, tmp_path / "import.ipynb"), spec, options)
    assert result.score == FULL
    [problem] = result.execution["problems"]
    assert problem["kind"] == "exception" and "torch" in problem["message"]


def test_infinite_loop_in_a_cell_is_stopped_and_the_rest_graded(spec, options, solution, tmp_path):
    notebook = with_cell(solution, "while True:\n    pass", after=1)
    result = grade(save(notebook, tmp_path / "loop.ipynb"), spec, options)
    assert result.score == FULL
    [problem] = result.execution["problems"]
    assert problem["kind"] == "timeout" and "ran longer than 5 s" in problem["message"]


def test_infinite_loop_inside_a_graded_function(spec, options, solution, tmp_path):
    notebook = with_definition(solution, "mlp_forward", "def mlp_forward(x, params):\n    while True:\n        pass")
    result = grade(save(notebook, tmp_path / "hang.ipynb"), spec, options)
    forward = check(result, "mlp-forward")
    assert forward.score == 0 and forward.status == "error"
    assert "mlp_forward did not finish within 5 s" in forward.message
    assert scores(result)["mlp-grad"] == 3 and scores(result)["linear-grad"] == 2


def test_memory_hog_cell_fails_alone(spec, options, solution, tmp_path):
    hog = "import numpy as np\nhog = np.ones((2 ** 31,), dtype=np.float64)  # 16 GiB"
    result = grade(save(with_cell(solution, hog, after=1), tmp_path / "memory.ipynb"), spec, options)
    assert result.score == FULL
    [problem] = result.execution["problems"]
    assert problem["error_name"] == "MemoryError" or problem["kind"] == "kernel-died"


def test_os_exit_in_a_cell_restarts_the_kernel(spec, options, solution, tmp_path):
    result = grade(save(with_cell(solution, "import os\nos._exit(1)", after=1), tmp_path / "exit.ipynb"),
                   spec, options)
    assert result.score == FULL
    [problem] = result.execution["problems"]
    assert problem["kind"] == "kernel-died" and "exit status 1" in problem["message"]
    assert result.execution["kernel_restarts"] == 1


def test_sys_exit_in_a_cell_does_not_stop_grading(spec, options, solution, tmp_path):
    result = grade(save(with_cell(solution, "import sys\nsys.exit(3)", after=1), tmp_path / "sysexit.ipynb"),
                   spec, options)
    assert result.score == FULL
    [problem] = result.execution["problems"]
    assert "SystemExit" in problem["message"]


def test_missing_function(spec, options, solution, tmp_path):
    result = grade(save(without_definition(solution, "mlp_grad"), tmp_path / "missing.ipynb"), spec, options)
    assert check(result, "mlp-grad").message == "mlp_grad is not defined: define it in your notebook"
    assert "NameError" in check(result, "fit-mlp").message
    assert result.score == FULL - 3 - 2 - 1 - 1


def test_file_that_is_not_a_notebook(spec, options, tmp_path):
    path = tmp_path / "photo.ipynb"
    path.write_bytes(bytes(range(256)) * 10)
    result = grade(path, spec, options)
    assert result.status == "error" and result.score == 0
    assert "photo.ipynb is not a notebook" in result.message
    assert all(c.message.startswith("not graded: photo.ipynb") for c in result.checks)


def test_invalid_json(spec, options, tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text(SOLUTION.read_text()[:-40])
    result = grade(path, spec, options)
    assert result.status == "error" and result.score == 0
    assert "broken.ipynb is not a notebook: invalid JSON at line" in result.message


def test_json_that_is_not_a_notebook(spec, options, tmp_path):
    path = tmp_path / "data.ipynb"
    path.write_text(json.dumps({"cells": "no"}))
    result = grade(path, spec, options)
    assert result.status == "error" and "JSON but not a Jupyter notebook" in result.message


def test_grading_twice_gives_the_same_scores(spec, options, solution, tmp_path):
    broken = edit_source(solution, "fit_mlp", "for _ in range(n_iter):", "for _ in range(n_iter // 2):")
    path = save(broken, tmp_path / "half.ipynb")
    first, second = grade(path, spec, options), grade(path, spec, options)
    assert scores(first) == scores(second)
    assert check(first, "fit-mlp-steps").score == 0
