"""Gradescope: the autograder zip, and the real run_autograder in a tree laid out like Gradescope's.

The bundle is built by `grader gradescope build`, unzipped into <root>/source as Gradescope
does, and its run_autograder runs with the root moved (GRADER_GRADESCOPE_ROOT) and the checkout's
grader (GRADER_EXECUTABLE) instead of /opt/grader's. setup.sh needs the network, so it is only
checked, never run. Every results.json is validated against tests/schemas/gradescope-results.schema.json,
written from Gradescope's specification.
"""

from __future__ import annotations

import html
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import containers
from conftest import SOLUTIONS, TEMPLATES, data_root
from grader.cli import main
from grader.reports import gradescope as report
from grader.results import CheckResult, GradeResult
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
SPEC = "solutions/gradient_descent.py"


@pytest.fixture(scope="module")
def schema():
    return validator("gradescope-results.schema.json")


def build(assignment: str, out: Path, *extra: str) -> Path:
    assert main(["gradescope", "build", assignment, "--out", str(out), "--data-root", str(data_root()), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build("gradient-descent", tmp_path_factory.mktemp("bundle") / "autograder.zip")


def autograder_tree(base: Path, bundle: Path, uploads: dict[str, bytes | Path] | None = None) -> Path:
    """<base>/autograder as Gradescope lays it out: the zip in source/, run_autograder beside it."""
    root = base / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    os.chmod(root / "run_autograder", 0o755)
    (root / "submission").mkdir()
    (root / "results").mkdir()
    for name, content in (uploads or {}).items():
        target = root / "submission" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
    for path in [root, *root.rglob("*")]:  # open to all, as an unzip may leave it: the grader closes it
        os.chmod(path, stat.S_IMODE(path.stat().st_mode) | (0o755 if path.is_dir() else 0o444))
    return root


def run_autograder(root: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    environment = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(root),
                   "GRADER_GRADESCOPE_ROOT": str(root), "GRADER_EXECUTABLE": str(GRADER),
                   "GRADER_SANDBOX_USER": "nobody", **env}
    if "GRADER_SANDBOX" in os.environ and "GRADER_SANDBOX" not in env:
        environment["GRADER_SANDBOX"] = os.environ["GRADER_SANDBOX"]
    done = subprocess.run(["bash", str(root / "run_autograder")], cwd=root, env=environment, capture_output=True,
                          text=True, timeout=900)
    results = root / "results" / "results.json"
    return done, json.loads(results.read_text()) if results.exists() else None


def staff_result(root: Path) -> dict:
    return json.loads((root / "results" / "grader" / "result.json").read_text())


# --------------------------------------------------------------------------
# The zip


def test_the_zip_holds_the_scripts_the_wheel_and_the_spec_only(bundle):
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    wheels = [n for n in names if n.startswith("grader-") and n.endswith(".whl")]
    assert len(wheels) == 1
    assert names == {"setup.sh", "run_autograder", "constraints.txt", wheels[0], SPEC}
    assert not [n for n in names if n.endswith(".ipynb")]
    assert stat.S_IMODE(modes["setup.sh"]) == stat.S_IMODE(modes["run_autograder"]) == 0o755
    assert stat.S_ISREG(modes["run_autograder"])


def test_the_image_is_pinned_to_the_environment_the_course_was_tested_with(bundle, tmp_path):
    # a rebuilt image must not pick up another numpy, ipykernel or scikit-learn (which moves a baseline)
    from importlib.metadata import version

    with zipfile.ZipFile(bundle) as archive:
        pins = archive.read("constraints.txt").decode().splitlines()
    pinned = dict(line.split("==") for line in pins if line and not line.startswith("#"))
    for name in ("numpy", "scikit-learn", "ipykernel", "nbclient", "jupyter_client", "matplotlib"):
        key = next(k for k in pinned if k.lower().replace("_", "-") == name.replace("_", "-"))
        assert pinned[key] == version(name).split("+")[0], name
    assert pinned["torch"] == "2.14.1" and not [v for v in pinned.values() if "+" in v]
    assert "grader" not in {k.lower() for k in pinned}


def test_the_shipped_wheel_is_the_grader_and_nothing_of_the_course(bundle):
    with zipfile.ZipFile(bundle) as archive:
        (wheel,) = [n for n in archive.namelist() if n.endswith(".whl")]
        inner = zipfile.ZipFile(io.BytesIO(archive.read(wheel)))
    names = set(inner.namelist())
    assert {"grader/lms/gradescope.py", "grader/reports/gradescope.py", "grader/cli/__init__.py"} <= names
    assert not [n for n in names if n.endswith(".ipynb") or "solutions/" in n]


def test_the_scripts_are_valid_bash_and_do_what_the_readme_says(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(tmp_path)
        (wheel,) = [n for n in archive.namelist() if n.endswith(".whl")]
    for script in ("setup.sh", "run_autograder"):
        done = subprocess.run(["bash", "-n", str(tmp_path / script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / script).read_text().startswith("#!/usr/bin/env bash\n")
    setup = (tmp_path / "setup.sh").read_text()
    for expected in ("apt-get install -y --no-install-recommends python3.11 python3.11-venv",
                     'python3.11 -m venv "$PREFIX/venv"',
                     'pip" install --no-cache-dir -c "$SOURCE/constraints.txt" torch==2.14.1 torchvision==0.29.1',
                     "--index-url https://download.pytorch.org/whl/cpu",
                     f'-c "$SOURCE/constraints.txt" "$SOURCE"/{wheel}', "bubblewrap || echo",
                     'useradd --system --no-create-home --shell /usr/sbin/nologin "$SANDBOX_USER"',
                     "SANDBOX_USER=grader-student", 'chmod -R go-rwx "$SOURCE"', "chmod 0700 /autograder",
                     "this assignment needs no dataset"):
        assert expected in setup, expected
    assert "git clone" not in setup and "data fetch" not in setup
    run = (tmp_path / "run_autograder").read_text()
    assert "gradescope run --root \"$ROOT\" --assignment gradient-descent" in run
    assert '--sandbox "${GRADER_SANDBOX:-auto}" --sandbox-user "$GRADER_SANDBOX_USER"' in run


def test_outside_a_checkout_a_given_wheel_is_shipped(bundle, tmp_path, capsys):
    with zipfile.ZipFile(bundle) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".whl")]
        archive.extract(name, tmp_path)
    rebuilt = build("gradient-descent", tmp_path / "again.zip", "--wheel", str(tmp_path / name))
    with zipfile.ZipFile(rebuilt) as archive:
        assert archive.read(name) == (tmp_path / name).read_bytes()
    assert main(["gradescope", "build", "gradient-descent", "--out", str(tmp_path / "x.zip"),
                 "--wheel", str(tmp_path / "again.zip")]) == 2
    assert "not a grader-*.whl file" in capsys.readouterr().err


def test_a_model_assignment_ships_only_its_dataset_or_fetches_it(tmp_path):
    if not (data_root() / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST is not under {data_root()}")
    shipped = build("mlp-1500", tmp_path / "ship.zip")
    with zipfile.ZipFile(shipped) as archive:
        data = sorted(n for n in archive.namelist() if n.startswith("data/"))
        assert archive.read("data/MNIST/raw/t10k-labels-idx1-ubyte") == \
            (data_root() / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    assert data == sorted(f"data/MNIST/raw/{n}" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                          "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    fetched = build("mlp-1500", tmp_path / "fetch.zip", "--data", "fetch")
    with zipfile.ZipFile(fetched) as archive:
        assert not [n for n in archive.namelist() if n.startswith("data/")]
        setup = archive.read("setup.sh").decode()
    assert '"$PREFIX/venv/bin/grader" data fetch mnist --data-root "$SOURCE/data"' in setup


def test_shipping_a_dataset_that_is_absent_is_a_usage_error(tmp_path, capsys):
    code = main(["gradescope", "build", "mlp-1500", "--out", str(tmp_path / "x.zip"), "--data-root",
                 str(tmp_path / "empty")])
    assert code == 2 and not (tmp_path / "x.zip").exists()
    assert "mnist is not under the data root" in capsys.readouterr().err


# --------------------------------------------------------------------------
# run_autograder on real submissions


def test_the_reference_solution_gets_full_marks(bundle, tmp_path, schema):
    root = autograder_tree(tmp_path, bundle, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    done, results = run_autograder(root)
    assert done.returncode == 0, done.stderr
    assert problems(schema, results) == []
    assert results["score"] == 14 == sum(t["max_score"] for t in results["tests"])
    assert {t["status"] for t in results["tests"]} == {"passed"} and len(results["tests"]) == 8
    assert [t["number"] for t in results["tests"]] == [str(i) for i in range(1, 9)]
    assert results["output_format"] == "html" and results["stdout_visibility"] == "hidden"
    assert "leaderboard" not in results  # no model, no test accuracy
    fit_linear = next(t for t in results["tests"] if t["name"] == "fit_linear recovers a line")
    assert '<img src="data:image/png;base64,' in fit_linear["output"]  # the feedback's plot travels
    # the staff's copy: result.json (meeting its schema) and feedback.html, and stdout, instructors only
    result = staff_result(root)
    assert result_json_problems(root / "results" / "grader" / "result.json") == []
    assert (root / "results" / "grader" / "feedback.html").is_file()
    assert result["environment"]["lms"]["name"] == "gradescope"
    text = json.dumps(results)
    for check in (c for c in result["checks"] if c["visibility"] == "hidden"):
        assert check["message"] and check["message"] not in text  # its inputs and findings stay with staff
    assert "mlp-grad (hidden)" in done.stdout and "score: 14 / 14" in done.stdout
    assert stat.S_IMODE(root.stat().st_mode) == 0o700  # closed to other users


def test_hidden_checks_show_points_and_hint_never_what_feedback_html_withholds(bundle, tmp_path, schema):
    root = autograder_tree(tmp_path, bundle, {"gradient_descent.ipynb": TEMPLATES / "gradient_descent.ipynb"})
    _done, results = run_autograder(root)
    assert problems(schema, results) == []
    assert results["score"] == 0
    result = staff_result(root)
    feedback = (root / "results" / "grader" / "feedback.html").read_text()
    hidden = [c for c in result["checks"] if c["visibility"] == "hidden"]
    assert len(hidden) == 4
    for check in hidden:
        test = next(t for t in results["tests"] if t["name"] == check["name"])
        assert test["visibility"] == "visible" and test["tags"] == ["hidden"]
        assert test["max_score"] == check["max_score"] and test["score"] == 0
        assert check["hint"] in test["output"] and check["hint"] in feedback
        assert check["message"] not in test["output"]  # (a visible check may say the same of that function)
    visible = next(c for c in result["checks"] if c["id"] == "fit-linear")
    assert visible["message"] in next(t["output"] for t in results["tests"] if t["name"] == visible["name"])


def test_a_notebook_that_reads_the_spec_or_forges_the_results_earns_nothing(bundle, tmp_path, schema):
    root = tmp_path / "autograder"
    notebook = attack_notebook(tmp_path / "attack.ipynb", spec=root / "source" / SPEC,
                               results_file=root / "results" / "results.json", witness=tmp_path)
    autograder_tree(tmp_path, bundle, {"gradient_descent.ipynb": notebook})
    _done, results = run_autograder(root)
    assert problems(schema, results) == []
    assert results["score"] == 0 and len(results["tests"]) == 8
    assert staff_result(root)["submission_sha256"] == results["extra_data"]["submission_sha256"]
    assert not (tmp_path / "read-spec").exists() and not (tmp_path / "wrote-results").exists()


@pytest.mark.parametrize("uploads, words", [
    ({}, "No notebook was found in your submission. It is empty."),
    ({"notes.txt": b"hello"}, "No notebook was found in your submission. It holds: notes.txt."),
    ({"a.ipynb": SOLUTIONS / "gradient_descent.ipynb", "old/b.ipynb": SOLUTIONS / "gradient_descent.ipynb"},
     "Your submission holds 2 notebooks (a.ipynb, old/b.ipynb), and only one can be graded."),
    ({"hw.ipynb": TEMPLATES / "mlp_1500.ipynb"},
     "This notebook is the one for the assignment 'mlp-1500' (its metadata says so), but this assignment is "
     "'gradient-descent'"),
    ({"gradient_descent.ipynb": b"{ not json"}, "gradient_descent.ipynb is not a notebook: invalid JSON"),
], ids=["nothing", "no-notebook", "two-notebooks", "another-assignment", "not-json"])
def test_what_cannot_be_graded_says_so_in_words_a_student_understands(bundle, tmp_path, schema, uploads, words):
    root = autograder_tree(tmp_path, bundle, uploads)
    done, results = run_autograder(root)
    assert done.returncode == 0, done.stderr
    assert problems(schema, results) == []
    assert results["score"] == 0 and len(results["tests"]) == 8
    assert "This submission could not be graded." in results["output"]
    assert words in html.unescape(results["output"]), results["output"]
    assert result_json_problems(root / "results" / "grader" / "result.json") == []


def test_a_checkpoint_copy_beside_the_notebook_is_not_a_second_notebook(bundle, tmp_path, schema):
    root = autograder_tree(tmp_path, bundle, {
        "gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb",
        ".ipynb_checkpoints/gradient_descent-checkpoint.ipynb": TEMPLATES / "gradient_descent.ipynb"})
    _, results = run_autograder(root)
    assert results["score"] == 14


# Gradescope's specification has no "not graded" result: a run without results.json is the autograder's
# failure, which records no score, tells the student the autograder failed, and shows staff the output.


def test_when_the_grader_cannot_work_no_score_is_recorded_and_staff_read_why(bundle, tmp_path):
    root = autograder_tree(tmp_path, bundle, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    done, results = run_autograder(root, GRADER_SANDBOX_USER="no-such-grader-user")
    assert results is None and done.returncode != 0
    assert "no-such-grader-user" in done.stdout and "records no score" in done.stdout
    assert staff_result(root)["status"] == "grader-error"


def test_when_the_grader_cannot_even_start_no_score_is_recorded(bundle, tmp_path):
    root = autograder_tree(tmp_path, bundle, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    done, results = run_autograder(root, GRADER_EXECUTABLE="/bin/false")
    assert results is None and done.returncode != 0
    assert "records no score" in done.stdout


def test_a_stale_results_file_is_never_shown_for_a_run_that_died(bundle, tmp_path):
    root = autograder_tree(tmp_path, bundle, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
    (root / "results" / "results.json").write_text('{"score": 99}')
    done, results = run_autograder(root, GRADER_EXECUTABLE="/bin/false")
    assert results is None and done.returncode != 0


# --------------------------------------------------------------------------
# Inside a simulated Gradescope container: root without namespaces, the kernel as grader-student
# (run_autograder's default, here without GRADER_SANDBOX_USER)


@SANDBOX_USER_GROUP
@pytest.mark.skipif(not containers.available(), reason="needs root and util-linux unshare")
def test_in_an_lms_container_the_kernel_cannot_read_the_spec_or_write_the_results(bundle, schema):
    with OpenBase() as base:
        root = base / "autograder"
        notebook = attack_notebook(base / "attack.ipynb", spec=root / "source" / SPEC,
                                   results_file=root / "results" / "results.json", witness=base / "witness")
        autograder_tree(base, bundle, {"gradient_descent.ipynb": notebook})
        assert stat.S_IMODE(root.stat().st_mode) == 0o755  # open until the grader closes it
        done = containers.run_in_container(
            ["bash", str(root / "run_autograder")], cwd=base,
            env={"GRADER_GRADESCOPE_ROOT": str(root), "GRADER_EXECUTABLE": str(GRADER), "GRADER_SANDBOX": "user"},
            binds=container_binds(base))
        assert done.returncode == 0, done.stderr
        results = json.loads((root / "results" / "results.json").read_text())
        assert problems(schema, results) == []
        assert results["score"] == 0 and len(results["tests"]) == 8, done.stdout + done.stderr
        witness = base / "witness"
        assert "Permission denied" in (witness / "refused-spec").read_text()
        assert "Permission denied" in (witness / "refused-results").read_text()
        assert not (witness / "read-spec").exists() and not (witness / "wrote-results").exists()
        result = staff_result(root)
        assert result_json_problems(root / "results" / "grader" / "result.json") == []
        assert result["environment"]["sandbox"]["isolation"] == "user"
        assert result["environment"]["sandbox"]["user"] == STUDENT
        assert "root only" in result["environment"]["lms"]["root_closed"]
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert processes_of(STUDENT_IDS[0]) == set()


@SANDBOX_USER_GROUP
@pytest.mark.skipif(not containers.available(), reason="needs root and util-linux unshare")
def test_in_an_lms_container_the_reference_solution_gets_full_marks(bundle, schema):
    with OpenBase() as base:
        root = autograder_tree(base, bundle, {"gradient_descent.ipynb": SOLUTIONS / "gradient_descent.ipynb"})
        done = containers.run_in_container(
            ["bash", str(root / "run_autograder")], cwd=base,
            env={"GRADER_GRADESCOPE_ROOT": str(root), "GRADER_EXECUTABLE": str(GRADER), "GRADER_SANDBOX": "user"},
            binds=container_binds(base))
        results = json.loads((root / "results" / "results.json").read_text())
        assert problems(schema, results) == []
        assert results["score"] == 14, done.stdout + done.stderr
        assert staff_result(root)["environment"]["sandbox"]["isolation"] == "user"


# --------------------------------------------------------------------------
# The translation alone


def _result(checks: list[CheckResult]) -> GradeResult:
    return GradeResult(assignment="deep-mlp", submission="x.ipynb", submission_sha256="", status="graded",
                       score=sum(c.score for c in checks), max_score=sum(c.max_score for c in checks),
                       checks=checks, timings={"total_s": 61.4})


def test_the_leaderboard_takes_test_accuracy_and_mse_from_visible_checks_only(schema):
    checks = [CheckResult("secret", "hidden", 1, 1, "passed", "m", visibility="hidden",
                          details={"training": {"test_accuracy": 0.99}}),
              CheckResult("accuracy", "accuracy", 5, 5, "passed", "m", details={"training": {"test_accuracy": 0.9512}}),
              CheckResult("mse", "mse", 2, 2, "passed", "m", details={"training": {"test_mse": 0.31}})]
    document = report.results_json(_result(checks))
    assert document["leaderboard"] == [{"name": "Test accuracy", "value": 0.9512, "order": "desc"},
                                       {"name": "Test MSE", "value": 0.31, "order": "asc"}]
    assert document["execution_time"] == 61
    assert problems(schema, document) == []
    assert "leaderboard" not in report.results_json(_result(checks), leaderboard=False)


def test_plots_beyond_the_budget_are_left_out_and_said_so(schema):
    series = {"train_loss": [1.0 / (i + 1) for i in range(30)]}
    checks = [CheckResult(f"c{i}", f"check {i}", 1, 1, "passed", "m", details={"series": series}) for i in range(100)]
    document = report.results_json(_result(checks))
    text = json.dumps(document)
    assert problems(schema, document) == []
    assert 0 < text.count("data:image/png;base64,") < 100 and "a plot was left out" in text
    assert len(text) < 1_000_000


def test_student_text_is_escaped_in_the_html(schema):
    check = CheckResult("c", "c", 0, 1, "failed", "<script>alert(1)</script>", details={"traceback": ["<b>x</b>"]})
    document = report.results_json(_result([check]))
    assert problems(schema, document) == []
    assert "<script>" not in json.dumps(document) and "&lt;script&gt;" in document["tests"][0]["output"]


# --------------------------------------------------------------------------
# The model assignments (training takes a minute or more each)


@pytest.mark.e2e
@pytest.mark.parametrize("assignment, notebook", [("mlp-1500", "mlp_1500.ipynb"), ("deep-mlp", "deep_mlp.ipynb"),
                                                  ("regression-vs-forest", "regression_vs_forest.ipynb")])
def test_a_model_assignment_through_run_autograder(tmp_path, schema, assignment, notebook):
    zipped = build(assignment, tmp_path / "autograder.zip")
    for name, source, full in (("solution", SOLUTIONS, True), ("template", TEMPLATES, False)):
        root = autograder_tree(tmp_path / name, zipped, {notebook: source / notebook})
        done, results = run_autograder(root)
        assert problems(schema, results) == [], name
        maximum = sum(t["max_score"] for t in results["tests"])
        messages = [(t["name"], t["output"][:300]) for t in results["tests"] if t["status"] != "passed"]
        assert results["score"] == (maximum if full else 0), (name, messages, done.stderr[-2000:])
        if full:
            assert results["leaderboard"] and results["leaderboard"][0]["name"] in ("Test accuracy", "Test MSE")
            assert "data:image/png;base64," in json.dumps(results)
