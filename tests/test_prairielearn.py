"""PrairieLearn: `grader prairielearn` against a temporary /grade tree, the image's Dockerfile and
the example question.

The tree is laid out as PrairieLearn's external grader lays it out (student/, data/data.json, the
question's tests/ with the spec in tests/solutions/, results/ made by the grader). Every
results.json is validated against tests/schemas/prairielearn-results.schema.json, written from
PrairieLearn's documentation, and kept under its 1 MB limit. There is no Docker engine here: the
Dockerfile and the example question are checked as files.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import stat
import sys
from pathlib import Path

import pytest

import containers
from conftest import REPO, SOLUTIONS, TEMPLATES, data_root
from grader.cli import build_parser, main
from grader.sandbox.reaping import processes_of
from lms_cases import (
    STUDENT,
    STUDENT_IDS,
    OpenBase,
    attack_notebook,
    container_binds,
    problems,
    result_json_problems,
    validator,
)
from workers import SANDBOX_USER_GROUP

GRADER = Path(sys.executable).parent / "grader"
IMAGE = REPO / "grader" / "lms" / "prairielearn-image"
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def schema():
    return validator("prairielearn-results.schema.json")


@pytest.fixture(autouse=True)
def sandbox_user(monkeypatch):
    monkeypatch.setenv("GRADER_SANDBOX_USER", "nobody")


def grade_tree(base: Path, uploads: dict[str, bytes | Path], *, specs=("gradient_descent.py",),
               params: dict | None = None) -> Path:
    root = base / "grade"
    (root / "student").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "tests" / "solutions").mkdir(parents=True)
    for spec in specs:
        shutil.copy(SOLUTIONS / spec, root / "tests" / "solutions" / spec)
    (root / "data" / "data.json").write_text(json.dumps({"params": params or {}, "correct_answers": {},
                                                         "submitted_answers": {"_files": []}}))
    for name, content in uploads.items():
        (root / "student" / name).write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
    return root


def run_entry_point(root: Path, *extra: str) -> tuple[int, dict]:
    code = main(["prairielearn", "--root", str(root), "--data-root", str(data_root()), *extra])
    path = root / "results" / "results.json"
    text = path.read_text()
    assert len(text.encode()) < MAX_BYTES
    return code, json.loads(text)


# --------------------------------------------------------------------------
# Graded submissions


def test_the_reference_solution_scores_one(tmp_path, schema, capsys):
    root = grade_tree(tmp_path, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    code, results = run_entry_point(root)
    assert code == 0
    assert problems(schema, results) == []
    assert results["gradable"] is True and results["score"] == 1.0
    assert len(results["tests"]) == 8 and sum(t["points"] for t in results["tests"]) == 14
    assert all(t["points"] == t["max_points"] for t in results["tests"])
    fit_linear = next(t for t in results["tests"] if t["name"] == "fit_linear recovers a line")
    assert fit_linear["images"] and fit_linear["images"][0]["url"].startswith("data:image/png;base64,")
    # the staff copy; the job's log says no more than the student sees; /grade closed to others
    staff = root / "results" / "grader" / "result.json"
    assert result_json_problems(staff) == []
    result = json.loads(staff.read_text())
    assert result["environment"]["lms"]["name"] == "prairielearn"
    text = json.dumps(results) + capsys.readouterr().out
    for check in (c for c in result["checks"] if c["visibility"] == "hidden"):
        assert check["message"] not in text
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_the_template_is_gradable_and_scores_zero_with_hints_for_hidden_tests(tmp_path, schema):
    root = grade_tree(tmp_path, {"gradient_descent.ipynb": TEMPLATES / "gradient_descent.ipynb"})
    code, results = run_entry_point(root)
    assert code == 0 and problems(schema, results) == []
    assert results["gradable"] is True and results["score"] == 0.0
    result = json.loads((root / "results" / "grader" / "result.json").read_text())
    for check, test in zip(result["checks"], results["tests"], strict=False):
        assert test["name"] == check["name"] and test["max_points"] == check["max_score"]
        if check["visibility"] == "hidden":  # as feedback.html: points and the hint, nothing else
            assert test["message"] == check["hint"] and test["output"] == "" and "images" not in test
            assert test["description"].startswith("A hidden test")
        else:
            assert test["message"] == check["message"]


def test_data_json_names_the_assignment_when_the_question_holds_several_specs(tmp_path, schema):
    root = grade_tree(tmp_path, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"},
                      specs=("gradient_descent.py", "mlp_1500.py"), params={"assignment": "gradient-descent"})
    _, results = run_entry_point(root)
    assert problems(schema, results) == [] and results["score"] == 1.0


@pytest.mark.parametrize("uploads, words", [
    ({}, "No notebook was found in your submission. It is empty."),
    ({"a.ipynb": SOLUTIONS / "gradient_descent.ipynb", "b.ipynb": SOLUTIONS / "gradient_descent.ipynb"},
     "Your submission holds 2 notebooks (a.ipynb, b.ipynb)"),
    ({"gradient_descent.ipynb": TEMPLATES / "deep_mlp.ipynb"},
     "This notebook is the one for the assignment 'deep-mlp' (its metadata says so)"),
    ({"gradient_descent.ipynb": b"{ not json"}, "gradient_descent.ipynb is not a notebook: invalid JSON"),
], ids=["nothing", "two-notebooks", "another-assignment", "not-json"])
def test_an_upload_without_a_gradable_notebook_is_not_gradable_and_says_why(tmp_path, schema, uploads, words):
    # PrairieLearn's external-grading documentation: `gradable: false` for a submission that cannot be graded
    # (its compile errors); the student sees the message, and the attempt is not counted
    root = grade_tree(tmp_path, uploads)
    code, results = run_entry_point(root)
    assert code == 0 and problems(schema, results) == []
    assert results["gradable"] is False and words in results["message"]
    assert "not your fault" not in results["message"]


def test_when_the_grader_cannot_work_the_attempt_is_not_counted(tmp_path, schema, monkeypatch, capsys):
    monkeypatch.setenv("GRADER_SANDBOX_USER", "no-such-grader-user")
    root = grade_tree(tmp_path, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    code, results = run_entry_point(root)
    assert code == 0 and problems(schema, results) == []
    assert results["gradable"] is False
    assert "This is not your fault" in results["message"] and "no-such-grader-user" in results["message"]
    assert "This is not your fault" in capsys.readouterr().err


def test_a_crash_of_the_grader_is_not_counted_either(tmp_path, schema, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("a bug in the grader")

    monkeypatch.setattr("grader.grading.pipeline.grade_submission", crash)
    root = grade_tree(tmp_path, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    _, results = run_entry_point(root)
    assert problems(schema, results) == [] and results["gradable"] is False
    assert "the grader crashed on this submission (RuntimeError: a bug in the grader)" in results["message"]
    staff = json.loads((root / "results" / "grader" / "result.json").read_text())
    assert staff["status"] == "grader-error"


def test_a_question_without_its_spec_is_not_counted_against_the_student(tmp_path, schema):
    root = grade_tree(tmp_path, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"}, specs=())
    shutil.rmtree(root / "tests")
    _, results = run_entry_point(root, "--course", str(tmp_path / "no-course"))
    assert problems(schema, results) == [] and results["gradable"] is False
    assert "The grader's configuration" in results["message"]


# --------------------------------------------------------------------------
# Inside a simulated PrairieLearn container: root without namespaces, the kernel as grader-student


@SANDBOX_USER_GROUP
@pytest.mark.skipif(not containers.available(), reason="needs root and util-linux unshare")
@pytest.mark.parametrize("case", ["attack", "solution"])
def test_in_an_lms_container_the_kernel_earns_only_what_it_should(schema, case):
    with OpenBase() as base:
        root = base / "grade"
        if case == "attack":
            notebook = attack_notebook(base / "attack.ipynb", spec=root / "tests" / "solutions" / "gradient_descent.py",
                                       results_file=root / "results" / "results.json", witness=base / "witness")
        else:
            notebook = SOLUTIONS / "gradient_descent.ipynb"
        grade_tree(base, {"gradient_descent.ipynb": notebook})
        for path in [root, *root.rglob("*")]:  # as PrairieLearn may hand it over: open to all
            path.chmod(0o755 if path.is_dir() else 0o644)
        image_data = base / "image-data"
        image_data.mkdir(mode=0o700)  # the image's GRADER_DATA, root's only
        done = containers.run_in_container(
            [*containers.grader_command(), "prairielearn", "--root", str(root), "--sandbox", "user"], cwd=base,
            env={"GRADER_SANDBOX_USER": STUDENT, "GRADER_DATA": str(image_data)}, binds=container_binds(base))
        assert done.returncode == 0, done.stderr
        results = json.loads((root / "results" / "results.json").read_text())
        assert problems(schema, results) == []
        assert results["gradable"] is True and len(results["tests"]) == 8, done.stdout + done.stderr
        staff = root / "results" / "grader" / "result.json"
        assert result_json_problems(staff) == []
        sandbox = json.loads(staff.read_text())["environment"]["sandbox"]
        assert sandbox["isolation"] == "user" and sandbox["user"] == STUDENT
        if case == "solution":
            assert results["score"] == 1.0
        else:
            assert results["score"] == 0.0
            witness = base / "witness"
            assert "Permission denied" in (witness / "refused-spec").read_text()
            assert "Permission denied" in (witness / "refused-results").read_text()
            assert not (witness / "read-spec").exists() and not (witness / "wrote-results").exists()
    assert processes_of(STUDENT_IDS[0]) == set()


# --------------------------------------------------------------------------
# The image and the example question (no Docker engine here: checked as files)


def test_the_dockerfile_builds_the_image_the_readme_describes():
    text = (IMAGE / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    assert instructions[0] == "FROM" and "FROM python:3.11-slim\n" in text
    assert set(instructions) <= {"FROM", "RUN", "COPY", "ENV", "USER", "CMD"}
    for expected in ("apt-get install -y --no-install-recommends bubblewrap",
                     "COPY constraints.txt /opt/grader/constraints.txt",
                     "pip install --no-cache-dir -c /opt/grader/constraints.txt torch==2.14.1 torchvision==0.29.1",
                     "--index-url https://download.pytorch.org/whl/cpu",
                     "COPY grader-*.whl /tmp/wheel/",
                     "pip install --no-cache-dir -c /opt/grader/constraints.txt /tmp/wheel/grader-*.whl",
                     "useradd --system --no-create-home --shell /usr/sbin/nologin grader-student",
                     "chmod -R go-rwx /opt/grader/data", "GRADER_DATA=/opt/grader/data",
                     "GRADER_SANDBOX_USER=grader-student", "USER root"):
        assert expected in text, expected
    assert 'CMD ["/usr/local/bin/grader", "prairielearn"]' in text


def test_the_example_question_runs_the_image_s_entry_point():
    question = IMAGE / "example-question"
    info = json.loads((question / "info.json").read_text())
    assert info["gradingMethod"] == "External" and info["type"] == "v3"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", info["uuid"])
    options = info["externalGradingOptions"]
    assert options["enabled"] is True and options["image"].endswith("/grader-prairielearn:0.1.0")
    assert 0 < options["timeout"] <= 600  # PrairieLearn's own maximum
    argv = shlex.split(options["entrypoint"])
    # python:3.11-slim's pip installs the wheel's console script there
    assert argv[0] == "/usr/local/bin/grader"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "prairielearn" and args.assignment == "gradient-descent"
    assert str(args.root) == "/grade"
    html = (question / "question.html").read_text()
    assert '<pl-file-upload file-names="gradient_descent.ipynb"></pl-file-upload>' in html
    assert "<pl-external-grader-results></pl-external-grader-results>" in html
    assert not list(question.rglob("*.ipynb")) and not list(question.rglob("*.py"))  # the spec is copied in


# --------------------------------------------------------------------------
# The model assignments (training takes a minute or more each)


@pytest.mark.e2e
@pytest.mark.parametrize("spec, notebook", [("mlp_1500.py", "mlp_1500.ipynb"), ("deep_mlp.py", "deep_mlp.ipynb"),
                                            ("regression_vs_forest.py", "regression_vs_forest.ipynb")])
def test_a_model_assignment_through_the_entry_point(tmp_path, schema, spec, notebook):
    for name, source, score in (("solution", SOLUTIONS, 1.0), ("template", TEMPLATES, 0.0)):
        root = grade_tree(tmp_path / name, {notebook: source / notebook}, specs=(spec,))
        code, results = run_entry_point(root)
        assert code == 0 and problems(schema, results) == [], name
        messages = [(t["name"], t["message"]) for t in results["tests"] if t["points"] < t["max_points"]]
        assert results["gradable"] is True and results["score"] == score, (name, messages)
        if score:
            assert any(t.get("images") for t in results["tests"])
