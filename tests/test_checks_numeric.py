"""The pure comparison checks and the scoring rules."""

from __future__ import annotations

import math

import numpy as np

from grader.checks.numeric import compare_array, compare_gradients, relative_error
from grader.scoring import Outcome, linear_credit, points, status_of


def test_relative_error_is_infinite_for_nan():
    assert relative_error(np.array([np.nan]), np.array([1.0])) == math.inf
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0


def test_compare_array_reports_shape_and_type():
    assert compare_array([1.0, 2.0], np.zeros(3), what="x", rtol=1e-6)[1] == "x has shape (2,), expected (3,)"
    assert "not numbers" in compare_array("abc", np.zeros(1), what="x", rtol=1e-6)[1]
    assert compare_array([1.0, 2.0 + 1e-9], np.array([1.0, 2.0]), what="x", rtol=1e-6)[0]


def test_compare_gradients_names_the_worst_key():
    expected = {"a1": np.ones(3), "b2": np.array(2.0)}
    outcome = compare_gradients({"a1": np.ones(3) * 1.5, "b2": 2.0}, expected, rtol=1e-5)
    assert outcome.fraction == 0 and outcome.details["worst_key"] == "a1"
    assert outcome.message.startswith("the gradient['a1'] is off by a relative error of 0.5")
    assert compare_gradients({"a1": np.ones(3)}, expected, rtol=1e-5).message == \
        "the gradient is missing the key(s) b2"
    assert compare_gradients([1, 2], expected, rtol=1e-5).fraction == 0
    assert compare_gradients({"a1": np.ones(3), "b2": 2.0}, expected, rtol=1e-5).fraction == 1


def test_points_clamp_and_round():
    assert points(Outcome.partial(0.3333, "x"), 3) == 1.0
    assert points(Outcome.partial(float("nan"), "x"), 3) == 0
    assert points(Outcome.partial(7, "x"), 3) == 3
    assert status_of(Outcome.partial(0.5, "x")) == "failed"
    assert status_of(Outcome.error("x")) == "error"


def test_linear_credit():
    assert linear_credit(0.93, floor=0.8, target=0.93) == 1
    assert linear_credit(0.80, floor=0.8, target=0.93) == 0
    assert abs(linear_credit(0.865, floor=0.8, target=0.93) - 0.5) < 1e-9
