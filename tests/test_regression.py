"""regression-vs-forest: the data, the cached baselines, the checks (fast) and the grader's training (e2e).

Fast tests grade real notebooks either without the MSE checks or with a
TRAINING of one to three epochs; the e2e tests let the grader train with the
assignment's defaults.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import (
    REPO,
    SOLUTIONS,
    TEMPLATES,
    assignment,
    check,
    data_root,
    grade,
    load,
    needs_housing,
    save,
    scores,
    with_definition,
)
from grader.checks.models import declared_parameter_count, declared_ratio
from grader.course.assignment import ResourceRequest
from grader.grading.pipeline import grade_submission
from grader.grading.warm import Warm
from grader.ml import baselines
from grader.ml.datasets import load_california_housing
from grader.ml.description import Layer, ModelDescription
from grader.ml.metrics import mean_squared_error
from grader.ml.task import tabular_task_data

pytestmark = needs_housing

SOLUTION = SOLUTIONS / "regression_vs_forest.ipynb"
TRAINED = ("beats-linear", "close-to-forest")
FULL = {"returns-module": 1, "output-shape": 1, "no-output-activation": 2, "beats-linear": 2,
        "close-to-forest": 4, "n-params": 1, "params-per-sample": 1}


@pytest.fixture(scope="module")
def spec():
    return assignment("regression-vs-forest")


def without_training(spec):
    """The spec without the checks that train: the rest in seconds."""
    return dataclasses.replace(spec, checks=tuple(c for c in spec.checks if c.id not in TRAINED))


def notebook_with(*definitions: tuple[str, str]):
    notebook = load(SOLUTION)
    for name, source in definitions:
        notebook = with_definition(notebook, name, source)
    return notebook


def module(forward: str, layers: str = "self.a, self.b = nn.Linear(n, 32), nn.Linear(32, 1)") -> str:
    return f'''
class Net(nn.Module):
    def __init__(self, n):
        super().__init__()
        {layers}
    def forward(self, x):
        {forward}

def build_regressor(n_features):
    return Net(n_features)
'''


def sequential(*layers: str) -> str:
    return f"def build_regressor(n):\n    return nn.Sequential({', '.join(layers)})\n"


QUICK = ("TRAINING", "TRAINING = {'epochs': 5, 'batch_size': 256, 'lr': 3e-3}")
COUNTED = ("N_PARAMS", ("N_PARAMS = sum(p.numel() for p in build_regressor(8).parameters())\n"
                        "PARAMS_PER_SAMPLE = N_PARAMS / 13828"))


# --------------------------------------------------------------------------
# Data


def test_features_and_split_are_scikit_learns():
    table = load_california_housing(data_root())
    expected = [8.3252, 41.0, 6.984127, 1.023810, 322.0, 2.555556, 37.88, -122.23]
    np.testing.assert_allclose(table.features[0], expected, rtol=1e-6)
    assert table.target[0] == pytest.approx(4.526)
    assert table.features.shape == (20_640, 8) and table.feature_names[0] == "MedInc"

    data = tabular_task_data(table, seed=8)
    assert (len(data.train_x), len(data.test_x)) == (13_828, 6_812)
    assert data.train_x.dtype == data.test_x.dtype == data.train_y.dtype == np.float32
    np.testing.assert_allclose(data.train_x.mean(axis=0), 0, atol=1e-5)  # standardised on the training split
    np.testing.assert_allclose(data.train_x.std(axis=0), 1, atol=1e-4)
    assert abs(data.test_x.mean(axis=0)).max() > 1e-3  # with the training split's mean and scale, not its own
    # the test rows are those of train_test_split(test_size=0.33, random_state=42), in a secret order
    from sklearn.model_selection import train_test_split

    _, _, _, test_y = train_test_split(table.features, table.target, test_size=0.33, random_state=42)
    assert sorted(data.test_y) == sorted(test_y) and not np.array_equal(data.test_y, test_y)


# --------------------------------------------------------------------------
# Baselines: fitted once, then read from memory or disk


@pytest.fixture
def fits(monkeypatch):
    """Counts the baseline fits."""
    calls = []
    fit = baselines._fit

    def counting(*args, **kwargs):
        calls.append(1)
        return fit(*args, **kwargs)

    monkeypatch.setattr(baselines, "_fit", counting)
    yield calls


def test_baselines_are_fitted_once_then_read_from_memory_and_disk(spec, options, tmp_path, fits):
    request = ResourceRequest(data_root=data_root(), cache_dir=tmp_path, device="cpu")
    timings = {}
    for round_ in ("cold", "disk"):  # the second: a new batch worker, with only the disk cache
        started = time.perf_counter()
        found = spec.resources(request).baselines
        timings[round_] = time.perf_counter() - started
        assert found.source == {"cold": "fitted", "disk": "disk"}[round_]
        print(f"baselines {round_}: {found.seconds:.3f} s ({timings[round_]:.3f} s with loading the data)")
    assert len(fits) == 1
    assert timings["disk"] < timings["cold"] / 5
    with Warm() as warm:  # in memory: a process prepares an assignment's resources once
        same_cache = dataclasses.replace(options, cache_dir=tmp_path)
        kept = warm.resources(spec, same_cache)
        assert warm.resources(spec, same_cache) is kept and kept.baselines is kept.baselines
    assert len(fits) == 1

    data = spec.resources(request).data
    linear = mean_squared_error(found.linear.predictions, data.test_y)
    forest = mean_squared_error(found.forest.predictions, data.test_y)
    assert linear == pytest.approx(0.537, abs=0.005)  # scikit-learn's well-known figure for this split
    assert 0.24 < forest < 0.28
    assert found.linear.size == 9
    files = list((tmp_path / "baselines").glob("*.json"))
    assert [f.name for f in files] == [f"{found.key}.json"]
    assert json.loads(files[0].read_text())["key"] == found.key


@pytest.fixture(scope="module")
def good_cache(spec, tmp_path_factory):
    """A cache file as a fit writes it, and what was fitted: each damage below starts from a copy."""
    request = ResourceRequest(data_root=data_root(), cache_dir=tmp_path_factory.mktemp("good"), device="cpu")
    fitted = spec.resources(request).baselines
    assert fitted.source == "fitted"
    return fitted, (request.cache_dir / "baselines" / f"{fitted.key}.json").read_text()


@pytest.mark.parametrize("damage", ["truncated", "tampered", "other-key", "not-json"])
def test_a_damaged_cache_file_is_fitted_again_and_replaced(spec, tmp_path, fits, damage, good_cache):
    first, text = good_cache
    request = ResourceRequest(data_root=data_root(), cache_dir=tmp_path, device="cpu")
    path = tmp_path / "baselines" / f"{first.key}.json"
    path.parent.mkdir()
    record = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "tampered":
        record["models"]["forest"]["predictions"][0] += 1.0
        path.write_text(json.dumps(record))
    elif damage == "other-key":
        record["key"] = "0" * 32
        path.write_text(json.dumps(record))
    else:
        path.write_bytes(b"\x00\xff" * 100)

    again = spec.resources(request).baselines
    assert again.source == "fitted" and len(fits) == 1
    np.testing.assert_array_equal(again.forest.predictions, first.forest.predictions)
    rewritten = json.loads(path.read_text())  # replaced by a good copy
    assert rewritten["key"] == first.key
    assert rewritten["models"]["forest"]["predictions"] == json.loads(text)["models"]["forest"]["predictions"]
    assert spec.resources(request).baselines.source == "disk"


WORKER = """
import sys
from pathlib import Path
from grader.course.assignment import ResourceRequest, find_assignment
spec = find_assignment(Path(sys.argv[1]), "regression-vs-forest")
print(spec.resources(ResourceRequest(Path(sys.argv[2]), Path(sys.argv[3]), "cpu")).baselines.source)
"""


def test_batch_workers_starting_together_fit_once(tmp_path):
    """Separate processes, as `grader batch -j N` spawns: one fits while the others wait for its file."""
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(REPO), str(data_root()), str(tmp_path)],
                                stdout=subprocess.PIPE, text=True) for _ in range(3)]
    sources = sorted(worker.communicate(timeout=120)[0].strip() for worker in workers)
    assert sources == ["disk", "disk", "fitted"]


def test_the_cache_key_follows_the_data_and_the_settings():
    data = tabular_task_data(load_california_housing(data_root()), seed=8)
    key = baselines.cache_key(data, baselines.ForestSettings())
    assert key == baselines.cache_key(data, baselines.ForestSettings(n_jobs=1))  # speed only
    assert key != baselines.cache_key(data, baselines.ForestSettings(n_estimators=10))
    assert key != baselines.cache_key(tabular_task_data(load_california_housing(data_root()), seed=9),
                                      baselines.ForestSettings())  # another test order


def test_a_second_submission_does_not_refit_the_forest(spec, options, tmp_path, fits, monkeypatch):
    quick = dataclasses.replace(options, cache_dir=tmp_path / "cache")
    first = grade(save(notebook_with(QUICK), tmp_path / "first.ipynb"), spec, quick)
    assert len(fits) == 1 and first.score > 0

    # a new batch worker (warm state of its own: nothing in memory), and fitting is not allowed
    monkeypatch.setattr(baselines, "_fit", lambda *a, **k: pytest.fail("the forest was fitted again"))
    with Warm() as warm:
        second = grade_submission(save(notebook_with(QUICK), tmp_path / "second.ipynb"), spec, quick, warm)
    assert scores(second) == scores(first)
    assert check(second, "close-to-forest").details["table"] == check(first, "close-to-forest").details["table"]


# --------------------------------------------------------------------------
# Fast: no training, or a few epochs


def test_template_earns_zero_and_names_what_to_do(spec, options):
    result = grade(TEMPLATES / "regression_vs_forest.ipynb", spec, options)
    assert result.score == 0
    for check_id in ("returns-module", "output-shape", "no-output-activation", *TRAINED):
        assert check(result, check_id).message == \
            "build_regressor is not implemented yet: it still raises NotImplementedError", check_id
    assert check(result, "n-params").message == \
        "N_PARAMS = None is not a number: set it to the number of parameters of build_regressor(8)"
    assert check(result, "params-per-sample").message == \
        "PARAMS_PER_SAMPLE = None is not a number: set it to N_PARAMS divided by the number of training samples"
    assert all(c.status == "failed" for c in result.checks)


def test_parameter_counts_of_the_solution_pass(spec, options):
    result = grade(SOLUTION, without_training(spec), options)
    assert result.score == result.max_score, [c.message for c in result.checks if c.status != "passed"]
    assert check(result, "n-params").message == "N_PARAMS = 4,801, the number of parameters of build_regressor(8)"
    assert check(result, "no-output-activation").message == \
        "no activation on the output: nothing follows the last nn.Linear layer"


def solution_description() -> ModelDescription:
    """What the child reports for the reference network, 8 → 64 → 64 → 1."""
    linears = [Layer(f"{i}", "Linear", "torch.nn.modules.linear", a * b + b, a, b)
               for i, (a, b) in zip((0, 2, 4), ((8, 64), (64, 64), (64, 1)), strict=True)]
    return ModelDescription(is_module=True, class_name="Sequential", layers=tuple(linears), total_params=4801,
                            trainable_params=4801, input_style="flat", output_shape=(5, 1), task="regression")


@pytest.mark.parametrize("n_params, per_sample, expected, message", [
    (4800, 4801 / 13_828, (0, 1), "N_PARAMS = 4,800, but build_regressor(8) has 4,801 parameters (-1)"),
    (4672, 4672 / 13_828, (0, 0.5), ("N_PARAMS = 4,672, but build_regressor(8) has 4,801 parameters (-129) "
                                     "(it looks like the biases were left out)")),
    (4801, 4801 / 20_640, (1, 0), ("PARAMS_PER_SAMPLE = 0.2326, expected 0.3472 (4,801 parameters / 13,828 "
                                   "training samples): it looks like N / 20,640 (all samples, not only the "
                                   "training split)")),
    (4801, 13_828 / 4801, (1, 0), ("PARAMS_PER_SAMPLE = 2.88, expected 0.3472 (4,801 parameters / 13,828 training "
                                   "samples): it looks like the inverse (samples per parameter)")),
    (4801.0, 0.347, (1, 1), "PARAMS_PER_SAMPLE = 0.347: 4,801 parameters for 13,828 training samples"),
    (np.array(4801), np.array([0.3472], dtype=np.float32), (1, 1), ("N_PARAMS = 4,801, the number of parameters "
                                                                    "of build_regressor(8)")),
    ("4801", [0.3472], (0, 0), ("N_PARAMS = '4801' is not a number: set it to the number of parameters of "
                                "build_regressor(8)")),
    (None, 0.3472, (0, 1), ("N_PARAMS = None is not a number: set it to the number of parameters of "
                            "build_regressor(8)")),
])
def test_parameter_counts_say_what_was_found(n_params, per_sample, expected, message):
    description = solution_description()
    count = declared_parameter_count(n_params, description)
    ratio = declared_ratio(per_sample, n_params, description, n_train=13_828, n_test=6_812)
    assert (count.fraction, ratio.fraction) == expected, (count.message, ratio.message)
    assert message in (count.message, ratio.message)
    if n_params == 4672:
        assert ratio.message == ("PARAMS_PER_SAMPLE = 0.3379 is N_PARAMS / 13,828, but N_PARAMS is wrong: the model "
                                 "has 4,801 parameters, so expected 0.3472")


def test_counts_from_numpy_and_torch_cross_the_sandbox_as_numbers(spec, options, tmp_path):
    source = "import numpy as np\nN_PARAMS = torch.tensor(4801)\nPARAMS_PER_SAMPLE = np.float32(4801 / 13828)"
    result = grade(save(notebook_with(("N_PARAMS", source)), tmp_path / "count.ipynb"), without_training(spec),
                   options)
    assert result.score == result.max_score, [c.message for c in result.checks if c.status != "passed"]


SQUASHED = {
    "scaled-sigmoid": (module("return 5 * torch.sigmoid(self.b(F.relu(self.a(x))))"),
                       "something that keeps it within [0, 5] even for inputs scaled up 10,000 times"),
    "sequential-sigmoid": (sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.Linear(32, 1)", "nn.Sigmoid()"),
                           "a sigmoid (nn.Sigmoid, the last module of the model)"),
    "torch-sigmoid-in-forward": (module("return torch.sigmoid(self.b(F.relu(self.a(x))))"),
                                 "a sigmoid (applied in forward after the last nn.Linear layer)"),
    "tanh-method": (module("return self.b(torch.relu(self.a(x))).tanh()"),
                    "a tanh (applied in forward after the last nn.Linear layer)"),
    "relu": (sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.Linear(32, 1)", "nn.ReLU()"),
             "a ReLU (nn.ReLU, the last module of the model)"),
    "softmax": (sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.Linear(32, 1)", "nn.Softmax(dim=1)"),
                "a softmax (nn.Softmax, the last module of the model)"),
    "sigmoid-after-a-module-of-its-own": (
        "class Double(nn.Module):\n    def forward(self, x):\n        return 2 * x\n\n"
        + sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.Linear(32, 1)", "Double()", "nn.Sigmoid()"),
        "nn.Sigmoid, the last module of the model"),
    "sigmoid-without-linear": (module("return torch.sigmoid(torch.relu(x @ self.w) @ self.v)",
                                      ("self.w, self.v = nn.Parameter(torch.randn(n, 16)), "
                                       "nn.Parameter(torch.randn(16, 1))")),
                               ("something that keeps it within [0, 1] even for inputs scaled up 10,000 times, "
                                "like a sigmoid")),
}


@pytest.mark.parametrize("name", SQUASHED)
def test_an_activation_on_the_output_is_named(spec, options, tmp_path, name):
    source, found = SQUASHED[name]
    result = grade(save(notebook_with(("build_regressor", source)), tmp_path / f"{name}.ipynb"),
                   without_training(spec), options)
    activation = check(result, "no-output-activation")
    assert activation.score == 0
    assert activation.message == (f"the output passes through {found}; a regressor's last layer must have no "
                                  "activation, so that it can predict any value (house values here go up to 5)")
    assert check(result, "output-shape").score == 1


UNSQUASHED = {
    "tanh-hidden-layers": sequential("nn.Linear(n, 32)", "nn.Tanh()", "nn.Linear(32, 16)", "nn.Sigmoid()",
                                     "nn.Linear(16, 1)"),
    "layer-norm-before-the-output": sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.LayerNorm(32)",
                                               "nn.Linear(32, 1)"),
    "dropout-and-a-tuple": module("h = self.drop(F.relu(self.a(x)))\n        y = self.b(h)\n        return y, h",
                                  "self.a, self.b, self.drop = nn.Linear(n, 32), nn.Linear(32, 1), nn.Dropout(0.2)"),
}


@pytest.mark.parametrize("name", UNSQUASHED)
def test_models_without_an_output_activation_pass(spec, options, tmp_path, name):
    notebook = notebook_with(("build_regressor", UNSQUASHED[name]), COUNTED)
    result = grade(save(notebook, tmp_path / f"{name}.ipynb"), without_training(spec), options)
    assert result.score == result.max_score, [c.message for c in result.checks if c.status != "passed"]


def test_a_sigmoid_output_is_trained_and_its_mse_shows_the_cost(spec, options, tmp_path):
    source = SQUASHED["torch-sigmoid-in-forward"][0]
    notebook = notebook_with(("build_regressor", source), QUICK,
                             ("N_PARAMS", "N_PARAMS = 321\nPARAMS_PER_SAMPLE = 321 / 13828"))
    result = grade(save(notebook, tmp_path / "sigmoid.ipynb"), spec, options)
    assert scores(result) == {**FULL, "no-output-activation": 0, "beats-linear": 0, "close-to-forest": 0}
    linear = check(result, "beats-linear")
    assert linear.message.startswith("test MSE ")
    assert linear.details["test_mse"] > 1.0  # predictions below 1 for houses worth up to 5
    assert ("not below linear regression's 0.537; the activation on the output limits what the model can "
            "predict (see no-output-activation)") in linear.message
    forest = check(result, "close-to-forest")
    assert "none at or above linear regression's 0.537" in forest.message
    assert forest.details["table"]["rows"][0][0] == "your network"


def test_a_model_worse_than_linear_earns_no_mse_points(spec, options, tmp_path):
    notebook = notebook_with(("TRAINING", "TRAINING = {'epochs': 1, 'lr': 1e-5, 'optimizer': 'sgd'}"))
    result = grade(save(notebook, tmp_path / "worse.ipynb"), spec, options)
    assert scores(result) == {**FULL, "beats-linear": 0, "close-to-forest": 0}
    linear = check(result, "beats-linear")
    assert linear.message.startswith("test MSE ") and "(sgd, lr 1e-05, 1 epoch, batch size 64, mse loss, " \
        "on 13,828 samples), not below linear regression's 0.537" in linear.message
    assert linear.details["test_mse"] > linear.details["linear_regression_mse"]


def test_training_settings_that_cost_budget_are_clamped_and_said(spec, options, tmp_path):
    training = "TRAINING = {'epochs': 2, 'batch_size': 4096, 'lr': 3e-3, 'loss': 'mae', 'momentum': 0.5}"
    notebook = notebook_with(("TRAINING", training))
    result = grade(save(notebook, tmp_path / "caps.ipynb"), spec, options)
    message = check(result, "beats-linear").message
    for note in ("TRAINING['batch_size'] = 4096 is outside [32, 1024]: the grader used 1024",
                 "ignored unknown TRAINING keys: momentum", "adam, lr 0.003, 2 epochs, batch size 1024, mae loss"):
        assert note in message


@pytest.mark.parametrize("training, why", [
    ("{'loss': 'huber'}", "TRAINING['loss'] = 'huber' is not one of mse, mae"),
    ("{'lr': 'fast'}", "TRAINING['lr'] = 'fast' is not a number"),
    ("{'lr': -0.1}", "TRAINING['lr'] = -0.1 is negative"),
    ("{'epochs': None}", "TRAINING['epochs'] = None is not a number"),
    ("[3e-3, 2]", "TRAINING is a list, not a dict"),
])
def test_a_setting_the_grader_cannot_use_is_never_replaced_by_its_own(spec, options, tmp_path, training, why):
    notebook = notebook_with(("TRAINING", f"TRAINING = {training}"))
    result = grade(save(notebook, tmp_path / "refused.ipynb"), spec, options)
    for check_id in ("beats-linear", "close-to-forest"):
        found = check(result, check_id)
        assert found.score == 0 and found.message.startswith(f"not trained: {why}"), found.message


def test_a_flat_output_loses_the_shape_point_but_is_trained(spec, options, tmp_path):
    flat = module("return self.c(F.relu(self.b(F.relu(self.a(x))))).squeeze(-1)",
                  "self.a, self.b, self.c = nn.Linear(n, 64), nn.Linear(64, 64), nn.Linear(64, 1)")
    notebook = notebook_with(("build_regressor", flat), QUICK)
    result = grade(save(notebook, tmp_path / "flat.ipynb"), spec, options)
    shape = check(result, "output-shape")
    assert shape.score == 0 and shape.message == (
        "the output has shape (16,) for a batch of 16 rows, expected (B, 1): keep the last dimension (no .squeeze() "
        "or .view(-1) in forward); the grader trained it anyway")
    assert check(result, "beats-linear").score == 2
    assert check(result, "no-output-activation").score == 2


def test_more_than_one_output_is_not_trained(spec, options, tmp_path):
    notebook = notebook_with(("build_regressor", sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.Linear(32, 3)")))
    result = grade(save(notebook, tmp_path / "three.ipynb"), spec, options)
    assert check(result, "output-shape").message == (
        "the forward pass failed on a batch of feature rows (ValueError: forward returned (16, 3), "
        "expected shape (16, 1))")
    for check_id in TRAINED:
        assert check(result, check_id).status == "skipped"
        assert check(result, check_id).message.startswith("not trained: its forward pass failed")
    assert check(result, "n-params").message == "N_PARAMS = 387, the number of parameters of build_regressor(8)"


def test_test_targets_are_not_readable_from_the_child(spec, options, tmp_path):
    if options.isolation not in ("auto", "bwrap"):
        pytest.skip("only bubblewrap hides the data root from the child")
    snoop = f'''
import glob, os
import numpy as np

def build_regressor(n):
    roots = [{str(data_root())!r}, os.getcwd(), os.path.dirname(os.getcwd()), "/tmp", os.path.expanduser("~")]
    found = []
    for root in roots:
        found += glob.glob(os.path.join(root, "**", "cal_housing*"), recursive=True)
        for path in glob.glob(os.path.join(root, "**", "*.npy"), recursive=True):
            try:
                shape = np.load(path, allow_pickle=False, mmap_mode="r").shape
            except Exception:
                continue
            if shape[:1] == (6812,) and len(shape) == 1:  # test targets would look like this
                found.append(path)
    if found:
        raise ValueError(f"FOUND {{found}}")
    return nn.Sequential(nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
'''
    result = grade(save(notebook_with(("build_regressor", snoop)), tmp_path / "snoop.ipynb"),
                   without_training(spec), options)
    assert result.score == result.max_score, check(result, "returns-module").message


# --------------------------------------------------------------------------
# End to end: the grader trains with the assignment's defaults


@pytest.mark.e2e
def test_reference_solution_earns_full_marks(spec, options):
    result = grade(SOLUTION, spec, options)
    assert scores(result) == FULL, [c.message for c in result.checks if c.status != "passed"]
    forest = check(result, "close-to-forest")
    training = forest.details["training"]
    assert training["device"] == "cpu" and training["epochs"] == 40
    assert training["test_mse"] < 0.33
    rows = forest.details["table"]["rows"]
    assert [row[0] for row in rows] == ["your network", "linear regression", "random forest (100 trees)"]
    assert rows[0][1] < rows[1][1]
    assert len(forest.details["series"]["train_loss"]) == 40 and forest.details["scatter"]["diagonal"] is True
    print(f"solution: test MSE {rows[0][1]:.3f}, linear {rows[1][1]:.3f}, forest {rows[2][1]:.3f}; "
          f"training {training['wall_s']} s, total {result.timings['total_s']} s")
    assert training["wall_s"] < 60


SENSIBLE = {
    "one-hidden-layer-32": [("build_regressor", sequential("nn.Linear(n, 32)", "nn.ReLU()", "nn.Linear(32, 1)"))],
    "tanh-100-50": [("build_regressor", sequential("nn.Linear(n, 100)", "nn.Tanh()", "nn.Linear(100, 50)",
                                                   "nn.Tanh()", "nn.Linear(50, 1)"))],
    "mae-loss": [("TRAINING", "TRAINING = {'loss': 'mae'}")],
    "sgd": [("TRAINING", "TRAINING = {'optimizer': 'sgd', 'lr': 0.01}")],
    "large-batches": [("TRAINING", "TRAINING = {'batch_size': 256, 'lr': 3e-3, 'epochs': 30}")],
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", SENSIBLE)
def test_sensible_small_networks_earn_full_marks(spec, options, tmp_path, name):
    notebook = notebook_with(*SENSIBLE[name], COUNTED)
    result = grade(save(notebook, tmp_path / f"{name}.ipynb"), spec, options)
    assert result.score == result.max_score, check(result, "close-to-forest").message


@pytest.mark.e2e
def test_pretrained_regressor_is_flagged(spec, options, tmp_path):
    import torch
    import torch.nn.functional as F
    from torch import nn

    data = spec.resources(ResourceRequest(data_root=data_root(), cache_dir=options.cache_dir, device="cpu")).data
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(5):
        for start in range(0, len(x), 128):
            optimizer.zero_grad()
            F.mse_loss(model(x[start:start + 128]).reshape(-1), y[start:start + 128]).backward()
            optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = base64.b64encode(buffer.getvalue()).decode()
    notebook = notebook_with(("build_regressor", f'''
import base64, io
WEIGHTS = "{weights}"

def build_regressor(n):
    model = nn.Sequential(nn.Linear(n, 32), nn.ReLU(), nn.Linear(32, 1))
    model.load_state_dict(torch.load(io.BytesIO(base64.b64decode(WEIGHTS))))
    return model
'''), ("TRAINING", "TRAINING = {'epochs': 1}"))
    result = grade(save(notebook, tmp_path / "pretrained.ipynb"), spec, options)
    for check_id in TRAINED:
        assert check(result, check_id).score == 0
        assert check(result, check_id).message.startswith("the model was already trained when it was built")


@pytest.mark.e2e
def test_grading_twice_gives_identical_results(spec, options, tmp_path):
    path = save(notebook_with(QUICK), tmp_path / "twice.ipynb")
    first, second = grade(path, spec, options), grade(path, spec, options)
    assert scores(first) == scores(second)
    assert check(first, "close-to-forest").details["series"] == check(second, "close-to-forest").details["series"]
    assert 0 < check(first, "close-to-forest").score < 4  # partial credit, so the value itself is compared
