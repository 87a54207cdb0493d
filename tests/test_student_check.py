"""Students check their own work: the bundle leaks nothing, and `check` agrees with `grade`.

`grader check NOTEBOOK` grades a notebook with the student bundle's visible checks (the same
calls, inputs, judges and rules as grading), lists hidden checks as graded after submitting,
and previews the grader's training; `from grader.student import check` does the same in the
student's own kernel.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from conftest import (
    HAVE_MNIST,
    SOLUTIONS,
    TEMPLATES,
    assignment,
    data_root,
    edit_source,
    grade,
    load,
    needs_mnist,
    save,
    with_definition,
)
from grader.checks.catalog import ModelScore, replayable
from grader.cli import main
from grader.course.bundle import AFTER_SUBMITTING, read_bundle
from grader.ml.datasets import DatasetMissing

NAMES = {"gradient-descent": "gradient_descent", "mlp-1500": "mlp_1500", "deep-mlp": "deep_mlp",
         "regression-vs-forest": "regression_vs_forest", "polynomial-overfit": "polynomial_overfit",
         "save-load": "save_load", "toy-2d": "toy_2d", "cnn-mnist": "cnn_mnist"}


def bundle_of(assignment_id: str) -> Path:
    return TEMPLATES / f"{NAMES[assignment_id]}.checks.json"


# --------------------------------------------------------------------------
# The bundle leaks nothing


def answer_lines(solution: Path) -> list[str]:
    """Every non-trivial line between ### BEGIN SOLUTION and ### END SOLUTION."""
    lines, inside = [], False
    for cell in nbformat.read(solution, as_version=4).cells:
        for line in cell.source.splitlines() if cell.cell_type == "code" else []:
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside and len(line.strip()) >= 12 and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def arrays_in(node) -> list[np.ndarray]:
    if isinstance(node, np.ndarray):
        return [node]
    if isinstance(node, dict):
        return [a for v in node.values() for a in arrays_in(v)]
    if isinstance(node, (list, tuple)):
        return [a for v in node for a in arrays_in(v)]
    return []


class Recorder:
    """Runs a hidden check against the reference solution's own functions (in this process), recording
    every input it sends and every answer the solution gives: the values the bundle must not hold."""

    def __init__(self, solution: Path, seed: int):
        self.solution = solution
        self.namespace = self._run_notebook()
        self.seed = seed
        self.values: list = []
        self._memo: dict = {}

    def _run_notebook(self) -> dict:
        namespace: dict = {}
        for cell in nbformat.read(self.solution, as_version=4).cells:
            if cell.cell_type == "code" and "demo" not in cell.metadata.get("tags", []):
                exec(cell.source, namespace)  # the instructor's reference code, not a submission
        return namespace

    def call(self, name, *args, **kwargs):
        answer = self.namespace[name](*args, **kwargs)
        self.values.extend([args, kwargs, answer])
        return answer

    def call_many(self, calls, *, keep_going=False, timeout_s=None):
        return [self.call(c.function, *c.args, **c.kwargs) for c in calls]

    def set(self, name, value):
        self.namespace[name] = value
        self.values.append(value)

    def memo(self, key, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @functools.cached_property
    def local(self):
        """Where child helpers run on the solution's namespace, here, as `grader check` runs them."""
        from grader.student import LocalContext, _Exchange

        self._folder = tempfile.TemporaryDirectory(prefix="grader-recorder-")  # removed with the recorder
        return LocalContext(self.namespace, _Exchange(Path(self._folder.name)), seed=self.seed)

    @property
    def sandbox(self):
        return self.local.sandbox

    def run_child(self, module, function, request, *, what, timeout_s=None):
        self.local.namespace = self.namespace
        answer = self.local.run_child(module, function, request, what=what)
        self.values.extend([dataclasses.asdict(request), answer])
        return answer

    def restart_kernel(self):
        self.namespace = self._run_notebook()

    def rng(self, key):
        import zlib

        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])


@pytest.mark.parametrize("assignment_id", NAMES)
def test_the_bundle_holds_no_reference_code_no_hidden_values_and_no_test_labels(assignment_id):
    text = bundle_of(assignment_id).read_text()
    bundle = read_bundle(bundle_of(assignment_id))
    solution = SOLUTIONS / f"{NAMES[assignment_id]}.ipynb"
    for line in answer_lines(solution):
        assert line not in text and json.dumps(line)[1:-1] not in text, f"reference code in the bundle: {line}"
    spec = assignment(assignment_id)
    hidden = [c for c in spec.checks if c.visibility == "hidden"]
    for entry in bundle["checks"]:
        if entry["visibility"] == "hidden":
            assert set(entry) == {"id", "name", "points", "visibility", "hint"}, entry["id"]
    bundled = arrays_in(bundle)
    recorder = Recorder(solution, spec.seed)
    for check in hidden:
        check.run(recorder)
    secrets = [a for a in arrays_in(recorder.values) if a.size > 2]
    secret_numbers = {float(v) for value in recorder.values for v in _scalars(value)}
    for secret in secrets:
        assert not any(b.shape == secret.shape and np.allclose(b, secret) for b in bundled), "a hidden value leaked"
    assert not secret_numbers & {float(v) for v in _scalars(bundle)}, "a hidden number leaked"
    if (spec.resources is not None and HAVE_MNIST) or assignment_id == "regression-vs-forest":
        try:
            from grader.course.assignment import ResourceRequest

            data = spec.resources(ResourceRequest(data_root(), Path("/tmp/grader-leak-cache"), "cpu"))
        except DatasetMissing:
            return
        tasks = data.values() if isinstance(data, dict) else [data if hasattr(data, "test_y") else data.data]
        for test_y in (task.test_y for task in tasks):  # toy-2d: one dataset per task
            assert not any(len(a) == len(test_y) for a in bundled if a.ndim), "test-sized arrays in the bundle"


def _scalars(node):
    if isinstance(node, float) and node not in (0.0, 1.0):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _scalars(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _scalars(v)


def test_every_visible_check_of_every_assignment_is_in_its_bundle():
    for assignment_id in NAMES:
        spec = assignment(assignment_id)
        bundle = read_bundle(bundle_of(assignment_id))
        replayed = {e["id"] for e in bundle["checks"] if e.get("replay")}
        assert replayed == {c.id for c in spec.checks if c.visibility == "visible" and replayable(c.run)}
        assert all(replayable(c.run) for c in spec.checks if c.visibility == "visible"), assignment_id


# --------------------------------------------------------------------------
# grader check


def student_folder(tmp_path: Path, assignment_id: str, notebook) -> Path:
    """A student's folder: their notebook beside the bundle that came with the template."""
    shutil.copy(bundle_of(assignment_id), tmp_path / bundle_of(assignment_id).name)
    path = tmp_path / f"{NAMES[assignment_id]}.ipynb"
    if isinstance(notebook, Path):
        shutil.copy(notebook, path)
    else:
        save(notebook, path)
    return path


def checked(path: Path, *extra: str) -> dict:
    out = path.parent / "check-out"
    assert main(["check", str(path), "--out", str(out), *extra]) == 0
    return json.loads((out / "result.json").read_text())


def visible(result: dict, *, without_training: bool = True) -> dict:
    spec = assignment(result["assignment"])
    training = {c.id for c in spec.checks if isinstance(c.run, ModelScore)}
    return {c["id"]: (c["status"], c["score"], c["message"]) for c in result["checks"]
            if c["visibility"] == "visible" and not (without_training and c["id"] in training)}


# the fast suite covers one assignment of each kind; the other model assignments (each a training preview or
# three) run with the e2e tests
HEAVY = pytest.mark.e2e


@pytest.mark.parametrize("assignment_id", ["gradient-descent", "regression-vs-forest",
                                           pytest.param("toy-2d", marks=HEAVY)] +
                         ([pytest.param("mlp-1500", marks=HEAVY), "deep-mlp", pytest.param("cnn-mnist", marks=HEAVY)]
                          if HAVE_MNIST else []))
def test_the_solution_passes_its_visible_checks_and_the_template_fails_them(assignment_id, tmp_path, capsys):
    for folder in ("solution", "template"):
        (tmp_path / folder).mkdir()
    name = f"{NAMES[assignment_id]}.ipynb"
    solution = checked(student_folder(tmp_path / "solution", assignment_id, SOLUTIONS / name))
    template = checked(student_folder(tmp_path / "template", assignment_id, TEMPLATES / name))
    for check_id, (status, _, message) in visible(solution).items():
        assert status == "passed", (check_id, message)
    for check_id, (status, score, message) in visible(template).items():
        assert status == "failed" and score == 0, (check_id, message)
    hidden = [c for c in solution["checks"] if c["visibility"] == "hidden"]
    assert all(c["status"] == "skipped" and c["message"] == AFTER_SUBMITTING for c in hidden)
    printed = capsys.readouterr().out
    assert "your final grade can differ" in printed and "visible checks:" in printed


MIXES = {
    "gradient-descent": {
        "correct": lambda nb: nb,
        "sign-error": lambda nb: edit_source(nb, "linear_grad", "residual = a * x + b - y", "residual = y - a * x - b"),
        "stub": lambda nb: load(TEMPLATES / "gradient_descent.ipynb"),
        "wrong-shapes": lambda nb: edit_source(nb, "mlp_forward", 'return hidden @ params["a2"] + params["b2"]',
                                               'return (hidden @ params["a2"] + params["b2"])[:, None]'),
    },
    "deep-mlp": {
        "correct": lambda nb: nb,
        "conv": lambda nb: with_definition(nb, "build_model", "def build_model():\n    return nn.Sequential("
                                           "nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(2704, 64), nn.ReLU(), "
                                           "nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"),
        "stub": lambda nb: load(TEMPLATES / "deep_mlp.ipynb"),
        "wrong-shapes": lambda nb: with_definition(nb, "build_model", "def build_model():\n    return nn.Sequential("
                                                   "nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 5))\n"),
    },
    "toy-2d": {
        "correct": lambda nb: nb,
        "stub": lambda nb: load(TEMPLATES / "toy_2d.ipynb"),
        "wrong-shapes": lambda nb: with_definition(nb, "build_model", (
            "def build_model(task):\n    outputs = {'prod': 1, 'xor': 2, 'quadrants': 1}[task]\n"
            "    return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, outputs), nn.Sigmoid())\n")),
    },
    "cnn-mnist": {
        "correct": lambda nb: nb,
        "stub": lambda nb: load(TEMPLATES / "cnn_mnist.ipynb"),
        "wrong-shapes": lambda nb: with_definition(nb, "build_model", "def build_model():\n    return nn.Sequential("
                                                   "nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 5))\n"),
        "conv": lambda nb: with_definition(nb, "build_model", "def build_model():\n    return nn.Sequential("
                                           "nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(21632, 10))\n"),
    },
}


@pytest.mark.parametrize("assignment_id", ["gradient-descent", pytest.param("toy-2d", marks=HEAVY)] +
                         (["deep-mlp", pytest.param("cnn-mnist", marks=HEAVY)] if HAVE_MNIST else []))
@pytest.mark.parametrize("mix", ["correct", "sign-error", "stub", "wrong-shapes", "conv"])
def test_check_and_grade_agree_on_every_visible_check(assignment_id, mix, tmp_path, options):
    if mix not in MIXES[assignment_id]:
        pytest.skip(f"no {mix} case for {assignment_id}")
    notebook = MIXES[assignment_id][mix](load(SOLUTIONS / f"{NAMES[assignment_id]}.ipynb"))
    path = student_folder(tmp_path, assignment_id, notebook)
    spec = assignment(assignment_id)
    spec = dataclasses.replace(spec, checks=tuple(c for c in spec.checks if not isinstance(c.run, ModelScore)))
    graded = grade(path, spec, options).to_dict()
    assert visible(checked(path)) == visible(graded)


def test_another_assignments_notebook_or_no_bundle_is_a_clear_error(tmp_path, capsys):
    notebook = student_folder(tmp_path, "gradient-descent", SOLUTIONS / "gradient_descent.ipynb")
    other = load(SOLUTIONS / "gradient_descent.ipynb")
    other.metadata["grader"] = {"assignment": "mlp-1500"}
    save(other, tmp_path / "other.ipynb")
    assert main(["check", str(tmp_path / "other.ipynb"), "--bundle", str(bundle_of("gradient-descent"))]) == 2
    assert "is a notebook of mlp-1500, but gradient_descent.checks.json checks gradient-descent" in \
        capsys.readouterr().err
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(notebook, alone / "homework.ipynb")
    assert main(["check", str(alone / "homework.ipynb")]) == 2
    assert "no student bundle for homework.ipynb" in capsys.readouterr().err


def test_a_broken_notebook_is_checked_with_the_same_message_as_grading(tmp_path, capsys):
    path = student_folder(tmp_path, "gradient-descent", SOLUTIONS / "gradient_descent.ipynb")
    path.write_text("{ not json")
    result = checked(path)
    assert result["status"] == "error" and "is not a notebook: invalid JSON" in result["message"]


def test_submit_writes_a_clean_copy_naming_the_assignment(tmp_path, capsys):
    notebook = load(SOLUTIONS / "gradient_descent.ipynb")
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="old output")]
    notebook.metadata.pop("grader", None)
    path = student_folder(tmp_path, "gradient-descent", notebook)
    checked(path, "--submit")
    assert f"ready to upload: {tmp_path / 'gradient_descent-submit.ipynb'}" in capsys.readouterr().out
    copy = load(tmp_path / "gradient_descent-submit.ipynb")
    assert copy.metadata["grader"]["assignment"] == "gradient-descent"
    assert all(not c.get("outputs") for c in copy.cells if c.cell_type == "code")


@needs_mnist
def test_a_model_that_does_not_learn_fails_the_preview(tmp_path, capsys):
    frozen = ("def build_model():\n    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), "
              "nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n"
              "    for p in model.parameters():\n        p.requires_grad_(False)\n    return model\n")
    path = student_folder(tmp_path, "deep-mlp", with_definition(load(SOLUTIONS / "deep_mlp.ipynb"), "build_model",
                                                                frozen))
    accuracy = next(c for c in checked(path)["checks"] if c["id"] == "test-accuracy")
    assert accuracy["status"] == "failed"
    assert accuracy["message"].startswith("preview: the model does not seem to learn")


# --------------------------------------------------------------------------
# check() in the student's own kernel


def test_check_in_the_notebook_runs_in_the_students_kernel_and_changes_nothing(tmp_path):
    """The template's last cell, run for real in a plain Jupyter kernel, beside the bundle."""
    from nbclient import NotebookClient

    notebook = load(SOLUTIONS / "gradient_descent.ipynb")
    cell = nbformat.v4.new_code_cell("import numpy as np\nnp.random.seed(7)\nfrom grader.student import check\n"
                                     "report = check()\nprint('passed', report.passed, 'next draw',"
                                     " np.random.rand() == np.random.RandomState(7).rand())")
    notebook.cells = [c for c in notebook.cells if "demo" not in c.metadata.get("tags", [])] + [cell]
    path = student_folder(tmp_path, "gradient-descent", notebook)
    executed = NotebookClient(load(path), timeout=120, kernel_name="python3",
                              resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = executed.cells[-1].outputs
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    text = "".join(o.get("text", "") for o in outputs)
    assert "<table>" in html and "fit_linear recovered" in html and "graded after you submit" in html
    assert "passed True next draw True" in text


def test_check_as_a_cell_s_last_line_shows_its_table_once_and_names_its_own_argument(tmp_path):
    from nbclient import NotebookClient

    notebook = load(SOLUTIONS / "gradient_descent.ipynb")
    notebook.cells = [c for c in notebook.cells if "demo" not in c.metadata.get("tags", [])] + [
        nbformat.v4.new_code_cell("from grader.student import check\ncheck()")]
    path = student_folder(tmp_path, "gradient-descent", notebook)
    executed = NotebookClient(load(path), timeout=120, kernel_name="python3",
                              resources={"metadata": {"path": str(tmp_path)}}).execute()
    tables = sum(o.get("data", {}).get("text/html", "").count("<table>") for o in executed.cells[-1].outputs)
    assert tables == 1
    (tmp_path / "gradient_descent.checks.json").unlink()
    executed = NotebookClient(load(path), timeout=120, kernel_name="python3",
                              resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in executed.cells[-1].outputs)
    assert 'check(bundle="NAME.checks.json")' in text and "--bundle" not in text


def test_check_in_the_notebook_names_one_check_or_says_it_is_unknown(tmp_path, capsys, monkeypatch):
    from grader.student import check

    namespace: dict = {}
    for cell in load(SOLUTIONS / "gradient_descent.ipynb").cells:
        if cell.cell_type == "code" and "demo" not in cell.metadata.get("tags", []):
            exec(cell.source, namespace)  # the reference solution, as a student's kernel would hold it
    report = check("fit-linear", bundle=bundle_of("gradient-descent"), namespace=namespace)
    assert [r.id for r in report.results] == ["fit-linear"] and report.results[0].status == "passed"
    assert check("nope", bundle=bundle_of("gradient-descent"), namespace=namespace) is None
    assert "no check 'nope' in gradient-descent" in capsys.readouterr().out
