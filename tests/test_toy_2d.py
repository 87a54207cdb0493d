"""toy-2d: three toy tasks on points of the plane, one network each (structure fast, training e2e).

The grader draws its own points (grader/ml/toy.py), calls build_model(task) for prod, xor and quadrants,
trains each network with TRAINING[task] and scores it on test points whose targets never leave it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import SOLUTIONS, TEMPLATES, assignment, check, grade, load, save, scores, with_definition
from grader.checks.budget import student_budget
from grader.checks.catalog import ModelScore, TrainingDict, budget_from_bundle, budget_to_bundle
from grader.errors import StudentError
from grader.ml.budget import Budget, BudgetCaps
from grader.ml.metrics import two_class_scores
from grader.ml.toy import TOY_TASKS, grid_points, toy_field, toy_task_data
from grader.ml.training import checked_run
from grader.reports import plots
from grader.states import StudentErrorKind

SOLUTION = SOLUTIONS / "toy_2d.ipynb"
STRUCTURE = {"prod-output": 1, "prod-no-output-activation": 1, "xor-output": 1, "quadrants-output": 1}
TRAINED = ("prod-mse", "xor-accuracy", "quadrants-accuracy")


@pytest.fixture(scope="module")
def spec():
    return assignment("toy-2d")


def without_training(spec):
    """The spec without its training checks: structure checks in seconds."""
    return dataclasses.replace(spec, checks=tuple(c for c in spec.checks if not isinstance(c.run, ModelScore)))


def only(spec, *check_ids):
    return dataclasses.replace(spec, checks=tuple(c for c in spec.checks if c.id in check_ids))


def graded(spec, options, tmp_path, name: str, build_model: str, training: str | None = None):
    notebook = with_definition(load(SOLUTION), "build_model", build_model)
    if training is not None:
        notebook = with_definition(notebook, "TRAINING", training)
    return grade(save(notebook, tmp_path / f"{name}.ipynb"), spec, options)


def network(hidden: str, *, xor_head: str = "", quadrants_outputs: int = 4) -> str:
    """build_model(task) as a student writes it: `hidden` layers (e.g. "nn.Linear(2, 6), nn.ReLU()")."""
    return f'''
def build_model(task):
    outputs = {{"prod": 1, "xor": 1, "quadrants": {quadrants_outputs}}}[task]
    width = 2
    layers = [{hidden}]
    for layer in layers:
        width = getattr(layer, "out_features", width)
    head = [nn.Linear(width, outputs)]
    if task == "xor" and {xor_head!r}:
        head.append({xor_head or "None"})
    return nn.Sequential(*layers, *head)
'''


COURSE_NET = network("nn.Linear(2, 6), nn.ReLU()")  # the course's 2-6-1 ReLU network (2-6-4 for quadrants)


# --------------------------------------------------------------------------
# The grader's data and the pieces the assignment added to the ML side (no kernel)


def test_each_task_draws_its_own_points_from_the_seed_and_keeps_its_test_targets():
    first = {name: toy_task_data(name, seed=5, n_train=100, n_test=200, grid_side=11) for name in TOY_TASKS}
    again = toy_task_data("xor", seed=5, n_train=100, n_test=200, grid_side=11)
    other_seed = toy_task_data("xor", seed=6, n_train=100, n_test=200, grid_side=11)
    assert np.array_equal(first["xor"].test_x, again.test_x) and not np.array_equal(first["xor"].test_x,
                                                                                   other_seed.test_x)
    assert not np.array_equal(first["xor"].train_x, first["quadrants"].train_x)  # fresh points per task
    assert not np.array_equal(first["xor"].train_x, first["xor"].test_x)
    for data in first.values():
        assert data.train_x.shape == (100, 2) and data.test_x.shape == (200, 2)
        assert data.train_x.dtype == np.float32 and np.abs(data.train_x).max() <= 1
        assert data.extra_x.shape == (121, 2)
        assert sorted(data.files()) == ["extra_x", "test_x", "train_x", "train_y"]  # no test targets
    prod, xor, quadrants = first["prod"], first["xor"], first["quadrants"]
    assert np.allclose(prod.test_y, prod.test_x[:, 0] * prod.test_x[:, 1])
    assert np.array_equal(xor.test_y, (xor.test_x[:, 0] * xor.test_x[:, 1] < 0).astype(int))
    corners = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]], dtype=np.float32)
    assert TOY_TASKS["quadrants"].rule(corners).tolist() == [0, 1, 2, 3]
    assert set(np.unique(quadrants.train_y)) == {0, 1, 2, 3}


def test_a_binary_output_becomes_two_scores_whose_argmax_is_the_prediction():
    assert two_class_scores(np.array([[0.2], [0.7]]), "probability").argmax(axis=1).tolist() == [0, 1]
    assert two_class_scores(np.array([[-3.0], [0.5]]), "logit").argmax(axis=1).tolist() == [0, 1]


def test_the_trainer_record_must_hold_the_extra_outputs_it_was_asked_for():
    budget = Budget(optimizer="adam", lr=0.01, epochs=1, batch_size=10)
    answer = {"history": {"train_loss": [0.5], "train_accuracy": [0.5]}, "epochs_run": 1, "steps": 10,
              "test_outputs": [np.zeros((4, 1), np.float32)] * 2, "stopped_early": None}
    run = checked_run({**answer, "extra_outputs": np.ones((9, 1), np.float32)}, budget=budget, n_train=100,
                      n_test=4, n_outputs=1, n_extra=9)
    assert run.extra_outputs.shape == (9, 1) and checked_run(answer, budget=budget, n_train=100, n_test=4,
                                                            n_outputs=1).extra_outputs is None
    for extra in (None, np.ones((8, 1), np.float32), np.ones((9, 1), np.int64)):
        with pytest.raises(StudentError, match="extra inputs"):
            checked_run({**answer, "extra_outputs": extra}, budget=budget, n_train=100, n_test=4, n_outputs=1,
                        n_extra=9)


class Notebook:
    """A CheckContext's `get` over a dict of notebook names."""

    def __init__(self, **values):
        self.values = values

    def get(self, name):
        if name not in self.values:
            raise StudentError(f"{name} is not defined", kind=StudentErrorKind.MISSING)
        return self.values[name]


def test_training_per_task_reads_one_key_and_round_trips_through_the_bundle():
    default = Budget(optimizer="adam", lr=0.01, epochs=50, batch_size=32)
    caps = BudgetCaps(max_epochs=100, batch_range=(8, 1000))
    source = TrainingDict(default, caps, key="xor")
    assert budget_from_bundle(budget_to_bundle(source)) == source
    assert "key" not in budget_to_bundle(TrainingDict(default, caps))  # whole-dict bundles stay as they were
    chosen = source.choose(Notebook(TRAINING={"xor": {"epochs": 500, "lr": 0.02}, "prod": {"lr": 1.0}}))
    assert chosen.budget == Budget(optimizer="adam", lr=0.02, epochs=100, batch_size=32)
    assert chosen.notes == ["TRAINING['xor']['epochs'] = 500 is outside [1, 100]: the grader used 100"]
    assert source.choose(Notebook(TRAINING={"prod": {}})).budget == default  # a task left out: the defaults
    assert source.choose(Notebook()).budget == default
    assert student_budget(Notebook(TRAINING={"xor": "fast"}), default=default, caps=caps,
                          key="xor").refused == "TRAINING['xor'] is a str, not a dict"
    assert source.choose(Notebook(TRAINING=[1, 2])).refused.startswith("TRAINING is a list, not a dict")


def test_the_field_is_drawn_and_odd_data_draws_nothing():
    data = toy_task_data("quadrants", seed=1, n_train=50, n_test=10, grid_side=5)
    outputs = np.eye(4)[TOY_TASKS["quadrants"].rule(grid_points(5))]
    field = toy_field("quadrants", data, outputs)
    assert field["classes"][0] == "I: x1>0, x2>0" and len(field["values"]) == 5 and len(field["points"]["x"]) == 50
    assert plots.field_chart(field).startswith("data:image/png;base64,")
    prod = toy_field("prod", toy_task_data("prod", seed=1, n_train=50, n_test=10, grid_side=5),
                     np.full((25, 1), np.nan))
    assert plots.field_chart(prod) is not None  # a diverged model: an empty map, the points still drawn
    for junk in (None, {"x": [1, 2], "y": [1], "values": [[1]]}, {**field, "values": "x"}, {**field, "x": ["a"]}):
        assert plots.field_chart(junk) is None


# --------------------------------------------------------------------------
# Fast: structure only, or a model the grader does not train


def test_the_template_earns_zero(spec, options):
    result = grade(TEMPLATES / "toy_2d.ipynb", spec, options)
    assert result.score == 0
    assert all(c.status == "failed" for c in result.checks), [(c.id, c.message) for c in result.checks]
    assert check(result, "xor-output").message == \
        "build_model is not implemented yet: it still raises NotImplementedError"


def test_the_solution_passes_its_structure_checks_and_says_what_it_detected(spec, options):
    result = grade(SOLUTION, without_training(spec), options)
    assert scores(result) == STRUCTURE
    assert "returns a probability (its output stays within [0, 1]): trained with binary cross-entropy" in \
        check(result, "xor-output").message
    assert check(result, "quadrants-output").message.endswith("returns logits")


def test_a_logit_for_xor_is_detected_and_a_softmax_for_quadrants_too(spec, options, tmp_path):
    source = network("nn.Linear(2, 8), nn.ReLU()").replace("return nn.Sequential(*layers, *head)", (
        "model = nn.Sequential(*layers, *head)\n"
        "    return nn.Sequential(model, nn.Softmax(dim=1)) if task == 'quadrants' else model"))
    result = graded(without_training(spec), options, tmp_path, "styles", source)
    assert scores(result) == STRUCTURE
    assert "returns a logit (no sigmoid on its output): trained with binary cross-entropy with logits" in \
        check(result, "xor-output").message
    assert check(result, "quadrants-output").message.endswith("returns probabilities")


def test_one_output_for_quadrants_is_not_trained_and_two_for_xor_fail_their_check(spec, options, tmp_path):
    source = network("nn.Linear(2, 6), nn.ReLU()", quadrants_outputs=1).replace(
        '"xor": 1,', '"xor": 2,')
    result = graded(only(spec, "xor-output", "quadrants-output", "quadrants-accuracy", "xor-accuracy"), options,
                    tmp_path, "outputs", source)
    assert scores(result) == {"xor-output": 0, "quadrants-output": 0, "quadrants-accuracy": 0, "xor-accuracy": 0}
    assert check(result, "quadrants-output").message == (
        "the forward pass failed on a batch of inputs (features input: ValueError: forward returned (16, 1), "
        "expected shape (16, 4))")
    for check_id in ("quadrants-accuracy", "xor-accuracy"):
        accuracy = check(result, check_id)
        assert accuracy.status == "skipped" and accuracy.message == \
            "not trained: its forward pass failed on the grader's inputs"


def test_an_activation_on_the_regression_output_is_caught(spec, options, tmp_path):
    source = network("nn.Linear(2, 6), nn.ReLU()").replace(
        "return nn.Sequential(*layers, *head)",
        "return nn.Sequential(*layers, *head, *([nn.Sigmoid()] if task == 'prod' else []))")
    result = graded(only(spec, "prod-output", "prod-no-output-activation"), options, tmp_path, "sigmoid", source)
    assert scores(result) == {"prod-output": 1, "prod-no-output-activation": 0}
    assert check(result, "prod-no-output-activation").message.startswith(
        "the output passes through a sigmoid (nn.Sigmoid, the last module of the model)")


def test_a_training_setting_the_grader_cannot_use_is_refused_for_that_task_only(spec, options, tmp_path):
    result = graded(only(spec, "xor-accuracy"), options, tmp_path, "refused", COURSE_NET,
                    training='TRAINING = {"xor": "fast", "prod": {"lr": 0.02}}')
    accuracy = check(result, "xor-accuracy")
    assert accuracy.score == 0 and accuracy.message == (
        "not trained: TRAINING['xor'] is a str, not a dict; the grader never replaces a setting with one of "
        "its own")


def test_a_wrong_task_name_in_build_model_is_named_in_the_message(spec, options, tmp_path):
    source = '''
def build_model(task):
    if task == "prod":
        return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 1))
    if task == "quadrant":
        return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 4))
'''
    result = graded(only(spec, "quadrants-output", "quadrants-accuracy"), options, tmp_path, "name", source)
    assert check(result, "quadrants-output").message == \
        'build_model("quadrants") returned a NoneType, not a torch.nn.Module'
    assert check(result, "quadrants-accuracy").message == \
        'build_model("quadrants") returned a NoneType, not a torch.nn.Module'


# --------------------------------------------------------------------------
# End to end: the grader trains three networks


@pytest.mark.e2e
def test_the_solution_gets_full_marks_with_the_same_grade_twice(spec, options):
    first, second = grade(SOLUTION, spec, options), grade(SOLUTION, spec, options)
    assert first.score == first.max_score == 10, [(c.id, c.message) for c in first.checks if c.status != "passed"]
    assert scores(first) == scores(second)
    for check_id in TRAINED:
        assert check(first, check_id).details["series"] == check(second, check_id).details["series"]
        assert check(first, check_id).details["field"] == check(second, check_id).details["field"]
    field = check(first, "xor-accuracy").details["field"]
    assert field["range"] == [0.0, 1.0] and len(field["values"]) == 41 and len(field["points"]["x"]) == 300
    assert check(first, "quadrants-accuracy").details["field"]["classes"] == list(TOY_TASKS["quadrants"].classes)
    assert first.timings["total_s"] < 120


@pytest.mark.e2e
def test_the_course_2_6_1_network_reaches_the_thresholds(spec, options, tmp_path):
    result = graded(spec, options, tmp_path, "course", COURSE_NET)
    assert result.score == result.max_score, [(c.id, c.message) for c in result.checks if c.status != "passed"]


@pytest.mark.e2e
def test_typical_mistakes_earn_partial_credit(spec, options, tmp_path):
    """xor without a hidden layer (a straight line cannot split it) and quadrants with one output."""
    source = '''
def build_model(task):
    if task == "xor":
        return nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())
    outputs = 1
    return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, outputs))
'''
    result = graded(spec, options, tmp_path, "mistakes", source)
    assert scores(result) == {"prod-output": 1, "prod-no-output-activation": 1, "prod-mse": 2, "xor-output": 1,
                              "xor-accuracy": 0, "quadrants-output": 0, "quadrants-accuracy": 0}
    xor = check(result, "xor-accuracy")
    assert xor.details["training"]["test_accuracy"] < 0.7 and "credit starts above 70%" in xor.message
    assert 0 < result.score < result.max_score


@pytest.mark.e2e
def test_a_network_that_computes_the_answer_instead_of_learning_it_earns_nothing_for_it(spec, options, tmp_path):
    """The answer written into forward (no learning at all): every score check sees the model accurate
    before the grader's first step and gives nothing; the shape checks still pass."""
    source = '''
class Formula(nn.Module):
    def __init__(self, task):
        super().__init__()
        self.task = task
        self.layer = nn.Linear(2, 4 if task == "quadrants" else 1)

    def forward(self, x):
        x1, x2 = x[:, :1], x[:, 1:]
        unused = 0 * self.layer(x)
        if self.task == "prod":
            return x1 * x2 + unused
        if self.task == "xor":
            return torch.sigmoid(-100 * x1 * x2) + unused
        return 100 * torch.cat([x1 + x2, x2 - x1, -x1 - x2, x1 - x2], dim=1) + unused

def build_model(task):
    return Formula(task)
'''
    result = graded(spec, options, tmp_path, "formula", source)
    assert {check_id: check(result, check_id).score for check_id in TRAINED} == dict.fromkeys(TRAINED, 0)
    for check_id in TRAINED:
        assert "forward combines 2 values computed from the input" in check(result, check_id).message
    assert result.score == sum(STRUCTURE.values())


# A gate that the grader's first optimizer step opens: closed (the honest part answers) when the grader
# looks before training, open after one Adam step, which moves every parameter by about lr whatever its
# gradient. Behind it, the closed-form answer. A chain of standard layers has no place for a gate.
GATED = {
    "free-parameter": ("self.gate = nn.Parameter(torch.tensor(1e-9))", "torch.clamp(self.gate * 1e6, 0, 1)"),
    "standard-layer": ("self.gate = nn.Linear(2, 1)\n        nn.init.zeros_(self.gate.weight)\n"
                       "        nn.init.constant_(self.gate.bias, 1e-9)",
                       "torch.clamp(self.gate(x) * 1e6, 0, 1)"),
    "buffer-table": ("self.register_buffer('gate', torch.tensor(1.0))", "self.gate"),
}


@pytest.mark.parametrize("how", GATED)
def test_a_gate_the_first_step_opens_earns_nothing_beyond_the_honest_linear_model(spec, options, tmp_path, how):
    setup, gate = GATED[how]
    source = f'''
class Gated(nn.Module):
    def __init__(self, task):
        super().__init__()
        self.task = task
        self.honest = nn.Linear(2, 4 if task == "quadrants" else 1)
        {setup}

    def forward(self, x):
        x1, x2 = x[:, :1], x[:, 1:]
        if self.task == "prod":
            answer = x1 * x2
        elif self.task == "xor":
            answer = 100 * x1 * x2
        else:
            answer = 100 * torch.cat([x1 + x2, x2 - x1, -x1 - x2, x1 - x2], dim=1)
        g = {gate}
        return (1 - g) * self.honest(x) + g * answer

def build_model(task):
    return Gated(task)
'''
    result = graded(spec, options, tmp_path, f"gated-{how}", source)
    for check_id in TRAINED:
        trained = check(result, check_id)
        assert trained.score == 0 and trained.message.startswith("not trained:"), trained.message
    assert result.score <= sum(STRUCTURE.values())  # the honest linear model earns that and more


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("size", [10**8, 10**9])
def test_a_graph_of_a_size_the_student_picks_is_refused_from_its_shapes(spec, options, tmp_path, size):
    # one expand to a student-chosen size took the grader to 3.9 GB, linear in the number: the graph is
    # sized on the meta device first, and nothing real of it runs in the grader's process. (10**9 floats
    # would be 4 GB in the grader; 10**10 proved nothing more, and its mean took the kernel 30 s.)
    source = f'''
class Wide(nn.Module):
    def __init__(self, task):
        super().__init__()
        self.layer = nn.Linear(2, 4 if task == "quadrants" else 1)

    def forward(self, x):
        return self.layer(x.unsqueeze(-1).expand(-1, -1, {size}).mean(-1))

def build_model(task):
    return Wide(task)
'''
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident memory counts from here
    before = _peak_rss_mb()
    result = graded(without_training(spec), options, tmp_path, f"wide-{size}", source)
    grown = _peak_rss_mb() - before
    for shape_check in ("prod-output", "xor-output", "quadrants-output"):
        found = check(result, shape_check)
        assert found.score == 0 and "one sample's forward pass would hold" in found.message, found.message
    assert grown < 500, f"the grader grew by {grown:.0f} MB"
    print(f"\n[integrity] expand to {size:,}: the grader's peak memory grew by {grown:.0f} MB")
