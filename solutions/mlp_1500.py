"""mlp-1500: spec and checks (instructor only; runs in the grader's process).

Course exercise: a network with two layers, the first with ReLU and 1500
neurons, the second with 10 outputs and softmax; start with learning rate
0.001 and find the best value. The grader builds the student's model, checks
its architecture, then trains it itself with Adam at LEARNING_RATE.
"""

from __future__ import annotations

from grader.assignment import Assignment, Check
from grader.checks.models import (accuracy_outcome, activation_between, exact_linear_stack, output_shape,
                                  parameter_count, returns_module)
from grader.context import CheckContext
from grader.errors import StudentError
from grader.ml.budget import Budget, BudgetChoice, learning_rate_problem
from grader.ml.recipes import ImageClassification
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 1500
DATASET = "mnist"  # or "fashion-mnist": the thresholds below follow the dataset
THRESHOLDS = {"mnist": 0.90, "fashion-mnist": 0.80}
LAYERS = [784, 1500, 10]
EPOCHS, BATCH_SIZE = 5, 64
PRETRAINED_LIMIT = 0.5

SETUP = ImageClassification(dataset=DATASET, seed=SEED)


def adam_budget(ctx: CheckContext) -> BudgetChoice:
    """Adam at the student's LEARNING_RATE, whatever its value (a rate costs the grader no budget);
    no training when it is not a rate Adam accepts: the grader never picks one of its own."""
    try:
        value = ctx.get("LEARNING_RATE")
    except StudentError as exc:
        return BudgetChoice(None, refused=exc.message)
    problem = learning_rate_problem(value, "LEARNING_RATE")
    if problem:
        return BudgetChoice(None, refused=problem)
    return BudgetChoice(Budget(optimizer="adam", lr=float(value), epochs=EPOCHS, batch_size=BATCH_SIZE))


def check_learning_rate(ctx: CheckContext) -> Outcome:
    choice = adam_budget(ctx)
    if choice.budget is None:
        return Outcome.failed(f"{choice.refused}: set it to the learning rate you found best")
    return Outcome.passed(f"LEARNING_RATE = {choice.budget.lr:g}; the grader trains with Adam at this rate")


def check_accuracy(ctx: CheckContext) -> Outcome:
    run = SETUP.trained(ctx, adam_budget(ctx))
    if isinstance(run, Outcome):
        return run
    threshold = THRESHOLDS[DATASET]
    return accuracy_outcome(run, SETUP.data(ctx), floor=threshold, target=threshold,
                            pretrained_limit=PRETRAINED_LIMIT)


ASSIGNMENT = Assignment(
    id="mlp-1500",
    title="A 1500-unit MLP on MNIST",
    notebook="mlp_1500.ipynb",
    required_names=("build_model", "LEARNING_RATE"),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1800, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1, SETUP.structure_check(returns_module)),
        Check("linear-layers", "two Linear layers 784 → 1500 → 10", 2,
              SETUP.structure_check(lambda description: exact_linear_stack(description, LAYERS))),
        Check("parameter-count", "1,192,510 parameters", 2,
              SETUP.structure_check(lambda description: parameter_count(description, LAYERS))),
        Check("output-shape", "output of shape (B, 10)", 1,
              SETUP.structure_check(lambda description: output_shape(description, 10))),
        Check("relu", "ReLU between the layers", 1,
              SETUP.structure_check(lambda description: activation_between(description, "relu"))),
        Check("learning-rate", "LEARNING_RATE is set", 1, check_learning_rate),
        Check("test-accuracy", "test accuracy after the grader's training", 2, check_accuracy),
    ),
)
