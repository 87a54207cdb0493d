"""mlp-1500 and deep-mlp: architecture checks (fast) and the grader's training (e2e)."""

from __future__ import annotations

import base64
import dataclasses
import io

import pytest

from conftest import (
    SOLUTIONS,
    TEMPLATES,
    assignment,
    check,
    data_root,
    grade,
    load,
    needs_mnist,
    save,
    scores,
    with_cell,
    with_definition,
)
from grader.ml.datasets import DatasetMissing, load_images

pytestmark = needs_mnist

MLP_SOLUTION = SOLUTIONS / "mlp_1500.ipynb"
DEEP_SOLUTION = SOLUTIONS / "deep_mlp.ipynb"


def without_training(spec):
    """The spec without its accuracy check: architecture checks in seconds."""
    return dataclasses.replace(spec, checks=tuple(c for c in spec.checks if c.id != "test-accuracy"))


@pytest.fixture(scope="module")
def mlp():
    return assignment("mlp-1500")


@pytest.fixture(scope="module")
def deep():
    return assignment("deep-mlp")


SMALL_DEEP = '''
def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 10))
'''


# --------------------------------------------------------------------------
# Fast: no training


def test_templates_earn_zero_and_name_build_model(mlp, deep, options):
    for spec, name in ((mlp, "mlp_1500.ipynb"), (deep, "deep_mlp.ipynb")):
        result = grade(TEMPLATES / name, spec, options)
        assert result.score == 0, name
        assert check(result, "returns-module").message == \
            "build_model is not implemented yet: it still raises NotImplementedError"
        assert all(c.status == "failed" for c in result.checks), [c.message for c in result.checks]


def test_wrong_hidden_size_shows_expected_and_found(mlp, options, tmp_path):
    notebook = with_definition(load(MLP_SOLUTION), "build_model", '''
def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1000), nn.ReLU(), nn.Linear(1000, 10))
''')
    result = grade(save(notebook, tmp_path / "hidden.ipynb"), without_training(mlp), options)
    assert scores(result) == {"returns-module": 1, "linear-layers": 0, "parameter-count": 0, "output-shape": 1,
                              "relu": 1, "learning-rate": 1}
    assert check(result, "linear-layers").message == \
        "expected 2 nn.Linear layers 784 → 1500 → 10, found 2: 784 → 1000 → 10"
    count = check(result, "parameter-count")
    assert count.message.startswith("expected 1,192,510 parameters, found 795,010 (-397,500)")
    rows = count.details["layers"]
    assert rows[0]["expected"] == "Linear(784 → 1500): 1,177,500 parameters"
    assert rows[0]["found"] == "Linear(784 → 1000): 785,000 parameters" and not rows[0]["ok"]


def test_sigmoid_instead_of_relu(mlp, options, tmp_path):
    notebook = with_definition(load(MLP_SOLUTION), "build_model", '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(784, 1500), nn.Linear(1500, 10)
    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x.flatten(1))))

def build_model():
    return Net()
''')
    result = grade(save(notebook, tmp_path / "sigmoid.ipynb"), without_training(mlp), options)
    assert check(result, "relu").message == \
        "between Linear layers 1 and 2 the grader found 'sigmoid', expected 'relu'"
    assert result.score == result.max_score - 1


@pytest.mark.parametrize("style, model, detected", [
    ("tuple", '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(784, 1500)
        self.out = nn.Linear(1500, 10)
    def forward(self, x):
        logits = self.out(F.relu(self.hidden(x.view(-1, 784))))
        probs = F.softmax(logits, dim=1)
        return logits, probs, probs.argmax(dim=1)

def build_model():
    return Net()
''', "returns a tuple of 3; the grader trains on element 0 (logits)"),
    ("softmax", '''
def build_model():
    return nn.Sequential(nn.Linear(784, 1500), nn.ReLU(), nn.Linear(1500, 10), nn.Softmax(dim=1))
''', "takes flat inputs of shape (B, 784), returns probabilities"),
    ("flatten-in-forward", '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 1500)
        self.fc2 = nn.Linear(1500, 10)
    def forward(self, x):
        x = torch.flatten(x, start_dim=1)
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)

def build_model():
    return Net()
''', "takes images of shape (B, 1, 28, 28), returns log-probabilities"),
])
def test_course_styles_are_detected(mlp, options, tmp_path, style, model, detected):
    notebook = with_definition(load(MLP_SOLUTION), "build_model", model)
    result = grade(save(notebook, tmp_path / f"{style}.ipynb"), without_training(mlp), options)
    assert result.score == result.max_score, [c.message for c in result.checks if c.status != "passed"]
    assert detected in check(result, "output-shape").message


def test_two_layers_for_deep_mlp_is_not_trained(deep, options, tmp_path):
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", '''
def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
''')
    result = grade(save(notebook, tmp_path / "shallow.ipynb"), deep, options)
    assert scores(result) == {"returns-module": 1, "three-linear-layers": 0, "fully-connected": 2,
                              "output-shape": 1, "test-accuracy": 0}
    assert check(result, "three-linear-layers").message == \
        "the network needs at least 3 nn.Linear layers; it has 2 (784 → 256 → 10)"
    accuracy = check(result, "test-accuracy")
    assert accuracy.status == "skipped" and accuracy.message.startswith("not trained: the network needs")


def test_conv_net_is_refused(deep, options, tmp_path):
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", '''
def build_model():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 64), nn.ReLU(),
                         nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
''')
    result = grade(save(notebook, tmp_path / "conv.ipynb"), deep, options)
    assert check(result, "fully-connected").message == (
        "this assignment asks for a fully connected network: 0 (Conv2d) is not allowed "
        "(use nn.Linear layers and activations only)")
    assert check(result, "test-accuracy").status == "skipped"
    assert result.score == 1 + 2 + 0 + 1 + 0


def test_huge_model_is_refused_before_allocation(deep, options, tmp_path):
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", '''
def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100_000), nn.Linear(100_000, 100_000),
                         nn.Linear(100_000, 10))
''')
    result = grade(save(notebook, tmp_path / "huge.ipynb"), deep, options)
    assert result.score == 0
    assert check(result, "returns-module").message.startswith(
        "build_model() would create 10,079,600,010 parameters, far more than this assignment allows")
    assert result.execution["problems"] == []


SPOOFS = [
    ("conv-renamed-linear", "deep", """
class Linear(nn.Conv2d):
    __module__ = "torch.nn.modules.linear"

def build_model():
    return nn.Sequential(Linear(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 64), nn.ReLU(),
                         nn.Linear(64, 10))
""", {"returns-module": 1, "three-linear-layers": 0, "fully-connected": 0, "output-shape": 1, "test-accuracy": 0}),
    ("dead-layers", "deep", """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 64), nn.Linear(64, 32), nn.Linear(32, 10)
        self.used = nn.Linear(784, 10)

    def forward(self, x):
        return self.used(x.flatten(1))

def build_model():
    return Net()
""", {"returns-module": 1, "three-linear-layers": 0, "fully-connected": 2, "output-shape": 1, "test-accuracy": 0}),
    ("modules-overridden", "mlp", """
class Net(nn.Sequential):
    def named_modules(self, *args, **kwargs):
        return nn.Sequential(nn.Linear(784, 1500), nn.ReLU(), nn.Linear(1500, 10)).named_modules(*args, **kwargs)

    def parameters(self, recurse=True):
        return nn.Sequential(nn.Linear(784, 1500), nn.ReLU(), nn.Linear(1500, 10)).parameters(recurse)

def build_model():
    return Net(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
""", {"returns-module": 1, "linear-layers": 0, "parameter-count": 0, "output-shape": 1, "relu": 1,
      "learning-rate": 1}),
    ("relu-rebound", "mlp", """
torch.relu = torch.sigmoid
F.relu = torch.sigmoid

def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 1500), nn.Sigmoid(), nn.Linear(1500, 10))
""", {"returns-module": 1, "linear-layers": 2, "parameter-count": 2, "output-shape": 1, "relu": 0,
      "learning-rate": 1}),
]


@pytest.mark.parametrize("name, which, source, expected", SPOOFS, ids=[s[0] for s in SPOOFS])
def test_spoofing_the_layer_report_gains_nothing(mlp, deep, options, tmp_path, name, which, source, expected):
    """Renaming a class, overriding a model's introspection, rebinding torch.relu, or defining layers
    that never run: the grader's helper captured torch's originals before the notebook ran, walks the
    module tree itself, and counts the Linear layers a forward pass runs."""
    spec, path = (deep, DEEP_SOLUTION) if which == "deep" else (without_training(mlp), MLP_SOLUTION)
    result = grade(save(with_definition(load(path), "build_model", source), tmp_path / f"{name}.ipynb"), spec,
                   options)
    assert scores(result) == expected, [(c.id, c.message) for c in result.checks]


def test_test_labels_are_not_readable_from_the_child(deep, options, tmp_path):
    if options.isolation not in ("auto", "bwrap"):
        pytest.skip("only bubblewrap hides the data root from the child")
    snoop = f'''
import glob, os
roots = [{str(data_root())!r}, os.getcwd(), os.path.dirname(os.getcwd()), os.path.expanduser("~"), "/tmp", "/work",
         "/root", "/home", "data", "../shared/data"]
found = [p for root in roots for p in glob.glob(os.path.join(root, "**", "*t10k-labels*"), recursive=True)]
found += [p for p in glob.glob(os.path.join(os.path.dirname(os.getcwd()), "**", "*.npy"), recursive=True)
          if "label" in p or "test_y" in p]
print("FOUND", found)
'''
    result = grade(save(with_cell(load(DEEP_SOLUTION), snoop, after=1), tmp_path / "snoop.ipynb"),
                   without_training(deep), options)
    assert result.execution["problems"] == []
    assert result.score == result.max_score


# --------------------------------------------------------------------------
# End to end: the grader trains the models


@pytest.mark.e2e
def test_reference_solutions_pass(mlp, deep, options):
    for spec, path in ((mlp, MLP_SOLUTION), (deep, DEEP_SOLUTION)):
        result = grade(path, spec, options)
        assert result.score == result.max_score, [c.message for c in result.checks if c.status != "passed"]
        training = check(result, "test-accuracy").details["training"]
        assert training["device"] == "cpu" and training["epochs"] == (5 if spec is mlp else 10)
        assert result.timings["total_s"] < 300


@pytest.mark.e2e
@pytest.mark.parametrize("learning_rate", [1e-4, 3e-3])
def test_any_sensible_learning_rate_passes(mlp, options, tmp_path, learning_rate):
    notebook = with_definition(load(MLP_SOLUTION), "LEARNING_RATE", f"LEARNING_RATE = {learning_rate}")
    result = grade(save(notebook, tmp_path / "lr.ipynb"), mlp, options)
    assert result.score == result.max_score, check(result, "test-accuracy").message


@pytest.mark.e2e
def test_course_styles_get_full_marks_after_training(deep, options, tmp_path):
    styles = {
        "tuple": '''
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(784, 128), nn.Linear(128, 64), nn.Linear(64, 10)])
    def forward(self, x):
        x = x.reshape(len(x), -1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        logits = self.layers[-1](x)
        probs = F.softmax(logits, dim=1)
        return logits, probs, probs.argmax(1)

def build_model():
    return Net()
''',
        "softmax": '''
def build_model():
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10),
                         nn.Softmax(dim=1))
''',
        "flatten-in-forward": SMALL_DEEP,
    }
    for style, source in styles.items():
        notebook = with_definition(load(DEEP_SOLUTION), "build_model", source)
        result = grade(save(notebook, tmp_path / f"{style}.ipynb"), deep, options)
        assert result.score == result.max_score, (style, check(result, "test-accuracy").message)


@pytest.mark.e2e
def test_wrong_hidden_size_still_trains(mlp, options, tmp_path):
    notebook = with_definition(load(MLP_SOLUTION), "build_model", '''
def build_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10))
''')
    result = grade(save(notebook, tmp_path / "hidden.ipynb"), mlp, options)
    assert scores(result)["test-accuracy"] == 2 and result.score == 6


@pytest.mark.e2e
def test_model_that_ignores_its_input_earns_no_accuracy(deep, options, tmp_path):
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", '''
class Noise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(784, 32), nn.Linear(32, 32), nn.Linear(32, 10)
    def forward(self, x):
        return self.c(self.b(self.a(x.flatten(1)))) * 0 + torch.randn(len(x), 10)

def build_model():
    return Noise()
''')
    notebook = with_definition(notebook, "TRAINING", "TRAINING = {'epochs': 1}")
    result = grade(save(notebook, tmp_path / "noise.ipynb"), deep, options)
    accuracy = check(result, "test-accuracy")
    assert accuracy.score == 0 and "its forward pass could not be traced" in accuracy.message


@pytest.mark.e2e
def test_pretrained_model_is_flagged(deep, options, tmp_path):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    images = load_images("mnist", data_root())
    x = torch.from_numpy(images.train_images).float().div(255).flatten(1)
    y = torch.from_numpy(images.train_labels).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for start in range(0, len(x), 100):
        optimizer.zero_grad()
        F.cross_entropy(model(x[start:start + 100]), y[start:start + 100]).backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = base64.b64encode(buffer.getvalue()).decode()
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", f'''
import base64, io
WEIGHTS = "{weights}"

def build_model():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                          nn.Linear(32, 10))
    model.load_state_dict(torch.load(io.BytesIO(base64.b64decode(WEIGHTS))))
    return model
''')
    notebook = with_definition(notebook, "TRAINING", "TRAINING = {'epochs': 1}")
    result = grade(save(notebook, tmp_path / "pretrained.ipynb"), deep, options)
    accuracy = check(result, "test-accuracy")
    assert accuracy.score == 0
    assert accuracy.message.startswith("the model was already trained when build_model() returned")


@pytest.mark.e2e
def test_monkeypatching_torch_gains_nothing(deep, options, tmp_path):
    cheat = '''
import torch
torch.Tensor.argmax = lambda self, *args, **kwargs: torch.zeros(self.shape[0], dtype=torch.long)
torch.eq = lambda a, b, *args, **kwargs: torch.ones_like(a, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
print("Test accuracy: 100.00%")
'''
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", '''
class Lazy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(784, 16), nn.Linear(16, 16), nn.Linear(16, 10)
    def forward(self, x):
        return self.c(self.b(self.a(x.flatten(1)))) * 0.0

def build_model():
    return Lazy()
''')
    notebook = with_definition(notebook, "TRAINING", "TRAINING = {'epochs': 1}")
    result = grade(save(with_cell(notebook, cheat, after=1), tmp_path / "patch.ipynb"), deep, options)
    accuracy = check(result, "test-accuracy")
    assert accuracy.score == 0, accuracy.message
    assert accuracy.details["training"]["test_accuracy"] < 0.2


@pytest.mark.e2e
def test_grading_twice_gives_identical_results(deep, options, tmp_path):
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", SMALL_DEEP)
    notebook = with_definition(notebook, "TRAINING", "TRAINING = {'epochs': 2, 'lr': 0.01, 'batch_size': 5000}")
    path = save(notebook, tmp_path / "twice.ipynb")
    first, second = grade(path, deep, options), grade(path, deep, options)
    assert scores(first) == scores(second)
    assert check(first, "test-accuracy").details["series"] == check(second, "test-accuracy").details["series"]
    assert 0 < check(first, "test-accuracy").score < 4  # partial credit, so the value itself is compared


def test_decoded_dataset_is_cached_and_read_back_identically(tmp_path):
    cold = load_images("mnist", data_root(), cache=tmp_path)
    [folder] = (tmp_path / "datasets").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["classes.json", "test_images.npy", "test_labels.npy",
                                                        "train_images.npy", "train_labels.npy"]
    warm = load_images("mnist", data_root(), cache=tmp_path)
    assert warm.version == cold.version and warm.classes == cold.classes
    (folder / "test_labels.npy").write_bytes(b"damaged")
    again = load_images("mnist", data_root(), cache=tmp_path)  # a damaged cache is not trusted...
    assert again.version == cold.version
    assert load_images("mnist", data_root(), cache=tmp_path).version == cold.version  # ...and is rebuilt
    assert (folder / "test_labels.npy").read_bytes() != b"damaged"


@pytest.mark.e2e
def test_fashion_mnist_is_selectable_with_its_own_targets(deep, options, tmp_path):
    import importlib

    try:
        load_images("fashion-mnist", data_root())
    except DatasetMissing:
        pytest.skip("Fashion-MNIST is not under the data root")
    from grader.checks.recipes import ImageClassification

    module = importlib.import_module(f"grader_course_{deep.source.stem}")  # the loaded spec
    fashion = ImageClassification(dataset="fashion-mnist", seed=module.SEED)
    floor, target = module.TARGETS["fashion-mnist"]

    def on_fashion(check):
        run = check.run
        if hasattr(run, "recipe"):
            run = dataclasses.replace(run, recipe=fashion)
        if "target" in getattr(run, "params", {}):
            run = dataclasses.replace(run, params={**run.params, "floor": floor, "target": target})
        return dataclasses.replace(check, run=run)

    spec = dataclasses.replace(deep, resources=fashion.resources, checks=tuple(map(on_fashion, deep.checks)))
    notebook = with_definition(load(DEEP_SOLUTION), "build_model", SMALL_DEEP)
    notebook = with_definition(notebook, "TRAINING", "TRAINING = {'epochs': 2, 'lr': 0.003}")
    result = grade(save(notebook, tmp_path / "fashion.ipynb"), spec, options)
    accuracy = check(result, "test-accuracy")
    assert "on 60,000 images" in accuracy.message and "85%" in accuracy.message
    assert accuracy.details["confusion_matrix"]["labels"][0] == "T-shirt/top"
    assert 0 < accuracy.score < 4  # about 84 % after two epochs: partial credit on Fashion-MNIST's scale
