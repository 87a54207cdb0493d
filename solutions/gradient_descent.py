"""gradient-descent: spec and checks (instructor only; runs in the grader's process).

Students implement, in NumPy only, the gradient of a line's MSE, gradient
descent for it, and forward pass, backpropagation and gradient descent for a
1-80-1 ReLU network. Every check calls the student's function in the sandbox
on inputs made here and compares the answer with the grader's own reference:
closed-form gradients for the line and the network (tests/test_gradient_descent.py
checks the network's against torch autograd).

The visible checks are plans (grader/checks/catalog.py): their inputs and
expected values go into the student bundle, so `grader check` runs them on a
student's machine with the same verdicts. The hidden ones are functions.
"""

from __future__ import annotations

import numpy as np

from grader.course import (
    Assignment,
    CallSpec,
    Check,
    CheckContext,
    Limits,
    NotNumeric,
    Outcome,
    Plan,
    Probed,
    as_array,
    compare_array,
    compare_gradients,
    network_params,
    relu_network,
    value_of,
)

HIDDEN_UNITS = 80
FUNCTIONS = ("linear_grad", "fit_linear", "mlp_forward", "mlp_grad", "fit_mlp")
RTOL = 1e-6
GRAD_RTOL = 1e-5
SINE_MSE_TARGET = 0.03  # noise variance is 0.01; a correct fit reaches about 0.011
LINE_TOLERANCE = 0.1

# --------------------------------------------------------------------------
# The grader's reference answers


def line_gradient(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    residual = a * x + b - y
    return np.array([2.0 * np.mean(residual * x), 2.0 * np.mean(residual)])


def line_descent(x, y, *, lr, n_iter, a0, b0) -> np.ndarray:
    theta = np.array([a0, b0], dtype=np.float64)
    for _ in range(n_iter):
        theta = theta - lr * line_gradient(x, y, *theta)
    return theta


def network_gradient(x: np.ndarray, y: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """The MSE's gradient for the network, in closed form (float64)."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    pre = x[:, None] * params["a1"][None, :] + params["b1"][None, :]
    hidden = np.maximum(0.0, pre)
    d_out = 2.0 * (hidden @ params["a2"] + params["b2"] - y) / len(x)
    d_pre = np.outer(d_out, params["a2"]) * (pre > 0)
    return {"a1": d_pre.T @ x, "b1": d_pre.sum(axis=0), "a2": hidden.T @ d_out, "b2": np.asarray(d_out.sum())}


def network_descent(x, y, params, *, lr, n_iter) -> dict[str, np.ndarray]:
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    for _ in range(n_iter):
        grads = network_gradient(x, y, params)
        params = {k: params[k] - lr * grads[k] for k in params}
    return params


def random_params(rng: np.random.Generator) -> dict:
    return {
        "a1": rng.normal(0.0, 1.0, HIDDEN_UNITS),
        "b1": rng.uniform(-3.0, 3.0, HIDDEN_UNITS),
        "a2": rng.normal(0.0, 0.3, HIDDEN_UNITS),
        "b2": float(rng.normal()),
    }


def line_data(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-2.0, 2.0, n)
    return x, 3.0 * x + 4.0 + rng.normal(0.0, 0.3, n)


def sine_data(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-3.0, 3.0, n)
    return x, np.sin(x) + rng.normal(0.0, 0.1, n)


def as_pair(value, *, what: str) -> np.ndarray:
    array = as_array(value, what=what)
    if array.shape != (2,):
        raise NotNumeric(f"{what} should be a pair of two numbers, got shape {array.shape}")
    return array


# --------------------------------------------------------------------------
# Visible checks: plans


def plan_fit_linear(inputs) -> Plan:
    x, y = line_data(inputs.rng("fit-linear"))
    return Plan(calls=(CallSpec("fit_linear", (x, y), {"lr": 0.1, "n_iter": 500}),), judge="line-fit",
                expected={"x": x, "y": y},
                params={"what": "fit_linear", "target": [3.0, 4.0], "atol": LINE_TOLERANCE,
                        "setting": "after 500 steps with lr=0.1", "data_text": "y = 3x + 4 + noise"})


def plan_mlp_forward(inputs) -> Plan:
    rng = inputs.rng("mlp-forward")
    params = random_params(rng)
    x = rng.normal(0.0, 2.0, 37)
    return Plan(calls=(CallSpec("mlp_forward", (x, params)),), judge="close", expected=relu_network(x, params),
                params={"what": "mlp_forward(x, params)", "rtol": RTOL,
                        "advice": "compute a2 · relu(a1 * x + b1) + b2 for each x"})


def plan_fit_mlp(inputs) -> Plan:
    rng = inputs.rng("fit-mlp")
    x, y = sine_data(rng)
    start = random_params(rng)
    start["a2"] = start["a2"] / 3.0
    return Plan(calls=(CallSpec("fit_mlp", (x, y, start, 0.005, 2000)),), judge="network-fit",
                expected={"x": x, "y": y},
                params={"what": "fit_mlp", "hidden_units": HIDDEN_UNITS, "target_mse": SINE_MSE_TARGET,
                        "setting": "lr=0.005, 2000 steps", "data_text": "y = sin(x) + noise"})


def plan_numpy_only(inputs) -> Plan:
    """Every function, called twice on different inputs where torch cannot be imported (the spec blocks it):
    judged on torch's use alone (grader.checks.judges.runs_without)."""
    rng = inputs.rng("numpy-only")
    calls, forms = [], []
    draws = [(rng.normal(size=10), rng.normal(size=10), random_params(rng)) for _ in range(2)]
    for name in ("linear_grad", "fit_linear", "mlp_forward", "mlp_grad", "fit_mlp"):
        for x, y, params in draws:
            args = {"linear_grad": (x, y, 1.0, 0.5), "fit_linear": (x, y), "mlp_forward": (x, params),
                    "mlp_grad": (x, y, params), "fit_mlp": (x, y, params, 0.001, 2)}[name]
            calls.append(CallSpec(name, args))
        x, y, params = draws[0]
        forms.append({"linear_grad": np.zeros(2), "fit_linear": np.zeros(2), "mlp_forward": np.zeros(len(x)),
                      "mlp_grad": {key: np.zeros(np.shape(value)) for key, value in params.items()},
                      "fit_mlp": {key: np.zeros(np.shape(value)) for key, value in params.items()}}[name])
    return Plan(calls=tuple(calls), judge="runs-without", expected=forms,
                params={"functions": ["linear_grad", "fit_linear", "mlp_forward", "mlp_grad", "fit_mlp"],
                        "module": "torch"}, tolerate_errors=True)


# --------------------------------------------------------------------------
# Hidden checks


def check_linear_grad(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("linear-grad")
    points = []
    for _ in range(3):
        n = int(rng.integers(20, 60))
        x, y = rng.normal(0.0, 2.0, n), rng.normal(0.0, 3.0, n)
        a, b = (float(v) for v in rng.normal(0.0, 2.0, 2))
        points.append((x, y, a, b))
    answers = ctx.call_many([CallSpec("linear_grad", point) for point in points])
    wrong, worst = 0, 0.0
    for point, answer in zip(points, answers, strict=False):  # the answers end at the first call that failed
        try:
            found = as_pair(value_of(answer), what="linear_grad's result")
        except NotNumeric as exc:
            return Outcome.failed(f"{exc}: return (dL_da, dL_db)")
        ok, _, error = compare_array(found, line_gradient(*point), what="(dL_da, dL_db)", rtol=RTOL)
        wrong += not ok
        worst = max(worst, error)
    if wrong:
        return Outcome.failed(f"linear_grad returned a wrong gradient at {wrong} of {len(points)} test points "
                              f"(largest relative error {worst:.2g})", wrong=wrong, relative_error=worst)
    return Outcome.passed(f"linear_grad matches the analytic gradient at {len(points)} unseen points")


def check_fit_linear_steps(ctx: CheckContext) -> Outcome:
    x, y = line_data(ctx.rng("fit-linear-steps"), n=50)
    cases = [({}, dict(lr=0.1, n_iter=30, a0=1.0, b0=2.0)),
             (dict(lr=0.05, n_iter=7, a0=-0.5, b0=0.25), dict(lr=0.05, n_iter=7, a0=-0.5, b0=0.25))]
    answers = ctx.call_many([CallSpec("fit_linear", (x, y), kwargs) for kwargs, _ in cases])
    for (kwargs, reference), answer in zip(cases, answers, strict=False):
        try:
            found = as_pair(value_of(answer), what="fit_linear's result")
        except NotNumeric as exc:
            return Outcome.failed(str(exc))
        ok, _, error = compare_array(found, line_descent(x, y, **reference), what="(a, b)", rtol=RTOL)
        if not ok:
            which = "its default arguments" if not kwargs else "given lr, n_iter, a0 and b0"
            return Outcome.failed(f"fit_linear does not follow plain gradient descent exactly with {which} "
                                  f"(relative error {error:.2g}): take exactly n_iter steps of size lr "
                                  "from (a0, b0)", relative_error=error, case=kwargs or "defaults")
    return Outcome.passed("fit_linear takes exactly n_iter plain gradient-descent steps")


def check_mlp_grad(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("mlp-grad")
    cases = []
    for _ in range(2):
        params = random_params(rng)
        n = int(rng.integers(25, 60))
        x, y = rng.uniform(-3.0, 3.0, n), rng.normal(0.0, 1.0, n)
        cases.append((x, y, params))
    outcome = None
    for case, answer in zip(cases, ctx.call_many([CallSpec("mlp_grad", case) for case in cases]), strict=False):
        outcome = compare_gradients(value_of(answer), network_gradient(*case), rtol=GRAD_RTOL,
                                    what="mlp_grad's gradient")
        if outcome.fraction < 1:
            return outcome
    assert outcome is not None, "both calls answered"
    return Outcome.passed("mlp_grad matches the exact gradient for every parameter "
                          f"(relative error below {GRAD_RTOL:g})", **outcome.details)


def check_fit_mlp_steps(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("fit-mlp-steps")
    x, y = sine_data(rng, n=40)
    start = random_params(rng)
    try:
        fitted = network_params(ctx.call("fit_mlp", x, y, start, 0.003, 3), what="fit_mlp's result",
                                hidden_units=HIDDEN_UNITS)
    except NotNumeric as exc:
        return Outcome.failed(str(exc))
    expected = network_descent(x, y, start, lr=0.003, n_iter=3)
    outcome = compare_gradients(fitted, expected, rtol=GRAD_RTOL, what="the parameters after fit_mlp")
    if outcome.fraction < 1:
        return Outcome.failed("fit_mlp does not take exactly n_iter plain gradient-descent steps of size lr "
                              f"from the given params ({outcome.message})", **outcome.details)
    return Outcome.passed("fit_mlp takes exactly n_iter plain gradient-descent steps", **outcome.details)


ASSIGNMENT = Assignment(
    id="gradient-descent",
    title="Gradient descent by hand",
    notebook="gradient_descent.ipynb",
    required_names=FUNCTIONS,
    blocked_modules=("torch",),
    limits=Limits(cell_timeout_s=60, total_timeout_s=300, memory_mb=2048),
    seed=2024,
    checks=(
        Check("linear-grad", "linear_grad matches the analytic gradient", 2, check_linear_grad,
              visibility="hidden", hint="Differentiate mean((a*x + b - y)**2) with respect to a and b; "
                                        "mind the factor 2 and the sign of the residual."),
        Check("fit-linear", "fit_linear recovers a line", 2, Probed(plan_fit_linear)),
        Check("fit-linear-steps", "fit_linear is plain gradient descent", 1, check_fit_linear_steps,
              visibility="hidden", hint="Start at (a0, b0), take exactly n_iter steps of size lr, "
                                        "and respect the default arguments."),
        Check("mlp-forward", "mlp_forward computes the network", 2, Probed(plan_mlp_forward)),
        Check("mlp-grad", "mlp_grad matches autograd", 3, check_mlp_grad, visibility="hidden",
              hint="Check each key against finite differences; the ReLU passes gradient only where its "
                   "input is positive."),
        Check("fit-mlp", "fit_mlp fits a sine wave", 2, Probed(plan_fit_mlp)),
        Check("fit-mlp-steps", "fit_mlp is plain gradient descent", 1, check_fit_mlp_steps,
              visibility="hidden", hint="Update every parameter with params[k] - lr * grad[k], "
                                        "exactly n_iter times."),
        Check("numpy-only", "NumPy only, no torch", 1, Probed(plan_numpy_only, needs=("blocked-modules",))),
    ),
)
