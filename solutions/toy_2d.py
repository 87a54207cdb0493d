"""toy-2d: spec and checks (instructor only; runs in the grader's process).

Course exercise: a fully connected network on points of the plane, three tasks
in one notebook: a regression (y = x1 · x2, "prod"), a binary classification
("xor": class 1 where x1 and x2 have different signs) and a 4-class
classification ("quadrants"). The student writes build_model(task) for each
task name, with 2 inputs and the outputs the task needs (1, 1, 4), and may
set TRAINING[task] within the caps below.

The grader draws its own points for each task (uniform in [-1, 1]², 1,000 for
training and 2,000 for testing, from SEED and the task's name: see
grader/ml/toy.py), trains build_model(task) on them with the budget below and
tests it on the other points. The thresholds were measured with the default
budget on a 2-6-1 ReLU network (2-6-4 for quadrants), over 8 initialisations:
test MSE 0.0012-0.0063 on prod (2 of 8 stuck near 0.032), test accuracy
96.0-99.0 % on xor and 98.6-99.5 % on quadrants. A network without a hidden
layer gets MSE 0.114 on prod and 43-47 % on xor (quadrants needs no hidden
layer: 98 %).
"""

from __future__ import annotations

from dataclasses import replace

from grader.course import Assignment, Budget, BudgetCaps, Check, Limits, ModelRule, ModelScore, Toy2D, TrainingDict

SEED = 2026
TASKS = ("prod", "xor", "quadrants")
DEFAULT_TRAINING = Budget(optimizer="adam", lr=0.01, epochs=50, batch_size=32)
CAPS = BudgetCaps(max_epochs=100, batch_range=(8, 1000))
REGRESSION_CAPS = BudgetCaps(max_epochs=100, batch_range=(8, 1000), losses=("mse", "mae"))
MSE = {"floor": 0.06, "target": 0.02, "pretrained_mse": 0.04}  # none at or above floor, full at or below target
XOR = {"floor": 0.70, "target": 0.95, "pretrained_limit": 0.85}  # accuracy: none at or below floor
QUADRANTS = {"floor": 0.70, "target": 0.97, "pretrained_limit": 0.85}

SETUPS = {task: Toy2D.for_task(task, seed=SEED) for task in TASKS}


def made(task: str) -> str:
    return SETUPS[task].task.call  # build_model("xor")


def training(task: str) -> TrainingDict:
    default = replace(DEFAULT_TRAINING, loss="mse") if task == "prod" else DEFAULT_TRAINING
    return TrainingDict(default, REGRESSION_CAPS if task == "prod" else CAPS, key=task)


ASSIGNMENT = Assignment(
    id="toy-2d",
    title="A fully connected network on 2-D toy data: prod, xor, quadrants",
    notebook="toy_2d.ipynb",
    required_names=("build_model",),
    limits=Limits(cell_timeout_s=60, total_timeout_s=600, memory_mb=2048),
    seed=SEED,
    resources=SETUPS["prod"].resources,  # the data of all three tasks
    checks=(
        Check("prod-output", 'build_model("prod"): one output, shape (B, 1)', 1,
              ModelRule(SETUPS["prod"], "regression-output-shape", {"factory": made("prod")})),
        Check("prod-no-output-activation", 'build_model("prod"): no activation on the output', 1,
              ModelRule(SETUPS["prod"], "no-output-activation",
                        {"factory": made("prod"), "targets": "x1 · x2 goes from -1 to 1 here"})),
        Check("prod-mse", f"prod: test MSE at most {MSE['target']:g} after the grader's training", 2,
              ModelScore(SETUPS["prod"], training("prod"), "mse", MSE)),
        Check("xor-output", 'build_model("xor"): one output, a probability or a logit', 1,
              ModelRule(SETUPS["xor"], "binary-output", {"factory": made("xor")})),
        Check("xor-accuracy", f"xor: test accuracy at least {XOR['target']:.0%} after the grader's training", 2,
              ModelScore(SETUPS["xor"], training("xor"), "accuracy", XOR)),
        Check("quadrants-output", 'build_model("quadrants"): four outputs, shape (B, 4)', 1,
              ModelRule(SETUPS["quadrants"], "output-shape", {"n_outputs": 4, "factory": made("quadrants")})),
        Check("quadrants-accuracy",
              f"quadrants: test accuracy at least {QUADRANTS['target']:.0%} after the grader's training", 2,
              ModelScore(SETUPS["quadrants"], training("quadrants"), "accuracy", QUADRANTS)),
    ),
)
