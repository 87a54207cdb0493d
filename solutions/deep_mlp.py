"""deep-mlp: spec and checks (instructor only; runs in the grader's process).

Course exercise: build the network with 3 or more layers and try to reach a
test accuracy above 93 %. Fully connected layers only. The student may
choose the training settings in TRAINING, within the caps below.
"""

from __future__ import annotations

from grader.course import (
    Assignment,
    Budget,
    BudgetCaps,
    Check,
    ImageClassification,
    Limits,
    ModelRule,
    ModelScore,
    TrainingDict,
)

SEED = 93
DATASET = "mnist"  # or "fashion-mnist": the targets below follow the dataset
TARGETS = {"mnist": (0.80, 0.93), "fashion-mnist": (0.70, 0.85)}  # (no credit at or below, full credit at)
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=10, batch_size=64)
CAPS = BudgetCaps(max_epochs=10, batch_range=(16, 1024))
PRETRAINED_LIMIT = 0.5
THREE_LAYERS = ("min-linear-layers", {"minimum": 3})
FULLY_CONNECTED = ("fully-connected-only", {})

SETUP = ImageClassification(dataset=DATASET, seed=SEED)

ASSIGNMENT = Assignment(
    id="deep-mlp",
    title="A deeper MLP on MNIST",
    notebook="deep_mlp.ipynb",
    required_names=("build_model",),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1800, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1, ModelRule(SETUP, "returns-module")),
        Check("three-linear-layers", "at least three Linear layers", 2, ModelRule(SETUP, *THREE_LAYERS)),
        Check("fully-connected", "fully connected layers only", 2, ModelRule(SETUP, *FULLY_CONNECTED)),
        Check("output-shape", "output of shape (B, 10)", 1, ModelRule(SETUP, "output-shape", {"n_outputs": 10})),
        Check("test-accuracy", "test accuracy above 93 % after the grader's training", 4,
              ModelScore(SETUP, TrainingDict(DEFAULT_TRAINING, CAPS), "accuracy",
                         {"floor": TARGETS[DATASET][0], "target": TARGETS[DATASET][1],
                          "pretrained_limit": PRETRAINED_LIMIT},
                         rules=(THREE_LAYERS, FULLY_CONNECTED))),
    ),
)
