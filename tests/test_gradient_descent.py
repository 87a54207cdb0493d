"""The gradient-descent assignment graded end to end.

Broken and hostile submissions (timeouts, crashes, bad files) are in test_hostile.py.
"""

from __future__ import annotations

import pytest

from conftest import (
    SOLUTIONS,
    TEMPLATES,
    assignment,
    check,
    edit_source,
    grade,
    load,
    save,
    scores,
    with_cell,
    with_definition,
    without_definition,
)

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
    assert result.environment["sandbox"]["isolation"] in ("bwrap", "unshare", "user", "none")


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
    # a wrong answer made without torch costs points where it is wrong, not in "NumPy only, no torch"
    assert check(result, "numpy-only").message == "all 5 functions ran with torch unavailable: NumPy only"
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
    assert result.score == FULL - 3 - 2 - 1 - 0.4
    message = check(result, "numpy-only").message
    assert message.startswith("mlp_grad, fit_mlp need torch") and "Use NumPy only" in message


def test_module_level_torch_import_is_reported_and_the_rest_graded(spec, options, solution, tmp_path):
    notebook = with_cell(solution, "import torch", after=1)
    result = grade(save(notebook, tmp_path / "import.ipynb"), spec, options)
    assert result.score == FULL
    [problem] = result.execution["problems"]
    assert problem["kind"] == "exception" and "torch" in problem["message"]


def test_missing_function(spec, options, solution, tmp_path):
    result = grade(save(without_definition(solution, "mlp_grad"), tmp_path / "missing.ipynb"), spec, options)
    assert check(result, "mlp-grad").message == "mlp_grad is not defined: define it in your notebook"
    assert "NameError" in check(result, "fit-mlp").message
    assert result.score == FULL - 3 - 2 - 1 - 0.4


def test_grading_twice_gives_the_same_scores(spec, options, solution, tmp_path):
    broken = edit_source(solution, "fit_mlp", "for _ in range(n_iter):", "for _ in range(n_iter // 2):")
    path = save(broken, tmp_path / "half.ipynb")
    first, second = grade(path, spec, options), grade(path, spec, options)
    assert scores(first) == scores(second)
    assert check(first, "fit-mlp-steps").score == 0


def test_the_graders_network_gradient_is_torch_autograds():
    """The grader's reference gradient is closed-form NumPy (no torch in the grader's process for this
    assignment); it must agree with autograd wherever a student's answer is judged."""
    import numpy as np
    import torch

    module = __import__(f"grader_course_{assignment('gradient-descent').source.stem}")
    rng = np.random.default_rng(0)
    for _ in range(5):
        params = module.random_params(rng)
        x, y = rng.uniform(-3, 3, 40), rng.normal(size=40)
        tensors = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
        hidden = torch.relu(torch.tensor(x)[:, None] * tensors["a1"] + tensors["b1"])
        torch.mean((hidden @ tensors["a2"] + tensors["b2"] - torch.tensor(y)) ** 2).backward()
        ours = module.network_gradient(x, y, params)
        for key, tensor in tensors.items():
            np.testing.assert_allclose(ours[key], tensor.grad.numpy(), rtol=1e-12, atol=1e-12)
