"""deep-mlp: spec and checks (instructor only; runs in the grader's process).

Course exercise: build the network with 3 or more layers and try to reach a
test accuracy above 93 %. Fully connected layers only. The student may
choose the training settings in TRAINING, within the caps below.
"""

from __future__ import annotations

from grader.assignment import Assignment, Check
from grader.checks.models import (accuracy_outcome, fully_connected_only, min_linear_layers, output_shape,
                                  returns_module)
from grader.context import CheckContext
from grader.ml.budget import Budget, BudgetCaps, student_budget
from grader.ml.recipes import ImageClassification
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 93
DATASET = "mnist"  # or "fashion-mnist": the targets below follow the dataset
TARGETS = {"mnist": (0.80, 0.93), "fashion-mnist": (0.70, 0.85)}  # (no credit at or below, full credit at)
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=10, batch_size=64)
CAPS = BudgetCaps(max_epochs=10, batch_range=(16, 1024))
PRETRAINED_LIMIT = 0.5

SETUP = ImageClassification(dataset=DATASET, seed=SEED)


def at_least_three_linear_layers(description):
    return min_linear_layers(description, 3)


def check_accuracy(ctx: CheckContext) -> Outcome:
    choice = student_budget(ctx, default=DEFAULT_TRAINING, caps=CAPS)
    run = SETUP.trained(ctx, choice, rules=(at_least_three_linear_layers, fully_connected_only))
    if isinstance(run, Outcome):
        return run
    floor, target = TARGETS[DATASET]
    return accuracy_outcome(run, SETUP.data(ctx), floor=floor, target=target, pretrained_limit=PRETRAINED_LIMIT,
                            notes=choice.notes)


ASSIGNMENT = Assignment(
    id="deep-mlp",
    title="A deeper MLP on MNIST",
    notebook="deep_mlp.ipynb",
    required_names=("build_model",),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1800, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1, SETUP.structure_check(returns_module)),
        Check("three-linear-layers", "at least three Linear layers", 2,
              SETUP.structure_check(at_least_three_linear_layers)),
        Check("fully-connected", "fully connected layers only", 2, SETUP.structure_check(fully_connected_only)),
        Check("output-shape", "output of shape (B, 10)", 1,
              SETUP.structure_check(lambda description: output_shape(description, 10))),
        Check("test-accuracy", "test accuracy above 93 % after the grader's training", 4, check_accuracy),
    ),
)
