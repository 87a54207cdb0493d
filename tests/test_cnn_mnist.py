"""cnn-mnist: a convolutional network on MNIST (structure fast, the grader's training e2e)."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import SOLUTIONS, TEMPLATES, assignment, check, grade, load, needs_mnist, save, scores, with_definition
from grader.checks.catalog import ModelScore

pytestmark = needs_mnist

SOLUTION = SOLUTIONS / "cnn_mnist.ipynb"
STRUCTURE = {"returns-module": 1, "convolution": 2, "parameter-count": 1, "output-shape": 1}


@pytest.fixture(scope="module")
def spec():
    return assignment("cnn-mnist")


def without_training(spec):
    return dataclasses.replace(spec, checks=tuple(c for c in spec.checks if not isinstance(c.run, ModelScore)))


def graded(spec, options, tmp_path, name: str, build_model: str, training: str | None = None):
    notebook = with_definition(load(SOLUTION), "build_model", build_model)
    if training is not None:
        notebook = with_definition(notebook, "TRAINING", training)
    return grade(save(notebook, tmp_path / f"{name}.ipynb"), spec, options)


# --------------------------------------------------------------------------
# Fast: structure only, or models the grader refuses to train


def test_the_template_earns_zero(spec, options):
    result = grade(TEMPLATES / "cnn_mnist.ipynb", spec, options)
    assert result.score == 0
    assert all(c.status == "failed" for c in result.checks), [(c.id, c.message) for c in result.checks]
    assert check(result, "convolution").message == \
        "build_model is not implemented yet: it still raises NotImplementedError"


def test_the_solution_shows_its_feature_maps_layer_by_layer(spec, options):
    result = grade(SOLUTION, without_training(spec), options)
    assert scores(result) == STRUCTURE
    convolution = check(result, "convolution")
    assert convolution.message == "2 nn.Conv2d layers in the forward pass (0, 3)"
    table = convolution.details["table"]
    assert table["columns"] == ["layer", "type", "output shape", "parameters"]
    assert [row[:3] for row in table["rows"]] == [
        ["input", "", "(1, 28, 28)"], ["0", "Conv2d(1 → 16, kernel 3)", "(16, 26, 26)"],
        ["1", "ReLU", "(16, 26, 26)"], ["2", "MaxPool2d(2)", "(16, 13, 13)"],
        ["3", "Conv2d(16 → 32, kernel 3)", "(32, 11, 11)"],
        ["4", "ReLU", "(32, 11, 11)"], ["5", "MaxPool2d(2)", "(32, 5, 5)"], ["6", "Flatten", "(800,)"],
        ["7", "Linear(800 → 10)", "(10,)"], ["total", "", ""]]
    assert table["rows"][-1][3] == "12,810" and table["rows"][1][3] == "160"
    assert check(result, "parameter-count").message == "12,810 parameters, within this assignment's cap of 100,000"


def test_a_class_with_functions_in_forward_lists_them_too(spec, options, tmp_path):
    source = '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 4)
        return F.log_softmax(self.fc(x.view(x.size(0), -1)), dim=1)

def build_model():
    return Net()
'''
    result = graded(without_training(spec), options, tmp_path, "functional", source)
    assert scores(result) == STRUCTURE
    rows = check(result, "convolution").details["table"]["rows"]
    assert [row[1:3] for row in rows[1:-1]] == [["Conv2d(1 → 8, kernel 5, padding 2)", "(8, 28, 28)"],
                                                ["F.relu", "(8, 28, 28)"], ["F.max_pool2d", "(8, 7, 7)"],
                                                [".view()", "(392,)"], ["Linear(392 → 10)", "(10,)"],
                                                ["F.log_softmax", "(10,)"]]
    assert "returns log-probabilities" in check(result, "output-shape").message


def test_a_network_without_convolution_is_not_trained(spec, options, tmp_path):
    source = '''
def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
'''
    result = graded(spec, options, tmp_path, "mlp", source)
    assert scores(result) == {**STRUCTURE, "convolution": 0, "test-accuracy": 0}
    assert check(result, "convolution").message == (
        "this assignment asks for a convolutional network: the forward pass calls no nn.Conv2d layer. "
        "Use at least one nn.Conv2d layer in forward")
    accuracy = check(result, "test-accuracy")
    assert accuracy.status == "skipped" and accuracy.message.startswith(
        "not trained: this assignment asks for a convolutional network")


def test_a_network_over_the_parameter_cap_is_not_trained_and_shows_where_they_are(spec, options, tmp_path):
    source = '''
def build_model():
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 26 * 26, 128), nn.ReLU(),
                         nn.Linear(128, 10))
'''
    result = graded(spec, options, tmp_path, "big", source)
    assert scores(result) == {**STRUCTURE, "parameter-count": 0, "test-accuracy": 0}
    count = check(result, "parameter-count")
    assert count.message.startswith("2,770,634 parameters, more than this assignment's cap of 100,000 (+2,670,634)")
    assert ["3", "Linear(21632 → 128)", "(128,)", "2,769,024"] in count.details["table"]["rows"]
    assert check(result, "test-accuracy").message.startswith(
        "not trained: 2,770,634 parameters, more than this assignment's cap")


def test_fixed_weights_in_a_buffer_count_against_the_parameter_cap(spec, options, tmp_path):
    # a 3.2 M-value random projection registered as a buffer, read by forward: weights all the same
    source = '''
class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.register_buffer("projection", torch.randn(4 * 26 * 26, 1200))
        self.head = nn.Linear(1200, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(x @ self.projection))

def build_model():
    return Projected()
'''
    result = graded(spec, options, tmp_path, "projected", source)
    count = check(result, "parameter-count")
    assert count.score == 0 and "3,244,800 are values in buffers the forward pass reads" in count.message
    assert check(result, "test-accuracy").score == 0


def test_a_convolution_that_is_called_but_does_not_matter_earns_no_training(spec, options, tmp_path):
    # "a standard Conv2d the forward pass calls", on a plain MLP: its output is multiplied by 0 and added
    source = '''
class Pretend(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.mlp(x + 0.0 * self.conv(x))

def build_model():
    return Pretend()
'''
    result = graded(spec, options, tmp_path, "pretend", source)
    accuracy = check(result, "test-accuracy")
    assert accuracy.score == 0 and accuracy.message.startswith("not trained: forward combines 2 values computed")


def test_huge_activations_are_refused_before_training(spec, options, tmp_path):
    source = '''
def build_model():
    return nn.Sequential(nn.Conv2d(1, 2048, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2048, 10))
'''
    result = graded(spec, options, tmp_path, "wide", source)
    assert scores(result) == {**STRUCTURE, "test-accuracy": 0}
    rows = check(result, "convolution").details["table"]["rows"]
    assert rows[1][2] == "(2048, 28, 28)"
    accuracy = check(result, "test-accuracy")
    assert accuracy.status == "failed" and accuracy.message.startswith("not trained: one training batch of 64 "
                                                                       "would need about ")
    assert accuracy.message.endswith("MB for its activations; the grader allows 1,024 MB (make the layers smaller)")
    assert "training" not in accuracy.details


SPOOFS = [
    ("linear-named-conv2d", '''
class Conv2d(nn.Linear):
    __module__ = "torch.nn.modules.conv"

def build_model():
    return nn.Sequential(nn.Flatten(), Conv2d(784, 64), nn.ReLU(), nn.Linear(64, 10))
''', "the forward pass calls no nn.Conv2d layer. Use"),
    ("conv-never-called", '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.mlp(x)

def build_model():
    return Net()
''', "(conv is defined but never used in forward)"),
    ("conv-subclass-hiding-a-linear", '''
class Conv(nn.Conv2d):
    def forward(self, x):
        return F.linear(x.flatten(1), self.weight.flatten(1)[:, :9].repeat(1, 88)[:, :784])

def build_model():
    return nn.Sequential(Conv(1, 10, 3))
''', "(0 overrides the forward of nn.Conv2d, so it is a custom layer)"),
    ("functional-conv", '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(8, 1, 3, 3) * 0.1)
        self.fc = nn.Linear(8 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(F.conv2d(x, self.kernel).flatten(1))

def build_model():
    return Net()
''', "(F.conv2d in forward does not count)"),
]


@pytest.mark.parametrize("name, source, says", SPOOFS, ids=[s[0] for s in SPOOFS])
def test_something_that_only_looks_like_a_convolution_earns_no_convolution_and_no_training(spec, options,
                                                                                            tmp_path, name, source,
                                                                                            says):
    result = graded(spec, options, tmp_path, name, source)
    convolution, accuracy = check(result, "convolution"), check(result, "test-accuracy")
    assert convolution.score == 0 and says in convolution.message, convolution.message
    assert accuracy.score == 0 and accuracy.status == "skipped" and "training" not in accuracy.details


# --------------------------------------------------------------------------
# End to end: the grader trains the network

SOLUTION_MODEL = '''
def build_model():
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 10))
'''


@pytest.mark.e2e
def test_the_solution_gets_full_marks_within_the_budget(spec, options):
    result = grade(SOLUTION, spec, options)
    assert result.score == result.max_score == 10, [c.message for c in result.checks if c.status != "passed"]
    training = check(result, "test-accuracy").details["training"]
    assert training["epochs"] == 5 and training["test_accuracy"] >= 0.965  # a margin above the 96 % target
    assert result.timings["total_s"] < 300


@pytest.mark.e2e
def test_too_little_training_earns_partial_credit(spec, options, tmp_path):
    result = graded(spec, options, tmp_path, "short", SOLUTION_MODEL,
                    training="TRAINING = {'epochs': 1, 'lr': 2e-3, 'batch_size': 64}")
    accuracy = check(result, "test-accuracy")
    assert 0 < accuracy.score < 5, accuracy.message
    assert "partial credit, full credit at 96%" in accuracy.message
    assert result.score == sum(STRUCTURE.values()) + accuracy.score

