"""Comparing numbers the student's code returned with the grader's own. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from grader.scoring import Outcome


class NotNumeric(ValueError):
    """A value that should be numbers is something else; the message says what."""


def as_array(value: Any, *, what: str) -> np.ndarray:
    """The value as a float64 array, or NotNumeric naming what was returned."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise NotNumeric(f"{what} is {value!r}, not a number")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NotNumeric(f"{what} is a {type(value).__name__}, not numbers") from None
    return array


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    """‖found − expected‖ / ‖expected‖ (absolute error when expected is ~0); inf if not finite."""
    if not np.all(np.isfinite(found)):
        return float("inf")
    scale = float(np.linalg.norm(expected))
    diff = float(np.linalg.norm(found - expected))
    return diff / scale if scale > 1e-12 else diff


def compare_array(found: Any, expected: np.ndarray, *, what: str, rtol: float) -> tuple[bool, str, float]:
    """(ok, problem, error) for one array against the expected one."""
    try:
        array = as_array(found, what=what)
    except NotNumeric as exc:
        return False, str(exc), float("inf")
    expected = np.asarray(expected, dtype=np.float64)
    if array.shape != expected.shape:
        return False, f"{what} has shape {array.shape}, expected {expected.shape}", float("inf")
    error = relative_error(array, expected)
    if error > rtol:
        return False, f"{what} is off by a relative error of {error:.2g} (allowed {rtol:g})", error
    return True, "", error


def compare_gradients(found: Any, expected: Mapping[str, np.ndarray], *, rtol: float,
                      what: str = "the gradient") -> Outcome:
    """Every key present with the right shape and within `rtol`; the worst key is named."""
    if not isinstance(found, dict):
        return Outcome.failed(f"{what} should be a dict with keys {sorted(expected)}, "
                              f"got a {type(found).__name__}")
    missing = sorted(set(expected) - set(found))
    if missing:
        return Outcome.failed(f"{what} is missing the key(s) {', '.join(missing)}")
    errors: dict[str, float] = {}
    problems: dict[str, str] = {}
    for key in expected:
        ok, problem, error = compare_array(found[key], expected[key], what=f"{what}[{key!r}]", rtol=rtol)
        errors[key] = error
        if not ok:
            problems[key] = problem
    details = {"relative_error": {k: _finite_or_str(v) for k, v in errors.items()}, "rtol": rtol}
    if not problems:
        worst = max(errors, key=lambda key: errors[key])
        return Outcome.passed(f"{what} matches for every key (worst: {worst}, relative error "
                              f"{errors[worst]:.1e})", **details)
    worst = max(problems, key=lambda k: errors[k])
    others = len(problems) - 1
    suffix = f"; {others} other key(s) are wrong too" if others else ""
    return Outcome.failed(f"{problems[worst]}{suffix}", worst_key=worst, **details)


def _finite_or_str(value: float) -> float | str:
    return value if np.isfinite(value) else "inf"
