"""mlp-1500: spec and checks (instructor only; runs in the grader's process).

Course exercise: a network with two layers, the first with ReLU and 1500
neurons, the second with 10 outputs and softmax; start with learning rate
0.001 and find the best value. The grader builds the student's model, checks
its architecture, then trains it itself with Adam at LEARNING_RATE.
"""

from __future__ import annotations

import math

from grader.assignment import Assignment, Check
from grader.checks.models import (accuracy_outcome, activation_between, exact_linear_stack, output_shape,
                                  parameter_count, returns_module, unusable)
from grader.classification import ImageClassification
from grader.context import CheckContext, StudentError
from grader.models import Budget
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 1500
DATASET = "mnist"  # or "fashion-mnist": the thresholds below follow the dataset
THRESHOLDS = {"mnist": 0.90, "fashion-mnist": 0.80}
LAYERS = [784, 1500, 10]
EPOCHS, BATCH_SIZE, DEFAULT_LR = 5, 64, 1e-3
LR_RANGE = (1e-6, 1.0)
PRETRAINED_LIMIT = 0.5

SETUP = ImageClassification(dataset=DATASET, seed=SEED)


def learning_rate(ctx: CheckContext) -> tuple[float, str]:
    """The student's LEARNING_RATE, or the default and why it was used."""
    try:
        value = ctx.get("LEARNING_RATE")
    except StudentError as exc:
        return DEFAULT_LR, f"{exc.message}; trained with lr {DEFAULT_LR:g} instead"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not LR_RANGE[0] <= value <= LR_RANGE[1]:
        return DEFAULT_LR, (f"LEARNING_RATE = {value!r} is not a number in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}]; "
                            f"trained with lr {DEFAULT_LR:g} instead")
    return float(value), ""


def check_learning_rate(ctx: CheckContext) -> Outcome:
    lr, problem = learning_rate(ctx)
    if problem:
        return Outcome.failed(problem.split(";")[0])
    return Outcome.passed(f"LEARNING_RATE = {lr:g}; the grader trains with Adam at this rate")


def check_accuracy(ctx: CheckContext) -> Outcome:
    description = SETUP.describe(ctx)
    problem = unusable(description)
    if problem:
        return problem
    lr, note = learning_rate(ctx)
    run = SETUP.train(ctx, Budget(optimizer="adam", lr=lr, epochs=EPOCHS, batch_size=BATCH_SIZE))
    threshold = THRESHOLDS[DATASET]
    return accuracy_outcome(run, ctx.resources, floor=threshold, target=threshold,
                            pretrained_limit=PRETRAINED_LIMIT, notes=[note] if note else [])


ASSIGNMENT = Assignment(
    id="mlp-1500",
    title="A 1500-unit MLP on MNIST",
    notebook="mlp_1500.ipynb",
    required_names=("build_model", "LEARNING_RATE"),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1800, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1,
              lambda ctx: returns_module(SETUP.describe(ctx))),
        Check("linear-layers", "two Linear layers 784 → 1500 → 10", 2,
              lambda ctx: exact_linear_stack(SETUP.describe(ctx), LAYERS)),
        Check("parameter-count", "1,192,510 parameters", 2,
              lambda ctx: parameter_count(SETUP.describe(ctx), LAYERS)),
        Check("output-shape", "output of shape (B, 10)", 1,
              lambda ctx: output_shape(SETUP.describe(ctx), 10)),
        Check("relu", "ReLU between the layers", 1, lambda ctx: activation_between(SETUP.describe(ctx), "relu")),
        Check("learning-rate", "LEARNING_RATE is set", 1, check_learning_rate),
        Check("test-accuracy", "test accuracy after the grader's training", 2, check_accuracy),
    ),
)
