"""Judges: from a student's answers and the grader's expected values to an Outcome. Pure.

A visible check written as a `Plan` (grader/checks/catalog.py) names one of
these with its parameters: the grader runs it when grading, and `grader check`
runs the very same one on a student's machine from the data in the student
bundle, so both give the same verdict and the same message. A judge gets the
answers in the order of the plan's calls; a call that failed arrives as a
`CallFailed` only where the plan tolerates failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.checks.numeric import NotNumeric, as_array, compare_array, compare_gradients
from grader.scoring import Outcome


@dataclass(frozen=True)
class CallFailed:
    """A call of the plan that raised, timed out or is missing: the message says which."""

    message: str


def _pair(value: Any, *, what: str) -> np.ndarray:
    array = as_array(value, what=what)
    if array.shape != (2,):
        raise NotNumeric(f"{what} should be a pair of two numbers, got shape {array.shape}")
    return array


def _round(values: Any) -> list:
    return np.round(np.asarray(values, dtype=float), 4).tolist()


def curve(x: Any, y: Any, fit_x: Any, fit_y: Any, *, label: str) -> dict:
    """Data and a fitted curve, for the feedback's plot (finite values only)."""
    fit_y = np.nan_to_num(np.asarray(fit_y, dtype=float), nan=0.0, posinf=1e6, neginf=-1e6)
    return {"data_x": _round(x), "data_y": _round(y), "fit_x": _round(fit_x), "fit_y": _round(fit_y), "label": label}


def close(answers: list, expected: Any, *, what: str, rtol: float, advice: str = "") -> Outcome:
    """The one answer equals `expected` (an array, or a dict of arrays) within rtol."""
    found = answers[0]
    if isinstance(expected, dict):
        outcome = compare_gradients(found, {k: np.asarray(v) for k, v in expected.items()}, rtol=rtol, what=what)
        if outcome.fraction < 1 and advice:
            return Outcome.failed(f"{outcome.message}: {advice}", **outcome.details)
        return outcome
    ok, problem, error = compare_array(found, np.asarray(expected), what=what, rtol=rtol)
    if ok:
        return Outcome.passed(f"{what} matches the grader's values (relative error {error:.1e})",
                              relative_error=error)
    return Outcome.failed(f"{problem}" + (f": {advice}" if advice else ""), relative_error=error)


def line_fit(answers: list, expected: Any, *, what: str, target: list, atol: float, setting: str,
             data_text: str) -> Outcome:
    """The answer (a, b) lies within atol of the target line's (a, b); the data comes in `expected`."""
    try:
        a, b = _pair(answers[0], what=f"{what}'s result")
    except NotNumeric as exc:
        return Outcome.failed(f"{exc}: return (a, b)")
    x, y = np.asarray(expected["x"]), np.asarray(expected["y"])
    grid = np.linspace(float(x.min()), float(x.max()), 50)
    details = {"a": float(a), "b": float(b),
               "curve": curve(x, y, grid, a * grid + b, label=f"{what}: {a:.3g}x + {b:.3g}")}
    if abs(a - target[0]) <= atol and abs(b - target[1]) <= atol:
        return Outcome.passed(f"{what} recovered a={a:.3f}, b={b:.3f} from {data_text}", **details)
    return Outcome.failed(f"{what} ended at a={a:.3g}, b={b:.3g} {setting} on {data_text}; it should get within "
                          f"{atol:g} of a={target[0]:g}, b={target[1]:g}", **details)


def relu_network(x: np.ndarray, params: dict) -> np.ndarray:
    """The course's one-hidden-layer network F(x) = a2 · relu(a1 * x + b1) + b2, as the task states it."""
    hidden = np.maximum(0.0, x[:, None] * params["a1"][None, :] + params["b1"][None, :])
    return hidden @ params["a2"] + params["b2"]


def network_params(value: Any, *, what: str, hidden_units: int) -> dict[str, np.ndarray]:
    """The student's params dict as arrays of the task's shapes, or NotNumeric saying what is wrong."""
    if not isinstance(value, dict) or set(value) != {"a1", "b1", "a2", "b2"}:
        keys = sorted(map(repr, value)) if isinstance(value, dict) else type(value).__name__
        raise NotNumeric(f"{what} should be a dict with keys a1, b1, a2, b2; got {keys}")
    params = {k: as_array(value[k], what=f"{what}[{k!r}]") for k in value}
    for key in ("a1", "b1", "a2"):
        if params[key].shape != (hidden_units,):
            raise NotNumeric(f"{what}[{key!r}] has shape {params[key].shape}, expected ({hidden_units},)")
    if params["b2"].size != 1:
        raise NotNumeric(f"{what}['b2'] should be a single number, got shape {params['b2'].shape}")
    params["b2"] = params["b2"].reshape(())
    return params


def network_fit(answers: list, expected: Any, *, what: str, hidden_units: int, target_mse: float, setting: str,
                data_text: str) -> Outcome:
    """The answer (network parameters) fits the data in `expected` with a training MSE below target_mse."""
    try:
        fitted = network_params(answers[0], what=f"{what}'s result", hidden_units=hidden_units)
    except NotNumeric as exc:
        return Outcome.failed(str(exc))
    x, y = np.asarray(expected["x"]), np.asarray(expected["y"])
    mse = float(np.mean((relu_network(x, fitted) - y) ** 2))
    grid = np.linspace(float(x.min()), float(x.max()), 120)
    details = {"mse": mse, "target": target_mse,
               "curve": curve(x, y, grid, relu_network(grid, fitted), label=f"network after {what}")}
    if np.isfinite(mse) and mse < target_mse:
        return Outcome.passed(f"{what} reached a training MSE of {mse:.4f} on {data_text} (needed below "
                              f"{target_mse})", **details)
    return Outcome.failed(f"after {what} ({setting}) the training MSE on {data_text} is {mse:.3g}; it should be "
                          f"below {target_mse}", **details)


def runs_without(answers: list, expected: Any, *, functions: list, module: str) -> Outcome:
    """Credit per function that works where `module` cannot be imported, judged on the module's use alone: a
    wrong answer costs points in that function's own checks, not here. Each function is called twice, on
    different inputs; it proves it runs without the module when both calls return an answer of the right
    form that depends on its inputs. A stub still raising NotImplementedError, or an answer forged without
    doing the work (the same whatever the input), proves nothing and earns nothing."""
    uses_module: list[tuple[str, str]] = []
    unverified: list[tuple[str, str]] = []
    for i, name in enumerate(functions):
        first, second = answers[2 * i], answers[2 * i + 1]
        failed = next((a for a in (first, second) if isinstance(a, CallFailed)), None)
        if failed is not None:
            (uses_module if module in failed.message else unverified).append((name, failed.message))
        elif not (_same_form(first, expected[i]) and _same_form(second, expected[i])):
            unverified.append((name, f"{name} returned an answer of another form than it must"))
        elif _same_values(first, second):
            unverified.append((name, f"{name} returned the same answer for different inputs"))
    proven = 1 - (len(uses_module) + len(unverified)) / len(functions)
    if uses_module:
        names = ", ".join(n for n, _ in uses_module)
        return Outcome.partial(proven, f"{names} need {module}, which this assignment does not allow: "
                                       f"{uses_module[0][1]}. Use NumPy only.")
    if unverified:
        names = ", ".join(n for n, _ in unverified)
        return Outcome.partial(proven, f"could not tell whether {names} work without {module}: "
                                       f"{unverified[0][1]}")
    return Outcome.passed(f"all {len(functions)} functions ran with {module} unavailable: NumPy only")


def _same_form(found: Any, wanted: Any) -> bool:
    """Whether `found` is finite numbers of `wanted`'s form (the same keys, each of the same shape)."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and set(found) == set(wanted) and all(
            _same_form(found[key], value) for key, value in wanted.items())
    try:
        array = as_array(found, what="the answer")
    except NotNumeric:
        return False
    return array.shape == np.shape(wanted) and bool(np.isfinite(array).all())


def _same_values(first: Any, second: Any) -> bool:
    if isinstance(first, dict):
        return all(_same_values(first[key], second[key]) for key in first)
    return bool(np.array_equal(as_array(first, what="the answer"), as_array(second, what="the answer")))


def _finite(values: Any, *, limit: float = 1e12) -> list:
    """Numbers a chart and JSON can hold: non-finite and huge values clipped to ±limit."""
    array = np.nan_to_num(np.asarray(values, dtype=float), nan=limit, posinf=limit, neginf=-limit)
    return np.round(np.clip(array, -limit, limit), 8).tolist()


def series_axis(label: str, start: int, count: int, **mark: Any) -> dict:
    """details["series_x"]: the series share the x values start, start + 1, ... named `label`."""
    return {"label": label, "values": list(range(start, start + count)), **mark}


def polynomial_fit(answers: list, expected: Any, *, what: str, degrees: list, rtol: float, draw: int,
                   data_text: str) -> Outcome:
    """Each answer is the coefficients (lowest degree first) of a least-squares polynomial of the degree at the
    same place in `degrees`; `expected` holds the data and the grader's coefficients. Coefficients given highest
    degree first are named as such. The fit at index `draw` is plotted over the data."""
    x, y = np.asarray(expected["x"], dtype=float), np.asarray(expected["y"], dtype=float)
    errors, problem, drawn = {}, "", None
    for index, (degree, found, wanted) in enumerate(zip(degrees, answers, expected["coefficients"], strict=False)):
        call = f"{what}(x, y, {degree})"
        wanted = np.asarray(wanted, dtype=float)
        try:
            coefficients = as_array(found, what=f"{call}'s result").reshape(-1)
        except NotNumeric as exc:
            problem = problem or f"{exc}: return the {degree + 1} coefficients as an array"
            continue
        if coefficients.shape != wanted.shape:
            problem = problem or (f"{call} returned {coefficients.size} coefficients; a polynomial of degree {degree} "
                                  f"has {degree + 1}")
            continue
        if index == draw:
            drawn = coefficients
        ok, _, error = compare_array(coefficients, wanted, what=call, rtol=rtol)
        errors[f"degree {degree}"] = error if np.isfinite(error) else "inf"
        if not ok and not problem:
            if degree > 0 and compare_array(coefficients[::-1], wanted, what=call, rtol=rtol)[0]:
                problem = (f"{call} returned the right coefficients highest degree first (as np.polyfit gives "
                           "them); return them lowest degree first: the constant term, then x, x**2, ...")
            else:
                problem = (f"{call} returned coefficients off by a relative error of {error:.2g} from the "
                           f"least-squares fit (allowed {rtol:g})")
    details: dict[str, Any] = {"relative_error": errors, "rtol": rtol}
    if drawn is not None:
        grid = np.linspace(float(x.min()), float(x.max()), 120)
        fit = np.vander(grid, len(drawn), increasing=True) @ drawn
        details["curve"] = curve(x, y, grid, fit, label=f"your degree-{degrees[draw]} fit")
    if problem:
        return Outcome.failed(problem, **details)
    return Outcome.passed(f"{what} matches the least-squares fit of degree {', '.join(map(str, degrees))} on "
                          f"{data_text}", **details)


def close_curves(answers: list, expected: Any, *, what: str, names: list, x_label: str, x_start: int,
                 rtol: float, atol: float) -> Outcome:
    """The answer is one sequence per name, each equal to the expected one point by point within
    rtol · |expected| + atol; drawn against x = x_start, x_start + 1, ... on one chart."""
    found = answers[0]
    count = len(expected[0])
    axis = series_axis(x_label, x_start, count)
    if isinstance(found, np.ndarray) and found.ndim == 2:
        found = list(found)
    if not isinstance(found, (list, tuple)) or len(found) != len(names):
        kind = f"{len(found)} values" if isinstance(found, (list, tuple)) else f"a {type(found).__name__}"
        return Outcome.failed(f"{what} should return {len(names)} lists ({', '.join(names)}); it returned {kind}")
    curves = []
    for name, values in zip(names, found, strict=True):
        try:
            array = as_array(values, what=f"{what}'s {name}").reshape(-1)
        except NotNumeric as exc:
            return Outcome.failed(str(exc))
        if array.size != count:
            return Outcome.failed(f"{what}'s {name} has {array.size} values; it should have {count}, one per "
                                  f"{x_label} from {x_start} to {x_start + count - 1}")
        curves.append(array)
    series = {name: _finite(array) for name, array in zip(names, curves, strict=True)}
    for name, array, wanted in zip(names, curves, expected, strict=False):
        wanted = np.asarray(wanted, dtype=float)
        wrong = ~(np.abs(array - wanted) <= rtol * np.abs(wanted) + atol)
        if wrong.any():
            i = int(np.argmax(wrong))
            series.update({f"{n} (grader)": _finite(w) for n, w in zip(names, expected, strict=False)})
            return Outcome.failed(f"{what}'s {name} at {x_label} {x_start + i} is {array[i]:.6g}; the grader's "
                                  f"is {wanted[i]:.6g} ({int(wrong.sum())} of {count} values differ)",
                                  series=series, series_x=axis)
    return Outcome.passed(f"{what} gives the grader's {' and '.join(names)} for every {x_label} from {x_start} to "
                          f"{x_start + count - 1}", series=series, series_x=axis)


def pick_lowest(answers: list, expected: Any, *, what: str, x_label: str, x_start: int, score_name: str,
                factor: float = 1.0, advice: str = "", data_text: str = "") -> Outcome:
    """The answer is a value x_start + i whose score (expected["scores"][i]) is the lowest, or within `factor`
    of it; expected["series"] (curves against the same x) is drawn with the answer marked. `data_text` says
    which data the choice was made on, so that two checks of one function on different data that choose
    differently say why."""
    scores = np.asarray(expected["scores"], dtype=float)
    best = int(np.argmin(scores))
    series = {name: _finite(values) for name, values in expected.get("series", {}).items()}
    details: dict[str, Any] = {"series": series, "series_x": series_axis(x_label, x_start, len(scores)),
                               "best": x_start + best}
    try:
        value = as_array(answers[0], what=f"{what}'s result")
    except NotNumeric as exc:
        return Outcome.failed(f"{exc}: return the {x_label} as an int", **details)
    if value.size != 1 or not np.isfinite(value).all() or float(value.reshape(-1)[0]) % 1:
        return Outcome.failed(f"{what} should return one whole number, the {x_label}; it returned "
                              f"{np.round(value.reshape(-1)[:5], 4).tolist()}", **details)
    chosen = int(value.reshape(-1)[0])
    on = f" {data_text}" if data_text else ""
    details.update(chosen=chosen, series_x=series_axis(x_label, x_start, len(scores), mark=chosen,
                                                        mark_label=f"{what}'s choice"))
    index = chosen - x_start
    if not 0 <= index < len(scores):
        return Outcome.failed(f"{what} chose {x_label} {chosen}{on}, outside {x_start}..{x_start + len(scores) - 1}",
                              **details)
    lowest = f"the lowest is {scores[best]:.4g}, at {x_label} {x_start + best}"
    if scores[index] <= factor * scores[best] * (1 + 1e-9):
        if factor == 1.0:
            return Outcome.passed(f"{what} chose {x_label} {chosen}{on}, where the {score_name} is lowest "
                                  f"({scores[index]:.4g})", **details)
        return Outcome.passed(f"{what} chose {x_label} {chosen}{on}, whose {score_name} ({scores[index]:.4g}) "
                              f"is within {factor:g} × the lowest ({scores[best]:.4g}, at {x_label} {x_start + best})",
                              **details)
    within = "" if factor == 1.0 else f", and it should be within {factor:g} × that"
    return Outcome.failed(f"{what} chose {x_label} {chosen}{on}, whose {score_name} is {scores[index]:.4g}; "
                          f"{lowest}{within}" + (f": {advice}" if advice else ""), **details)


def value_range(answers: list, expected: Any, *, what: str, low: float, high: float, atol: float,
                advice: str = "") -> Outcome:
    """The answer's smallest and largest values are low and high (within atol); `expected` holds the inputs,
    drawn against the answer when they have its shape."""
    try:
        found = as_array(answers[0], what=f"{what}'s result")
    except NotNumeric as exc:
        return Outcome.failed(str(exc))
    inputs = np.asarray(expected, dtype=float)
    if found.size == 0 or not np.isfinite(found).all():
        return Outcome.failed(f"{what} returned {'no values' if found.size == 0 else 'values that are not finite'}")
    smallest, largest = float(found.min()), float(found.max())
    details: dict[str, Any] = {"expected": [low, high], "found": [round(smallest, 6), round(largest, 6)]}
    if found.shape == inputs.shape:
        keep = np.linspace(0, found.size - 1, min(found.size, 2000)).astype(int)
        details["scatter"] = {"x": _round(inputs.reshape(-1)[keep]), "y": _round(found.reshape(-1)[keep]),
                              "x_label": "input value", "y_label": f"{what}'s output", "diagonal": False}
    if abs(smallest - low) <= atol and abs(largest - high) <= atol:
        return Outcome.passed(f"{what} maps the inputs onto [{low:g}, {high:g}]", **details)
    return Outcome.failed(f"{what} maps inputs in [{float(inputs.min()):g}, {float(inputs.max()):g}] onto "
                          f"[{smallest:.4g}, {largest:.4g}]; it should give [{low:g}, {high:g}]"
                          + (f": {advice}" if advice else ""), **details)


JUDGES: dict[str, Callable[..., Outcome]] = {
    "close": close,
    "line-fit": line_fit,
    "network-fit": network_fit,
    "runs-without": runs_without,
    "polynomial-fit": polynomial_fit,
    "close-curves": close_curves,
    "pick-lowest": pick_lowest,
    "range": value_range,
}
