"""mlp-1500: spec and checks (instructor only; runs in the grader's process).

Course exercise: a network with two layers, the first with ReLU and 1500
neurons, the second with 10 outputs and softmax; start with learning rate
0.001 and find the best value. The grader builds the student's model, checks
its architecture, then trains it itself with Adam at LEARNING_RATE, whatever
its value (a learning rate costs no budget); a LEARNING_RATE that is not a
number earns no training credit.
"""

from __future__ import annotations

from grader.course import Assignment, Check, ImageClassification, LearningRate, Limits, ModelRule, ModelScore, ValueRule

SEED = 1500
DATASET = "mnist"  # or "fashion-mnist": the thresholds below follow the dataset
THRESHOLDS = {"mnist": 0.90, "fashion-mnist": 0.80}
LAYERS = [784, 1500, 10]
BUDGET = LearningRate(optimizer="adam", epochs=5, batch_size=64)
PRETRAINED_LIMIT = 0.5

SETUP = ImageClassification(dataset=DATASET, seed=SEED)

ASSIGNMENT = Assignment(
    id="mlp-1500",
    title="A 1500-unit MLP on MNIST",
    notebook="mlp_1500.ipynb",
    required_names=("build_model", "LEARNING_RATE"),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1800, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1, ModelRule(SETUP, "returns-module")),
        Check("linear-layers", "two Linear layers 784 → 1500 → 10", 2,
              ModelRule(SETUP, "exact-linear-stack", {"dims": LAYERS})),
        Check("parameter-count", "1,192,510 parameters", 2, ModelRule(SETUP, "parameter-count", {"dims": LAYERS})),
        Check("output-shape", "output of shape (B, 10)", 1, ModelRule(SETUP, "output-shape", {"n_outputs": 10})),
        Check("relu", "ReLU between the layers", 1, ModelRule(SETUP, "activation-between", {"activation": "relu"})),
        Check("learning-rate", "LEARNING_RATE is set", 1, ValueRule(BUDGET)),
        Check("test-accuracy", "test accuracy after the grader's training", 2,
              ModelScore(SETUP, BUDGET, "accuracy", {"floor": THRESHOLDS[DATASET], "target": THRESHOLDS[DATASET],
                                                     "pretrained_limit": PRETRAINED_LIMIT})),
    ),
)
