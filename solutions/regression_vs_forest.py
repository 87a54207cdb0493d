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

from grader.course import (
    FEATURE_STYLES,
    Assignment,
    Budget,
    BudgetCaps,
    Check,
    Limits,
    ModelRule,
    ModelScore,
    ModelTask,
    TabularRegression,
    TrainingDict,
)

SEED = 8
N_FEATURES = 8
FACTORY = "build_regressor"
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=40, batch_size=64, loss="mse")
CAPS = BudgetCaps(max_epochs=50, batch_range=(32, 1024), losses=("mse", "mae"))
FOREST_FACTOR = 1.4  # full credit at or below this multiple of the random forest's test MSE
PARAMS_RTOL = 0.01  # PARAMS_PER_SAMPLE may be rounded to 1 %
N_TRAIN, N_TEST = 13_828, 6_812  # train_test_split(test_size=0.33, random_state=42) of the 20,640 rows

SETUP = TabularRegression(seed=SEED, task=ModelTask(kind="regression", n_outputs=1, factory=FACTORY,
                                                    factory_args=(N_FEATURES,), max_params=1_000_000,
                                                    max_train_seconds=300.0, input_styles=FEATURE_STYLES))
TRAINING = TrainingDict(DEFAULT_TRAINING, CAPS)
MADE = f"{FACTORY}({N_FEATURES})"

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
              ModelRule(SETUP, "returns-module", {"factory": FACTORY})),
        Check("output-shape", "one output: shape (B, 1)", 1,
              ModelRule(SETUP, "regression-output-shape", {"factory": FACTORY})),
        Check("no-output-activation", "no activation on the output", 2,
              ModelRule(SETUP, "no-output-activation", {"factory": FACTORY})),
        Check("beats-linear", "test MSE below linear regression's", 2,
              ModelScore(SETUP, TRAINING, "mse-below-baseline", {"baseline": "linear", "title": "linear regression"})),
        Check("close-to-forest", f"test MSE within {FOREST_FACTOR:g} × the random forest's", 4,
              ModelScore(SETUP, TRAINING, "mse-near-baseline",
                         {"reference": "forest", "floor": "linear", "factor": FOREST_FACTOR,
                          "reference_title": "the random forest", "floor_title": "linear regression"})),
        Check("n-params", "N_PARAMS is the model's parameter count", 1,
              ModelRule(SETUP, "declared-parameter-count", {"name": "N_PARAMS", "factory": MADE},
                        declared=("N_PARAMS",))),
        Check("params-per-sample", "PARAMS_PER_SAMPLE is parameters per training sample", 1,
              ModelRule(SETUP, "declared-ratio", {"name": "PARAMS_PER_SAMPLE", "count_name": "N_PARAMS",
                                                  "n_train": N_TRAIN, "n_test": N_TEST, "rtol": PARAMS_RTOL},
                        declared=("PARAMS_PER_SAMPLE",), optional=("N_PARAMS",))),
    ),
)
