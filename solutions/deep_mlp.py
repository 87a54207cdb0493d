"""deep-mlp: spec and checks (instructor only; runs in the grader's process).

Course exercise: build the network with 3 or more layers and try to reach a
test accuracy above 93 %. Fully connected layers only. The student may
choose the training settings in TRAINING, within the caps below.
"""

from __future__ import annotations

from grader.assignment import Assignment, Check
from grader.checks.models import (accuracy_outcome, fully_connected_only, min_linear_layers, output_shape,
                                  returns_module, unusable)
from grader.classification import ImageClassification
from grader.context import CheckContext
from grader.models import Budget, BudgetCaps, student_budget
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 93
DATASET = "mnist"  # or "fashion-mnist": the targets below follow the dataset
TARGETS = {"mnist": (0.80, 0.93), "fashion-mnist": (0.70, 0.85)}  # (no credit at or below, full credit at)
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=10, batch_size=64)
CAPS = BudgetCaps(max_epochs=10, lr_range=(1e-6, 1.0), batch_range=(16, 1024))
PRETRAINED_LIMIT = 0.5

SETUP = ImageClassification(dataset=DATASET, seed=SEED)


def check_accuracy(ctx: CheckContext) -> Outcome:
    description = SETUP.describe(ctx)
    problem = unusable(description)
    if problem:
        return problem
    for rule in (min_linear_layers(description, 3), fully_connected_only(description)):
        if rule.fraction < 1:
            return Outcome.skipped(f"not trained: {rule.message}")
    budget, notes = student_budget(ctx, default=DEFAULT_TRAINING, caps=CAPS)
    run = SETUP.train(ctx, budget)
    floor, target = TARGETS[DATASET]
    return accuracy_outcome(run, ctx.resources, floor=floor, target=target, pretrained_limit=PRETRAINED_LIMIT,
                            notes=notes)


ASSIGNMENT = Assignment(
    id="deep-mlp",
    title="A deeper MLP on MNIST",
    notebook="deep_mlp.ipynb",
    required_names=("build_model",),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1800, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1,
              lambda ctx: returns_module(SETUP.describe(ctx))),
        Check("three-linear-layers", "at least three Linear layers", 2,
              lambda ctx: min_linear_layers(SETUP.describe(ctx), 3)),
        Check("fully-connected", "fully connected layers only", 2,
              lambda ctx: fully_connected_only(SETUP.describe(ctx))),
        Check("output-shape", "output of shape (B, 10)", 1,
              lambda ctx: output_shape(SETUP.describe(ctx), 10)),
        Check("test-accuracy", "test accuracy above 93 % after the grader's training", 4, check_accuracy),
    ),
)
