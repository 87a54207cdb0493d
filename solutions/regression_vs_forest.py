"""regression-vs-forest: spec and checks (instructor only; runs in the grader's process).

Course exercise: repeat the same for a regression problem: one output in the
last layer, with no activation; use the MSE or MAE loss. Compare results with
a baseline linear / random forest model. How many parameters does your model
have as compared to the number of samples?

The data is California housing (scikit-learn's 8 features, target in 100k$),
split with train_test_split(test_size=0.33, random_state=42) and standardised
on the training split. The grader fits LinearRegression and a random forest
itself (once per data version, see grader.ml.baselines), trains the student's
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
                                  not_a_number, output_squashing, regression_output_shape, returns_module)
from grader.context import CheckContext
from grader.errors import StudentError
from grader.ml.budget import Budget, BudgetCaps, student_budget
from grader.ml.metrics import mean_squared_error, regression_details
from grader.ml.recipes import TabularRegression, comparison_table
from grader.ml.task import FEATURE_STYLES, ModelTask
from grader.ml.training import TrainingRun
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 8
N_FEATURES = 8
FACTORY = "build_regressor"
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=40, batch_size=64, loss="mse")
CAPS = BudgetCaps(max_epochs=50, batch_range=(32, 1024), losses=("mse", "mae"))
FOREST_FACTOR = 1.4  # full credit at or below this multiple of the random forest's test MSE
PARAMS_RTOL = 0.01  # PARAMS_PER_SAMPLE may be rounded to 1 %

SETUP = TabularRegression(seed=SEED, task=ModelTask(kind="regression", n_outputs=1, factory=FACTORY,
                                                    factory_args=(N_FEATURES,), max_params=1_000_000,
                                                    max_train_seconds=300.0, input_styles=FEATURE_STYLES))


def trained(ctx: CheckContext) -> tuple[TrainingRun, list[str]] | Outcome:
    """The grader's training run and notes for the messages, or why there is none. A squashed output is
    trained all the same: its MSE shows what the activation costs."""
    choice = student_budget(ctx, default=DEFAULT_TRAINING, caps=CAPS)
    run = SETUP.trained(ctx, choice)
    if isinstance(run, Outcome):
        return run
    notes = list(choice.notes)
    if output_squashing(SETUP.describe(ctx)):
        notes.append("the activation on the output limits what the model can predict (see no-output-activation)")
    return run, notes


def check_beats_linear(ctx: CheckContext) -> Outcome:
    found = trained(ctx)
    if isinstance(found, Outcome):
        return found
    run, notes = found
    data = SETUP.data(ctx)
    return mse_below(run, data, baseline_mse=baseline_mse(ctx, "linear"), baseline="linear regression", notes=notes)


def check_close_to_forest(ctx: CheckContext) -> Outcome:
    found = trained(ctx)
    if isinstance(found, Outcome):
        return found
    run, notes = found
    data = SETUP.data(ctx)
    details = {"table": comparison_table(run, data, SETUP.baselines(ctx), SETUP.describe(ctx).total_params),
               **regression_details(run, data)}
    return mse_near(run, data, reference_mse=baseline_mse(ctx, "forest"), factor=FOREST_FACTOR,
                    floor_mse=baseline_mse(ctx, "linear"), reference="the random forest",
                    floor="linear regression", notes=notes, **details)


def baseline_mse(ctx: CheckContext, name: str) -> float:
    return mean_squared_error(getattr(SETUP.baselines(ctx), name).predictions, SETUP.data(ctx).test_y)


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
    data = SETUP.data(ctx)
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
              SETUP.structure_check(lambda description: returns_module(description, FACTORY))),
        Check("output-shape", "one output: shape (B, 1)", 1,
              SETUP.structure_check(lambda description: regression_output_shape(description, FACTORY))),
        Check("no-output-activation", "no activation on the output", 2,
              SETUP.structure_check(lambda description: no_output_activation(description, FACTORY))),
        Check("beats-linear", "test MSE below linear regression's", 2, check_beats_linear),
        Check("close-to-forest", f"test MSE within {FOREST_FACTOR:g} × the random forest's", 4,
              check_close_to_forest),
        Check("n-params", "N_PARAMS is the model's parameter count", 1, check_n_params),
        Check("params-per-sample", "PARAMS_PER_SAMPLE is parameters per training sample", 1,
              check_params_per_sample),
    ),
)
