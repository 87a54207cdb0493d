"""Score the model the grader trained, not the model the notebook shows.

Each attack an outside review used, written as a notebook of our own: it must earn no more than
the honest version of the same model. The grader builds the model once, rebuilds it from its
traced graph with standard torch only, trains that rebuild in a process that never ran student
code, and scores it where the student's code cannot reach; the student's own forward pass is
compared with the rebuild's on probe inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import SOLUTIONS, assignment, check, grade, load, needs_mnist, save, with_definition
from grader.errors import StudentError
from grader.ml.budget import Budget
from grader.ml.training import checked_run

DEEP_SOLUTION = SOLUTIONS / "deep_mlp.ipynb"
QUICK = "TRAINING = {'epochs': 1, 'batch_size': 256, 'lr': 3e-3}"
TINY = "nn.Flatten(), nn.Linear(784, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 10)"
HONEST = f"def build_model():\n    return nn.Sequential({TINY})\n"


@pytest.fixture(scope="module")
def deep():
    return assignment("deep-mlp")


def graded(deep, options, tmp_path, name: str, source: str, training: str = QUICK):
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", source)
    notebook = with_definition(notebook, "TRAINING", training)
    return grade(save(notebook, tmp_path / f"{name}.ipynb"), deep, options)


def test_accuracy(result) -> float:
    return check(result, "test-accuracy").details.get("training", {}).get("test_accuracy", 0.0)


test_accuracy.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def honest(deep, options, tmp_path_factory):
    return graded(deep, options, tmp_path_factory.mktemp("honest"), "honest", HONEST)


# 1. State the checks never see: a nearest-neighbour memory filled with labels recovered from the gradient
#    of the grader's loss (a backward hook), used at evaluation time.
KNN_FROM_GRADIENTS = f"""
class Remembers(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential({TINY})
        self.seen_x, self.seen_y = [], []
        self.net[-1].register_full_backward_hook(self.labels_from_gradient)

    def labels_from_gradient(self, module, grad_input, grad_output):
        self.seen_y.append(grad_output[0].argmin(dim=1))  # softmax - onehot is most negative at the label

    def forward(self, x):
        flat = x.reshape(x.shape[0], -1)
        out = self.net(x)
        if self.training:
            self.seen_x.append(flat.detach())
        elif self.seen_y:
            memory = torch.cat(self.seen_x[:len(self.seen_y)])
            labels = torch.cat(self.seen_y)
            nearest = torch.cdist(flat, memory).argmin(dim=1)
            out = F.one_hot(labels[nearest], 10).float() * 100
        return out

def build_model():
    return Remembers()
"""

# 2. Two different models: an nn.Linear subclass whose forward is really a convolution passes
#    "fully connected only" and the layer count by its class name.
CONVOLUTION_IN_DISGUISE = """
class Linear(nn.Linear):
    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.features = nn.Conv2d(1, 16, 3, padding=1)

    def forward(self, x):
        if x.dim() == 2 and x.shape[1] == 784:
            x = self.features(x.view(-1, 1, 28, 28)).amax(dim=1).flatten(1)
        return super().forward(x)

def build_model():
    return nn.Sequential(nn.Flatten(), Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
"""

# ... and a factory that can tell its calls apart: the grader calls it once for real.
CALL_COUNTER = f"""
calls = []

def build_model():
    calls.append(1)
    if len(calls) == 1:
        return nn.Sequential({TINY})
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))
"""

# 3. Training outside the budget: the model trains itself on every batch it sees (labels from the
#    loss gradient), many steps per step of the grader's, and swaps in the result.
SELF_TRAINING = f"""
class TrainsItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential({TINY})
        self.shadow = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        self.extra = torch.optim.Adam(self.shadow.parameters(), lr=1e-3)
        self.batch = None
        self.net[-1].register_full_backward_hook(self.train_the_shadow)

    def train_the_shadow(self, module, grad_input, grad_output):
        labels = grad_output[0].argmin(dim=1)
        with torch.enable_grad():
            for _ in range(20):
                self.extra.zero_grad()
                F.cross_entropy(self.shadow(self.batch), labels).backward()
                self.extra.step()

    def forward(self, x):
        if self.training:
            self.batch = x.detach()
            return self.net(x)
        return self.shadow(x) * 1000

def build_model():
    return TrainsItself()
"""


@needs_mnist
@pytest.mark.parametrize("name, source", [("knn-from-gradients", KNN_FROM_GRADIENTS),
                                          ("self-training", SELF_TRAINING)])
def test_state_and_training_outside_the_graph_earn_nothing_more(deep, options, tmp_path, honest, name, source):
    cheat = graded(deep, options, tmp_path, name, source)
    accuracy = check(cheat, "test-accuracy")
    assert accuracy.score <= check(honest, "test-accuracy").score
    assert "not trained" not in accuracy.message, accuracy.message  # rebuilt: the attack ran, and got nothing
    if "no credit for this score" not in accuracy.message:  # or the forward pass gave itself away
        assert test_accuracy(cheat) == pytest.approx(test_accuracy(honest), abs=1e-9), accuracy.message


@needs_mnist
def test_a_forward_pass_that_differs_from_its_layers_earns_no_accuracy(deep, options, tmp_path):
    source = HONEST.replace("def build_model():", "class Shifted(nn.Sequential):\n    def forward(self, x):\n"
                                                   "        return super().forward(x) + 3 * self.training\n\n"
                                                   "def build_model():").replace("nn.Sequential(", "Shifted(")
    result = graded(deep, options, tmp_path, "shifted", source)
    accuracy = check(result, "test-accuracy")
    assert accuracy.score == 0 and "no credit for this score" in accuracy.message, accuracy.message


@needs_mnist
def test_a_convolution_in_a_linear_subclass_is_a_custom_layer(deep, options, tmp_path):
    result = graded(deep, options, tmp_path, "disguise", CONVOLUTION_IN_DISGUISE)
    layers = check(result, "three-linear-layers")
    assert layers.score == 0 and "it has 2 (64 → 32 → 10)" in layers.message, layers.message
    fully = check(result, "fully-connected")
    assert fully.score == 0 and "1 (Linear (custom layer, a subclass of nn.Linear))" in fully.message, fully.message
    assert check(result, "test-accuracy").status == "skipped"


@needs_mnist
def test_the_model_inspected_is_the_model_trained(deep, options, tmp_path, honest):
    """The factory is called once for real (its first call only counts parameters on the meta device):
    the layers the checks read are the ones trained, whatever the factory returns on other calls."""
    result = graded(deep, options, tmp_path, "counter", CALL_COUNTER)
    assert check(result, "three-linear-layers").message == "3 nn.Linear layers (784 → 256 → 128 → 10)"
    assert test_accuracy(result) > 0.85 > test_accuracy(honest)  # the large network was trained, not the tiny one


@needs_mnist
def test_the_course_styles_are_rebuilt_and_match(deep, options, tmp_path):
    """Flatten in forward, a softmax output, a (logits, probs, pred) tuple: rebuilt, matched, trained."""
    styles = {
        "tuple": ("class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                  "        self.a, self.b, self.c = nn.Linear(784, 64), nn.Linear(64, 32), nn.Linear(32, 10)\n"
                  "    def forward(self, x):\n        x = x.view(x.size(0), -1)\n"
                  "        logits = self.c(F.relu(self.b(F.relu(self.a(x)))))\n"
                  "        return logits, F.softmax(logits, dim=1), logits.argmax(dim=1)\n\n"
                  "def build_model():\n    return Net()\n"),
        "softmax": ("def build_model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(),"
                    " nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Softmax(dim=1))\n"),
    }
    for name, source in styles.items():
        result = graded(deep, options, tmp_path, name, source)
        accuracy = check(result, "test-accuracy")
        assert "no credit" not in accuracy.message and test_accuracy(result) > 0.8, (name, accuracy.message)
        assert check(result, "output-shape").score == 1


def test_a_training_record_that_does_not_match_the_budget_is_refused():
    budget = Budget(optimizer="adam", lr=1e-3, epochs=2, batch_size=100)
    outputs = [np.zeros((5, 10), dtype=np.float32)] * 3
    honest = {"epochs_run": 2, "steps": 20, "history": {"train_loss": [1.0, 0.5], "train_accuracy": [0.5, 0.6]},
              "test_outputs": outputs, "stopped_early": None, "wall_s": 1.0, "device": "cpu"}
    assert checked_run(honest, budget=budget, n_train=1000, n_test=5, n_outputs=10).steps == 20
    for forged in ({"steps": 200}, {"epochs_run": 5}, {"test_outputs": outputs[:2]},
                   {"history": {"train_loss": [1.0, 0.5, 0.1], "train_accuracy": []}}):
        with pytest.raises(StudentError, match="did not follow the grader's budget"):
            checked_run({**honest, **forged}, budget=budget, n_train=1000, n_test=5, n_outputs=10)


@needs_mnist
def test_a_learning_rate_is_used_as_given_and_never_replaced(options, tmp_path):
    mlp = assignment("mlp-1500")
    mlp = dataclasses.replace(mlp, checks=tuple(c for c in mlp.checks if c.id in ("learning-rate", "test-accuracy")))
    solution = load(SOLUTIONS / "mlp_1500.ipynb")
    small = ("def build_model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), "
             "nn.Linear(32, 10))\n")
    for value, learning_rate, accuracy in (("5.0", 1, "lr 5"), ("'fast'", 0, "not trained: LEARNING_RATE = 'fast' "
                                                                               "is not a number")):
        notebook = with_definition(with_definition(solution, "LEARNING_RATE", f"LEARNING_RATE = {value}"),
                                   "build_model", small)
        result = grade(save(notebook, tmp_path / f"lr{learning_rate}.ipynb"), mlp, options)
        assert check(result, "learning-rate").score == learning_rate
        found = check(result, "test-accuracy")
        assert found.score == 0 and accuracy in found.message, found.message
