"""gradient-descent: spec and checks (instructor only; runs in the grader's process).

Students implement, in NumPy only, the gradient of a line's MSE, gradient
descent for it, and forward pass, backpropagation and gradient descent for a
1-80-1 ReLU network. Every check calls the student's function in the sandbox
on inputs made here and compares the answer with the grader's own reference:
closed-form gradients for the line, torch autograd for the network.
"""

from __future__ import annotations

import numpy as np

from grader.assignment import Assignment, Check
from grader.checks.numeric import NotNumeric, as_array, compare_array, compare_gradients
from grader.context import CheckContext
from grader.errors import StudentError
from grader.sandbox import Limits
from grader.scoring import Outcome

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


def network_output(x: np.ndarray, params: dict) -> np.ndarray:
    hidden = np.maximum(0.0, x[:, None] * params["a1"][None, :] + params["b1"][None, :])
    return hidden @ params["a2"] + params["b2"]


def autograd_gradient(x: np.ndarray, y: np.ndarray, params: dict) -> dict[str, np.ndarray]:
    """The MSE's gradient by torch autograd, in float64."""
    import torch

    tensors = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}
    xt, yt = torch.tensor(x), torch.tensor(y)
    hidden = torch.relu(xt[:, None] * tensors["a1"] + tensors["b1"])
    loss = torch.mean((hidden @ tensors["a2"] + tensors["b2"] - yt) ** 2)
    loss.backward()
    return {k: t.grad.numpy() for k, t in tensors.items()}


def network_descent(x, y, params, *, lr, n_iter) -> dict[str, np.ndarray]:
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    for _ in range(n_iter):
        grads = autograd_gradient(x, y, params)
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


def curve(x, y, fit_x, fit_y, *, label: str) -> dict:
    """Data and a fitted curve, for the feedback's plot (finite values only)."""
    fit_y = np.nan_to_num(np.asarray(fit_y, dtype=float), nan=0.0, posinf=1e6, neginf=-1e6)
    return {"data_x": np.round(x, 4).tolist(), "data_y": np.round(y, 4).tolist(),
            "fit_x": np.round(fit_x, 4).tolist(), "fit_y": np.round(fit_y, 4).tolist(), "label": label}


def as_pair(value, *, what: str) -> np.ndarray:
    array = as_array(value, what=what)
    if array.shape != (2,):
        raise NotNumeric(f"{what} should be a pair of two numbers, got shape {array.shape}")
    return array


def as_params(value, *, what: str) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or set(value) != {"a1", "b1", "a2", "b2"}:
        keys = sorted(map(repr, value)) if isinstance(value, dict) else type(value).__name__
        raise NotNumeric(f"{what} should be a dict with keys a1, b1, a2, b2; got {keys}")
    params = {k: as_array(value[k], what=f"{what}[{k!r}]") for k in value}
    for key, shape in (("a1", (HIDDEN_UNITS,)), ("b1", (HIDDEN_UNITS,)), ("a2", (HIDDEN_UNITS,))):
        if params[key].shape != shape:
            raise NotNumeric(f"{what}[{key!r}] has shape {params[key].shape}, expected {shape}")
    if params["b2"].size != 1:
        raise NotNumeric(f"{what}['b2'] should be a single number, got shape {params['b2'].shape}")
    params["b2"] = params["b2"].reshape(())
    return params


# --------------------------------------------------------------------------
# Checks


def check_linear_grad(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("linear-grad")
    trials, wrong, worst = 3, 0, 0.0
    for _ in range(trials):
        n = int(rng.integers(20, 60))
        x, y = rng.normal(0.0, 2.0, n), rng.normal(0.0, 3.0, n)
        a, b = (float(v) for v in rng.normal(0.0, 2.0, 2))
        try:
            found = as_pair(ctx.call("linear_grad", x, y, a, b), what="linear_grad's result")
        except NotNumeric as exc:
            return Outcome.failed(f"{exc}: return (dL_da, dL_db)")
        ok, _, error = compare_array(found, line_gradient(x, y, a, b), what="(dL_da, dL_db)", rtol=RTOL)
        wrong += not ok
        worst = max(worst, error)
    if wrong:
        return Outcome.failed(f"linear_grad returned a wrong gradient at {wrong} of {trials} test points "
                              f"(largest relative error {worst:.2g})", wrong=wrong, relative_error=worst)
    return Outcome.passed(f"linear_grad matches the analytic gradient at {trials} unseen points")


def check_fit_linear(ctx: CheckContext) -> Outcome:
    x, y = line_data(ctx.rng("fit-linear"))
    try:
        a, b = as_pair(ctx.call("fit_linear", x, y, lr=0.1, n_iter=500), what="fit_linear's result")
    except NotNumeric as exc:
        return Outcome.failed(f"{exc}: return (a, b)")
    grid = np.linspace(-2.0, 2.0, 50)
    details = {"a": float(a), "b": float(b), "lr": 0.1, "n_iter": 500,
               "curve": curve(x, y, grid, a * grid + b, label=f"fit_linear: {a:.3g}x + {b:.3g}")}
    if abs(a - 3.0) <= LINE_TOLERANCE and abs(b - 4.0) <= LINE_TOLERANCE:
        return Outcome.passed(f"fit_linear recovered a={a:.3f}, b={b:.3f} from y = 3x + 4 + noise", **details)
    return Outcome.failed(f"fit_linear ended at a={a:.3g}, b={b:.3g} after 500 steps with lr=0.1 on "
                          "y = 3x + 4 + noise; it should get within 0.1 of a=3, b=4", **details)


def check_fit_linear_steps(ctx: CheckContext) -> Outcome:
    x, y = line_data(ctx.rng("fit-linear-steps"), n=50)
    cases = [({}, dict(lr=0.1, n_iter=30, a0=1.0, b0=2.0)),
             (dict(lr=0.05, n_iter=7, a0=-0.5, b0=0.25), dict(lr=0.05, n_iter=7, a0=-0.5, b0=0.25))]
    for kwargs, reference in cases:
        try:
            found = as_pair(ctx.call("fit_linear", x, y, **kwargs), what="fit_linear's result")
        except NotNumeric as exc:
            return Outcome.failed(str(exc))
        ok, _, error = compare_array(found, line_descent(x, y, **reference), what="(a, b)", rtol=RTOL)
        if not ok:
            which = "its default arguments" if not kwargs else "given lr, n_iter, a0 and b0"
            return Outcome.failed(f"fit_linear does not follow plain gradient descent exactly with {which} "
                                  f"(relative error {error:.2g}): take exactly n_iter steps of size lr "
                                  "from (a0, b0)", relative_error=error, case=kwargs or "defaults")
    return Outcome.passed("fit_linear takes exactly n_iter plain gradient-descent steps")


def check_mlp_forward(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("mlp-forward")
    params = random_params(rng)
    x = rng.normal(0.0, 2.0, 37)
    found = ctx.call("mlp_forward", x, params)
    ok, problem, error = compare_array(found, network_output(x, params), what="mlp_forward(x, params)",
                                       rtol=RTOL)
    if ok:
        return Outcome.passed("mlp_forward matches the reference network on random parameters",
                              relative_error=error)
    return Outcome.failed(f"{problem}: compute a2 · relu(a1 * x + b1) + b2 for each x", relative_error=error)


def check_mlp_grad(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("mlp-grad")
    outcome = None
    for _ in range(2):
        params = random_params(rng)
        n = int(rng.integers(25, 60))
        x, y = rng.uniform(-3.0, 3.0, n), rng.normal(0.0, 1.0, n)
        found = ctx.call("mlp_grad", x, y, params)
        outcome = compare_gradients(found, autograd_gradient(x, y, params), rtol=GRAD_RTOL,
                                    what="mlp_grad's gradient")
        if outcome.fraction < 1:
            return outcome
    return Outcome.passed("mlp_grad matches torch autograd for every parameter "
                          f"(relative error below {GRAD_RTOL:g})", **outcome.details)


def check_fit_mlp(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("fit-mlp")
    x, y = sine_data(rng)
    start = random_params(rng)
    start["a2"] = start["a2"] / 3.0
    try:
        fitted = as_params(ctx.call("fit_mlp", x, y, start, 0.005, 2000), what="fit_mlp's result")
    except NotNumeric as exc:
        return Outcome.failed(str(exc))
    mse = float(np.mean((network_output(x, fitted) - y) ** 2))
    grid = np.linspace(-3.0, 3.0, 120)
    details = {"mse": mse, "target": SINE_MSE_TARGET, "lr": 0.005, "n_iter": 2000,
               "curve": curve(x, y, grid, network_output(grid, fitted), label="network after fit_mlp")}
    if np.isfinite(mse) and mse < SINE_MSE_TARGET:
        return Outcome.passed(f"fit_mlp reached a training MSE of {mse:.4f} on y = sin(x) + noise "
                              f"(needed below {SINE_MSE_TARGET})", **details)
    return Outcome.failed(f"after fit_mlp (lr=0.005, 2000 steps) the training MSE on y = sin(x) + noise is "
                          f"{mse:.3g}; it should be below {SINE_MSE_TARGET}", **details)


def check_fit_mlp_steps(ctx: CheckContext) -> Outcome:
    rng = ctx.rng("fit-mlp-steps")
    x, y = sine_data(rng, n=40)
    start = random_params(rng)
    try:
        fitted = as_params(ctx.call("fit_mlp", x, y, start, 0.003, 3), what="fit_mlp's result")
    except NotNumeric as exc:
        return Outcome.failed(str(exc))
    expected = network_descent(x, y, start, lr=0.003, n_iter=3)
    outcome = compare_gradients(fitted, expected, rtol=GRAD_RTOL, what="the parameters after fit_mlp")
    if outcome.fraction < 1:
        return Outcome.failed("fit_mlp does not take exactly n_iter plain gradient-descent steps of size lr "
                              f"from the given params ({outcome.message})", **outcome.details)
    return Outcome.passed("fit_mlp takes exactly n_iter plain gradient-descent steps", **outcome.details)


def check_numpy_only(ctx: CheckContext) -> Outcome:
    """Every function gives the right answer in a kernel where torch cannot be imported.

    Running is not enough: an answer must also be correct, or a notebook that
    forges the grader's replies would pass without doing the work.
    """
    rng = ctx.rng("numpy-only")
    x, y = rng.normal(size=10), rng.normal(size=10)
    params = random_params(rng)
    cases = {
        "linear_grad": ((x, y, 1.0, 0.5), line_gradient(x, y, 1.0, 0.5)),
        "fit_linear": ((x, y), line_descent(x, y, lr=0.1, n_iter=30, a0=1.0, b0=2.0)),
        "mlp_forward": ((x, params), network_output(x, params)),
        "mlp_grad": ((x, y, params), autograd_gradient(x, y, params)),
        "fit_mlp": ((x, y, params, 0.001, 2), network_descent(x, y, params, lr=0.001, n_iter=2)),
    }
    uses_torch, unverified = [], []
    for name, (args, expected) in cases.items():
        try:
            found = ctx.call(name, *args)
        except StudentError as exc:
            (uses_torch if "torch" in exc.message else unverified).append((name, exc.message))
            continue
        if isinstance(expected, dict):
            correct = compare_gradients(found, expected, rtol=GRAD_RTOL).fraction == 1
        else:
            correct = compare_array(found, expected, what=name, rtol=RTOL)[0]
        if not correct:
            unverified.append((name, f"{name} gave a wrong answer"))
    proven = 1 - (len(uses_torch) + len(unverified)) / len(cases)  # credit per function proven NumPy-only
    if uses_torch:
        names = ", ".join(n for n, _ in uses_torch)
        return Outcome.partial(proven, f"{names} need torch, which this assignment does not allow: "
                                       f"{uses_torch[0][1]}. Use NumPy only.")
    if unverified:
        names = ", ".join(n for n, _ in unverified)
        return Outcome.partial(proven, f"could not confirm that {names} work with NumPy only, because they did "
                                       f"not give correct answers ({unverified[0][1]})")
    return Outcome.passed("all five functions gave correct answers with torch unavailable: NumPy only")


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
        Check("fit-linear", "fit_linear recovers a line", 2, check_fit_linear),
        Check("fit-linear-steps", "fit_linear is plain gradient descent", 1, check_fit_linear_steps,
              visibility="hidden", hint="Start at (a0, b0), take exactly n_iter steps of size lr, "
                                        "and respect the default arguments."),
        Check("mlp-forward", "mlp_forward computes the network", 2, check_mlp_forward),
        Check("mlp-grad", "mlp_grad matches autograd", 3, check_mlp_grad, visibility="hidden",
              hint="Check each key against finite differences; the ReLU passes gradient only where its "
                   "input is positive."),
        Check("fit-mlp", "fit_mlp fits a sine wave", 2, check_fit_mlp),
        Check("fit-mlp-steps", "fit_mlp is plain gradient descent", 1, check_fit_mlp_steps,
              visibility="hidden", hint="Update every parameter with params[k] - lr * grad[k], "
                                        "exactly n_iter times."),
        Check("numpy-only", "NumPy only, no torch", 1, check_numpy_only),
    ),
)
