"""regression-vs-forest: spec and checks (instructor only; runs in the grader's process).

Course exercise: repeat the same for a regression problem: one output in the
last layer, with no activation; use the MSE or MAE loss. Compare results with
a baseline linear / random forest model. How many parameters does your model
have as compared to the number of samples?

The data is California housing (scikit-learn's 8 features, target in 100k$),
split with train_test_split(test_size=0.33, random_state=42) and standardised
on the training split. The grader fits LinearRegression and a random forest
itself (once per data version, see grader.baselines), trains the student's
build_regressor(8) with its own seed and TRAINING clamped to the caps below,
and compares test MSEs:

- beats-linear: passed when the test MSE is below the linear regression's;
- close-to-forest: full credit at or below FOREST_FACTOR × the forest's test
  MSE, none at or above the linear regression's, linear in the MSE between.

A squashed output (sigmoid, tanh, ...) fails no-output-activation, and the
model is trained anyway: its MSE shows what the activation costs. A model
whose output is not (B, 1) or (B,) cannot be trained, and the MSE checks
are skipped.
"""

from __future__ import annotations

from grader.assignment import Assignment, Check
from grader.checks.models import (declared_parameter_count, declared_ratio, mse_below, mse_near, no_output_activation,
                                  not_a_number, output_squashing, regression_output_shape, returns_module, unusable)
from grader.context import CheckContext, StudentError
from grader.models import (Budget, BudgetCaps, ModelTask, TrainingRun, student_budget, mean_squared_error,
                           regression_details)
from grader.regression import TabularRegression, comparison_table
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 8
N_FEATURES = 8
FACTORY = "build_regressor"
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=40, batch_size=64, loss="mse")
CAPS = BudgetCaps(max_epochs=50, lr_range=(1e-6, 1.0), batch_range=(32, 1024), losses=("mse", "mae"))
FOREST_FACTOR = 1.4  # full credit at or below this multiple of the random forest's test MSE
PARAMS_RTOL = 0.01  # PARAMS_PER_SAMPLE may be rounded to 1 %

SETUP = TabularRegression(seed=SEED, task=ModelTask(kind="regression", n_outputs=1, factory=FACTORY,
                                                    factory_args=(N_FEATURES,), max_params=1_000_000,
                                                    max_train_seconds=300.0))


def trained(ctx: CheckContext) -> tuple[TrainingRun, list[str]] | Outcome:
    """The grader's training run and notes for the messages, or why there is none."""
    description = SETUP.describe(ctx)
    problem = unusable(description, FACTORY)
    if problem:
        return problem
    if description.input_style is None:
        shape = regression_output_shape(description, FACTORY)
        return Outcome.skipped(f"not trained: {shape.message}")
    budget, notes = student_budget(ctx, default=DEFAULT_TRAINING, caps=CAPS)
    if output_squashing(description):
        notes.append("the activation on the output limits what the model can predict (see no-output-activation)")
    return SETUP.train(ctx, budget), notes


def check_beats_linear(ctx: CheckContext) -> Outcome:
    found = trained(ctx)
    if isinstance(found, Outcome):
        return found
    run, notes = found
    resources = ctx.resources
    linear_mse = baseline_mse(resources, "linear")
    return mse_below(run, resources.data, baseline_mse=linear_mse, baseline="linear regression", notes=notes)


def check_close_to_forest(ctx: CheckContext) -> Outcome:
    found = trained(ctx)
    if isinstance(found, Outcome):
        return found
    run, notes = found
    resources = ctx.resources
    details = {"table": comparison_table(run, resources.data, resources.baselines, SETUP.describe(ctx).total_params),
               **regression_details(run, resources.data)}
    return mse_near(run, resources.data, reference_mse=baseline_mse(resources, "forest"), factor=FOREST_FACTOR,
                    floor_mse=baseline_mse(resources, "linear"), reference="the random forest",
                    floor="linear regression", notes=notes, **details)


def baseline_mse(resources, name: str) -> float:
    return mean_squared_error(getattr(resources.baselines, name).predictions, resources.data.test_y)


def check_n_params(ctx: CheckContext) -> Outcome:
    value = ctx.get("N_PARAMS")
    return not_a_number("N_PARAMS", value, f"the number of parameters of {FACTORY}({N_FEATURES})") or \
        declared_parameter_count(value, SETUP.describe(ctx), factory=f"{FACTORY}({N_FEATURES})")


def check_params_per_sample(ctx: CheckContext) -> Outcome:
    value = ctx.get("PARAMS_PER_SAMPLE")
    problem = not_a_number("PARAMS_PER_SAMPLE", value, "N_PARAMS divided by the number of training samples")
    if problem:
        return problem
    try:
        declared = ctx.get("N_PARAMS")
    except StudentError:
        declared = None
    data = ctx.resources.data
    return declared_ratio(value, declared, SETUP.describe(ctx), n_train=len(data.train_y), n_test=len(data.test_y),
                          rtol=PARAMS_RTOL)


ASSIGNMENT = Assignment(
    id="regression-vs-forest",
    title="A neural regressor against linear and random-forest baselines",
    notebook="regression_vs_forest.ipynb",
    required_names=(FACTORY, "N_PARAMS", "PARAMS_PER_SAMPLE"),
    limits=Limits(cell_timeout_s=120, total_timeout_s=900, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_regressor returns a module", 1,
              lambda ctx: returns_module(SETUP.describe(ctx), FACTORY)),
        Check("output-shape", "one output: shape (B, 1)", 1,
              lambda ctx: regression_output_shape(SETUP.describe(ctx), FACTORY)),
        Check("no-output-activation", "no activation on the output", 2,
              lambda ctx: no_output_activation(SETUP.describe(ctx), FACTORY)),
        Check("beats-linear", "test MSE below linear regression's", 2, check_beats_linear),
        Check("close-to-forest", f"test MSE within {FOREST_FACTOR:g} × the random forest's", 4,
              check_close_to_forest),
        Check("n-params", "N_PARAMS is the model's parameter count", 1, check_n_params),
        Check("params-per-sample", "PARAMS_PER_SAMPLE is parameters per training sample", 1,
              check_params_per_sample),
    ),
)
