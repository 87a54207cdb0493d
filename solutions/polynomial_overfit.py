"""polynomial-overfit: spec and checks (instructor only; runs in the grader's process).

Course exercise: fit polynomials of every degree to 11 noisy points of
sin(2πx), watch the training loss fall while the test loss rises, and choose
the degree on validation data. Students write, in NumPy only,
`fit_polynomial(x, y, degree)` (least-squares coefficients, lowest degree
first), `poly_losses(x_train, y_train, x_test, y_test, max_degree)` (train and
test MSE per degree 0..max_degree) and `choose_degree(x_train, y_train, x_val,
y_val, max_degree)`.

Every check calls the student's functions on data made here and compares with
the grader's own least squares (np.linalg.lstsq on the Vandermonde matrix).
Degrees stay below the number of training points minus one, where every
least-squares solver (lstsq, np.polyfit, QR, the normal equations) agrees to
far better than the tolerances. The visible checks are plans that go into the
student bundle; the hidden ones are functions: fits on data the student never
sees, and a choice that must not move when the grader replaces the notebook's
module-level data (it may use only the validation data it is given).
"""

from __future__ import annotations

import numpy as np

from grader.course import (
    Assignment,
    CallSpec,
    Check,
    CheckContext,
    Limits,
    Outcome,
    Plan,
    Probed,
    pick_lowest,
    polynomial_fit,
    value_of,
)

FUNCTIONS = ("fit_polynomial", "poly_losses", "choose_degree")
N_TRAIN, N_VAL, N_TEST = 11, 11, 200
NOISE = 0.2
MAX_DEGREE = 8  # below N_TRAIN - 1: the fit is unique and well enough conditioned for any solver
COEFFICIENT_RTOL = 1e-6
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-9
MARGIN = 1.05  # the best validation loss is at least 5 % below the next: no solver can tip the choice
TEST_FACTOR = 1.25  # the chosen degree's test MSE within this of the best degree's
MODULE_DATA = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

# --------------------------------------------------------------------------
# The grader's reference


def least_squares(x: np.ndarray, y: np.ndarray, degree: int) -> np.ndarray:
    """Coefficients, lowest degree first, of the least-squares polynomial of `degree`."""
    return np.linalg.lstsq(np.vander(x, degree + 1, increasing=True), y, rcond=None)[0]


def mse(coefficients: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.vander(x, len(coefficients), increasing=True) @ coefficients - y) ** 2))


def losses(x_fit, y_fit, x, y, max_degree: int) -> list[float]:
    """MSE on (x, y) of the least-squares fit to (x_fit, y_fit), per degree 0..max_degree."""
    return [mse(least_squares(x_fit, y_fit, d), x, y) for d in range(max_degree + 1)]


def wave(x: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * x)


def noisy(rng: np.random.Generator, n: int, low: float, high: float, function=wave, *,
          even: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n points of function(x) + noise, at random x in [low, high], or evenly spaced ones (as the notebook's
    training set, which keeps high-degree fits well conditioned)."""
    x = np.linspace(low, high, n) if even else np.sort(rng.uniform(low, high, n))
    return x, function(x) + rng.normal(0.0, NOISE, n)


def choice_data(rng: np.random.Generator, *, low: float, high: float) -> dict[str, np.ndarray]:
    """Train, validation and test sets where the choice is clear: one degree's validation loss is lowest by
    MARGIN, it is neither the lowest nor the highest degree, its test loss is near the best, and the highest
    degree's (what the training loss picks) is not."""
    while True:
        data = dict(zip(("x_train", "y_train"), noisy(rng, N_TRAIN, low, high, even=True), strict=True))
        data.update(zip(("x_val", "y_val"), noisy(rng, N_VAL, low, high), strict=True))
        data.update(zip(("x_test", "y_test"), noisy(rng, N_TEST, low, high), strict=True))
        val = np.array(losses(data["x_train"], data["y_train"], data["x_val"], data["y_val"], MAX_DEGREE))
        test = np.array(losses(data["x_train"], data["y_train"], data["x_test"], data["y_test"], MAX_DEGREE))
        best = int(np.argmin(val))
        clear = np.sort(val)[1] >= MARGIN * val[best] and 1 <= best < MAX_DEGREE
        if clear and test[best] <= TEST_FACTOR * test.min() and test[MAX_DEGREE] > 1.5 * TEST_FACTOR * test.min():
            return data


def chosen(data: dict) -> int:
    return int(np.argmin(losses(data["x_train"], data["y_train"], data["x_val"], data["y_val"], MAX_DEGREE)))


def training_args(data: dict) -> tuple:
    return data["x_train"], data["y_train"], data["x_val"], data["y_val"], MAX_DEGREE


# --------------------------------------------------------------------------
# Visible checks: plans


def plan_fit_polynomial(inputs) -> Plan:
    x, y = noisy(inputs.rng("fit-polynomial"), N_TRAIN, 0.0, 1.0)
    degrees = [0, 1, 3, 5]
    return Plan(calls=tuple(CallSpec("fit_polynomial", (x, y, d)) for d in degrees), judge="polynomial-fit",
                expected={"x": x, "y": y, "coefficients": [least_squares(x, y, d) for d in degrees]},
                params={"what": "fit_polynomial", "degrees": degrees, "rtol": COEFFICIENT_RTOL, "draw": 2,
                        "data_text": "11 noisy points of sin(2πx)"})


def plan_poly_losses(inputs) -> Plan:
    rng = inputs.rng("poly-losses")
    x_train, y_train = noisy(rng, N_TRAIN, 0.0, 1.0, even=True)
    x_test, y_test = noisy(rng, N_TEST, 0.0, 1.0)
    expected = [losses(x_train, y_train, x_train, y_train, MAX_DEGREE),
                losses(x_train, y_train, x_test, y_test, MAX_DEGREE)]
    return Plan(calls=(CallSpec("poly_losses", (x_train, y_train, x_test, y_test, MAX_DEGREE)),),
                judge="close-curves", expected=expected,
                params={"what": "poly_losses", "names": ["train MSE", "test MSE"], "x_label": "degree",
                        "x_start": 0, "rtol": LOSS_RTOL, "atol": LOSS_ATOL})


def _curves(data: dict, *names: str) -> dict[str, list[float]]:
    sets = {"train": "train", "validation": "val", "test": "test"}
    return {f"{name} MSE": losses(data["x_train"], data["y_train"], data[f"x_{sets[name]}"],
                                  data[f"y_{sets[name]}"], MAX_DEGREE) for name in names}


def plan_choose_degree(inputs) -> Plan:
    # on [-1, 0], away from the notebook's data on [0, 1]: a choice made on the notebook's own sets is wrong here
    data = choice_data(inputs.rng("choose-degree"), low=-1.0, high=0.0)
    curves = _curves(data, "train", "validation")
    return Plan(calls=(CallSpec("choose_degree", training_args(data)),), judge="pick-lowest",
                expected={"scores": curves["validation MSE"], "series": curves},
                params={"what": "choose_degree", "x_label": "degree", "x_start": 0, "score_name": "validation MSE",
                        "data_text": "on the grader's first data set",
                        "advice": "fit on the training data, then pick the degree whose fit has the lowest MSE "
                                  "on the validation data (the training MSE always prefers the highest degree)"})


def plan_chosen_test_loss(inputs) -> Plan:
    data = choice_data(inputs.rng("chosen-test-loss"), low=-1.0, high=0.0)
    curves = _curves(data, "train", "validation", "test")
    return Plan(calls=(CallSpec("choose_degree", training_args(data)),), judge="pick-lowest",
                expected={"scores": curves["test MSE"], "series": curves},
                params={"what": "choose_degree", "x_label": "degree", "x_start": 0,
                        "score_name": "test MSE", "factor": TEST_FACTOR,
                        "data_text": "on a second data set drawn the same way (so its choice may differ)",
                        "advice": "a degree chosen on validation data generalises; one chosen on training "
                                  "data overfits"})


# --------------------------------------------------------------------------
# Hidden checks


def check_fit_unseen(ctx: CheckContext) -> Outcome:
    """Fits of other functions, sizes and ranges than the notebook's, compared with the grader's."""
    rng = ctx.rng("fit-polynomial-unseen")
    cases = [(lambda x: np.exp(x), -1.0, 1.0, 25, [2, 4, 6]),
             (lambda x: x ** 3 - 2 * x, 0.0, 2.0, 40, [0, 3, 5]),
             (lambda x: np.cos(3 * x), -1.0, 1.0, 15, [1, 2, 6])]
    for function, low, high, n, degrees in cases:
        x, y = noisy(rng, n, low, high, function)
        answers = [value_of(a) for a in ctx.call_many([CallSpec("fit_polynomial", (x, y, d)) for d in degrees])]
        outcome = polynomial_fit(answers, {"x": x, "y": y, "coefficients": [least_squares(x, y, d) for d in degrees]},
                                 what="fit_polynomial", degrees=degrees, rtol=COEFFICIENT_RTOL, draw=len(degrees) - 1,
                                 data_text=f"{n} points")
        if outcome.fraction < 1:
            return outcome
    return Outcome.passed("fit_polynomial matches the grader's least squares on three unseen data sets "
                          "(degrees 0 to 6)", **outcome.details)


def decoy(data: dict, degree: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Module-level data under which a choice made on anything but the given validation data moves to
    `degree`: points lying exactly on the training fit of that degree."""
    x = np.sort(rng.uniform(data["x_train"].min(), data["x_train"].max(), N_TEST))
    y = np.vander(x, degree + 1, increasing=True) @ least_squares(data["x_train"], data["y_train"], degree)
    return {name: (x if name.startswith("x") else y) for name in MODULE_DATA}


def _shown(answer) -> int | float | str:
    """An answer as a plain number where it is one (3, 3.0 and a NumPy 3 are the same choice)."""
    try:
        value = float(np.asarray(answer, dtype=float).reshape(-1)[0]) if np.size(answer) == 1 else None
    except (TypeError, ValueError):
        value = None
    if value is None or not np.isfinite(value):
        return str(answer)[:40]
    return int(value) if value.is_integer() else value


def check_choice_uses_validation_only(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("choice-uses-validation-only")
    data = choice_data(rng, low=-0.5, high=0.5)  # a grid of its own: nothing of it is in the student bundle
    expected = chosen(data)
    answers = [ctx.call("choose_degree", *training_args(data))]
    for degree in (0 if expected else 1, MAX_DEGREE if expected != MAX_DEGREE else MAX_DEGREE - 1):
        for name, value in decoy(data, degree, rng).items():
            ctx.set(name, value)
        answers.append(ctx.call("choose_degree", *training_args(data)))
    shown = [_shown(a) for a in answers]
    details = {"found": shown, "expected": expected}
    if len({str(a) for a in shown}) > 1:
        return Outcome.failed(f"choose_degree gave {' then '.join(map(str, shown))} for the same arguments when "
                              f"the grader replaced the notebook's module-level {', '.join(MODULE_DATA)}: it must "
                              "decide from the training and validation data it is given, nothing else", **details)
    outcome = pick_lowest(answers[:1], {"scores": losses(data["x_train"], data["y_train"], data["x_val"],
                                                         data["y_val"], MAX_DEGREE)},
                          what="choose_degree", x_label="degree", x_start=0, score_name="validation MSE")
    if outcome.fraction < 1:
        return Outcome.failed(f"{outcome.message} (on unseen data)", **details)
    return Outcome.passed(f"choose_degree chose degree {expected}, the validation MSE's minimum, and kept it when "
                          "the grader replaced the notebook's other data", **details)


ASSIGNMENT = Assignment(
    id="polynomial-overfit",
    title="Polynomial fits, overfitting and validation",
    notebook="polynomial_overfit.ipynb",
    required_names=FUNCTIONS,
    blocked_modules=("torch",),
    limits=Limits(cell_timeout_s=60, total_timeout_s=300, memory_mb=2048),
    seed=11,
    checks=(
        Check("fit-polynomial", "fit_polynomial is the least-squares fit", 2, Probed(plan_fit_polynomial)),
        Check("fit-polynomial-unseen", "fit_polynomial on unseen data", 2, check_fit_unseen, visibility="hidden",
              hint="Solve the least-squares problem for the columns 1, x, x**2, ..., x**degree (np.linalg.lstsq "
                   "or np.polyfit), and return the coefficients lowest degree first."),
        Check("poly-losses", "poly_losses gives the train and test MSE per degree", 3, Probed(plan_poly_losses)),
        Check("choose-degree", "choose_degree picks the lowest validation MSE", 2, Probed(plan_choose_degree)),
        Check("chosen-test-loss", "the chosen degree generalises", 1, Probed(plan_chosen_test_loss)),
        Check("choice-uses-validation-only", "choose_degree uses only the data it is given", 2,
              check_choice_uses_validation_only, visibility="hidden",
              hint="Decide from the arguments only: fit on x_train, y_train and compare MSEs on x_val, y_val; "
                   "never read the notebook's own data (x_test, y_test, ...) inside the function."),
    ),
)
