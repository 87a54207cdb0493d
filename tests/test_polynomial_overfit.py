"""The polynomial-overfit assignment graded end to end: fits, loss curves, and a choice made on validation data."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import SOLUTIONS, TEMPLATES, assignment, check, grade, load, save, scores, with_definition
from grader.cli import main

SOLUTION = SOLUTIONS / "polynomial_overfit.ipynb"
FULL = 12.0
CHOICE_CHECKS = ("choose-degree", "chosen-test-loss", "choice-uses-validation-only")

HIGHEST_DEGREE_FIRST = '''
def fit_polynomial(x, y, degree):
    return np.polyfit(x, y, degree)
'''
LOSSES_WITH_POLYVAL = '''
def poly_losses(x_train, y_train, x_test, y_test, max_degree):
    train, test = [], []
    for degree in range(max_degree + 1):
        c = fit_polynomial(x_train, y_train, degree)
        train.append(float(np.mean((np.polyval(c, x_train) - y_train) ** 2)))
        test.append(float(np.mean((np.polyval(c, x_test) - y_test) ** 2)))
    return train, test
'''
BY_TRAINING_LOSS = '''
def choose_degree(x_train, y_train, x_val, y_val, max_degree):
    train_losses, _ = poly_losses(x_train, y_train, x_val, y_val, max_degree)
    return int(np.argmin(train_losses))
'''
READS_THE_TEST_SET = '''
def choose_degree(x_train, y_train, x_val, y_val, max_degree):
    # the notebook's own test set, read from the module: what the test set is there to prevent
    _, test_losses = poly_losses(x_train, y_train, x_test, y_test, max_degree)
    return int(np.argmin(test_losses))
'''


@pytest.fixture(scope="module")
def spec():
    return assignment("polynomial-overfit", cell_timeout_s=10, total_timeout_s=120)


@pytest.fixture(scope="module")
def solution():
    return load(SOLUTION)


def test_reference_solution_earns_full_marks_with_fits_and_loss_curves(spec, options, tmp_path):
    result = grade(SOLUTION, spec, options)
    assert result.score == result.max_score == FULL, [c.message for c in result.checks if c.status != "passed"]
    assert result.execution["problems"] == [] and result.execution["demo_cells_skipped"]
    fit = check(result, "fit-polynomial").details["curve"]
    assert fit["label"] == "your degree-3 fit" and len(fit["data_x"]) == 11
    losses = check(result, "poly-losses").details
    assert set(losses["series"]) == {"train MSE", "test MSE"} and losses["series_x"]["label"] == "degree"
    assert losses["series_x"]["values"] == list(range(9))
    assert losses["series"]["train MSE"][-1] < losses["series"]["train MSE"][0]  # the training loss falls
    chosen = check(result, "chosen-test-loss").details
    assert set(chosen["series"]) == {"train MSE", "validation MSE", "test MSE"}
    assert chosen["series_x"]["mark"] == chosen["chosen"] == chosen["best"]

    from grader.reports.html import write_feedback

    page = write_feedback(result, tmp_path).read_text()
    assert page.count("data:image/png;base64,") >= 3  # the fit and the loss curves against degree
    assert "Line chart against degree" in page


def test_template_earns_zero_and_names_each_function(spec, options):
    result = grade(TEMPLATES / "polynomial_overfit.ipynb", spec, options)
    assert result.status == "graded" and result.score == 0
    assert all(c.status == "failed" for c in result.checks)
    for function in ("fit_polynomial", "poly_losses", "choose_degree"):
        assert any(f"{function} is not implemented yet" in c.message for c in result.checks), function


def test_coefficients_highest_degree_first_lose_the_fit_checks_only(spec, options, solution, tmp_path):
    notebook = with_definition(with_definition(solution, "fit_polynomial", HIGHEST_DEGREE_FIRST),
                               "poly_losses", LOSSES_WITH_POLYVAL)
    result = grade(save(notebook, tmp_path / "polyfit.ipynb"), spec, options)
    assert scores(result) == {"fit-polynomial": 0, "fit-polynomial-unseen": 0, "poly-losses": 3, "choose-degree": 2,
                              "chosen-test-loss": 1, "choice-uses-validation-only": 2}
    assert "highest degree first (as np.polyfit gives them)" in check(result, "fit-polynomial").message


def test_choosing_by_training_loss_picks_the_highest_degree(spec, options, solution, tmp_path):
    result = grade(save(with_definition(solution, "choose_degree", BY_TRAINING_LOSS), tmp_path / "train.ipynb"),
                   spec, options)
    assert result.score == FULL - 5
    assert all(scores(result)[c] == 0 for c in CHOICE_CHECKS)
    message = check(result, "choose-degree").message
    assert message.startswith("choose_degree chose degree 8 on the grader's first data set, whose validation MSE is")
    assert "lowest is" in message
    assert check(result, "choose-degree").details["series_x"]["mark"] == 8


def test_a_choice_that_reads_the_notebooks_test_set_earns_nothing(spec, options, solution, tmp_path):
    result = grade(save(with_definition(solution, "choose_degree", READS_THE_TEST_SET), tmp_path / "peek.ipynb"),
                   spec, options)
    assert all(scores(result)[c] == 0 for c in CHOICE_CHECKS)
    assert result.score == FULL - 5  # the fits and the curves are the student's own work and still count
    moved = check(result, "choice-uses-validation-only")
    assert "for the same arguments when the grader replaced the notebook's module-level" in moved.message
    assert len(set(moved.details["found"])) > 1


def test_grader_check_agrees_with_grading_on_the_visible_checks(spec, options, solution, tmp_path):
    notebook = with_definition(solution, "choose_degree", BY_TRAINING_LOSS)
    shutil.copy(TEMPLATES / "polynomial_overfit.checks.json", tmp_path)
    path = save(notebook, tmp_path / "polynomial_overfit.ipynb")
    assert main(["check", str(path), "--out", str(tmp_path / "out")]) == 0
    checked = json.loads((tmp_path / "out" / "result.json").read_text())
    graded = grade(path, spec, options).to_dict()

    def visible(result):
        return {c["id"]: (c["status"], c["score"], c["message"]) for c in result["checks"]
                if c["visibility"] == "visible"}

    assert visible(checked) == visible(graded)
    assert {c["id"]: c["status"] for c in checked["checks"] if c["visibility"] == "hidden"} == \
        {"fit-polynomial-unseen": "skipped", "choice-uses-validation-only": "skipped"}


def test_the_graders_fits_agree_with_numpys_polyfit():
    """The reference is lstsq on the Vandermonde matrix; every degree the checks use is well conditioned enough
    that np.polyfit (and the normal equations) agree far inside the tolerances."""
    import numpy as np

    module = __import__(f"grader_course_{assignment('polynomial-overfit').source.stem}")
    rng = np.random.default_rng(0)
    x, y = module.noisy(rng, module.N_TRAIN, 0.0, 1.0, even=True)
    for degree in range(module.MAX_DEGREE + 1):
        ours = module.least_squares(x, y, degree)
        np.testing.assert_allclose(ours, np.polyfit(x, y, degree)[::-1], rtol=1e-8, atol=1e-8)
        features = np.vander(x, degree + 1, increasing=True)
        normal = np.linalg.solve(features.T @ features, features.T @ y)
        assert abs(module.mse(normal, x, y) - module.mse(ours, x, y)) <= \
            module.LOSS_RTOL * module.mse(ours, x, y) + module.LOSS_ATOL


def test_the_new_judges_name_what_is_wrong_with_odd_answers():
    import numpy as np

    from grader.checks.judges import JUDGES

    scores_ = {"scores": [3.0, 1.0, 2.0], "series": {"validation MSE": [3.0, 1.0, 2.0]}}
    pick = dict(what="choose_degree", x_label="degree", x_start=0, score_name="validation MSE")
    assert JUDGES["pick-lowest"]([np.asarray(1)], scores_, **pick).fraction == 1  # a NumPy int, as the wire sends it
    assert "one whole number" in JUDGES["pick-lowest"]([1.5], scores_, **pick).message
    assert "not numbers" in JUDGES["pick-lowest"]([{"degree": 1}], scores_, **pick).message
    assert "outside 0..2" in JUDGES["pick-lowest"]([7], scores_, **pick).message
    assert JUDGES["pick-lowest"]([2], scores_, factor=2.5, **pick).fraction == 1

    curves = dict(what="poly_losses", names=["train MSE", "test MSE"], x_label="degree", x_start=0, rtol=1e-5,
                  atol=1e-9)
    assert JUDGES["close-curves"]([np.array([[1.0, 2.0], [3.0, 4.0]])], [[1, 2], [3, 4]], **curves).fraction == 1
    assert "should return 2 lists" in JUDGES["close-curves"]([[1.0, 2.0, 3.0]], [[1, 2], [3, 4]], **curves).message
    assert "has 1 values; it should have 2" in JUDGES["close-curves"]([([1.0], [3.0])], [[1, 2], [3, 4]],
                                                                       **curves).message
    wrong = JUDGES["close-curves"]([([1.0, 2.0], [3.0, 5.0])], [[1, 2], [3, 4]], **curves)
    assert wrong.message.startswith("poly_losses's test MSE at degree 1 is 5") and "test MSE (grader)" in \
        wrong.details["series"]

    odd = JUDGES["range"]([np.full(3, np.nan)], np.zeros(3), what="normalize", low=-1.0, high=1.0, atol=1e-6)
    assert odd.fraction == 0 and "not finite" in odd.message


def test_series_against_x_values_are_drawn_or_left_out_never_an_error():
    import math

    from grader.reports import plots

    assert plots.series_chart({"train": [1.0, 0.1, 0.001]},
                              {"label": "degree", "values": [0, 1, 2], "mark": 1}).startswith("data:image/png")
    assert plots.series_chart({"train": [1.0, 0.1]}, {"label": "degree", "values": [0, 1, 2]}) is None
    assert plots.series_chart({"train": [1.0, 0.1]}, {"values": "x", "mark": "y"}) is None
    assert plots.series_chart({"train": [math.nan, 1.0]}, {"values": [0, 1], "mark": math.inf,
                                                           "label": "$\\frac{a}{b}$"}).startswith("data:image/png")
