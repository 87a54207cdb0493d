"""cnn-mnist: spec and checks (instructor only; runs in the grader's process).

Course exercise (the CNN section): a convolutional network on MNIST made of
Conv2d, MaxPool2d, Flatten and Linear layers. The student writes build_model()
and may set TRAINING within the caps below. The grader checks that the forward
pass calls at least one standard nn.Conv2d layer, that the network has at most
MAX_PARAMS parameters and outputs (B, 10), shows the feature maps layer by
layer, and trains it itself.

The target was measured on this project's CPU machine with the data root's
MNIST (the first 10,000 training images, the full test set): the reference
Conv2d(1, 16, 3)-ReLU-MaxPool-Conv2d(16, 32, 3)-ReLU-MaxPool-Flatten-Linear
network (12,810 parameters) reaches 97.0-97.7 % test accuracy after 5 epochs
(Adam, batch size 32 to 64, learning rate 1e-3 to 3e-3; 1 to 4 s an epoch on
two cores), so full credit at 96 % leaves it a margin. A network twice as wide
(34,826 parameters) reaches 98 %.
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
    ModelTask,
    TrainingDict,
)

SEED = 2012
DATASET = "mnist"
FLOOR, TARGET = 0.90, 0.96  # test accuracy: no credit at or below FLOOR, full credit at TARGET
MAX_PARAMS = 100_000
DEFAULT_TRAINING = Budget(optimizer="adam", lr=1e-3, epochs=5, batch_size=64)
CAPS = BudgetCaps(max_epochs=5, batch_range=(16, 1024))
PRETRAINED_LIMIT = 0.5
CONVOLUTION = ("uses-convolution", {})
PARAMETER_CAP = ("max-parameters", {"maximum": MAX_PARAMS})

SETUP = ImageClassification(dataset=DATASET, seed=SEED, task=ModelTask(
    kind="classification", n_outputs=10, max_params=20_000_000, max_train_seconds=600.0, max_activation_mb=1024))

ASSIGNMENT = Assignment(
    id="cnn-mnist",
    title="A convolutional network on MNIST",
    notebook="cnn_mnist.ipynb",
    required_names=("build_model",),
    limits=Limits(cell_timeout_s=120, total_timeout_s=1200, memory_mb=4096),
    seed=SEED,
    resources=SETUP.resources,
    checks=(
        Check("returns-module", "build_model returns a module", 1, ModelRule(SETUP, "returns-module")),
        Check("convolution", "at least one nn.Conv2d layer in the forward pass", 2, ModelRule(SETUP, *CONVOLUTION)),
        Check("parameter-count", f"at most {MAX_PARAMS:,} parameters", 1, ModelRule(SETUP, *PARAMETER_CAP)),
        Check("output-shape", "output of shape (B, 10)", 1, ModelRule(SETUP, "output-shape", {"n_outputs": 10})),
        Check("test-accuracy", f"test accuracy above {TARGET:.0%} after the grader's training", 5,
              ModelScore(SETUP, TrainingDict(DEFAULT_TRAINING, CAPS), "accuracy",
                         {"floor": FLOOR, "target": TARGET, "pretrained_limit": PRETRAINED_LIMIT},
                         rules=(CONVOLUTION, PARAMETER_CAP))),
    ),
)
