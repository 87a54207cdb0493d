"""The same grade on a busy machine: the stress layer (`pytest -m stress`, run by .ci/run).

Every test here first grades on the machine as it is, then under a load it starts and stops itself
(tests/load.py: four busy processes per core, some of them multi-threaded torch work, and a real
`grader batch -j 2` of toy-2d beside them), and asserts that nothing a student sees changes: kernels
start, tables match, models train their whole budget to the same score, and the LMS entry points in
a Docker-like container (no namespaces, Docker's capabilities) give full marks to the reference and
0 to the template. The CPU-limited cgroup makes the starved machine deterministic.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pytest

import containers
from conftest import SOLUTIONS, TEMPLATES, data_root
from grader.kernel.session import KernelSession
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import Limits
from lms_cases import STUDENT, OpenBase, container_binds
from load import GRADER, MachineLoad, cgroup_cpu_available, cpu_limited

# the layer loads the machine itself: its tests run one after another, on one worker
pytestmark = [pytest.mark.stress, pytest.mark.xdist_group("stress")]


def grader(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([GRADER, *args, "--data-root", str(data_root())], capture_output=True, text=True,
                          timeout=timeout)


def table(result_file: Path) -> list[tuple]:
    """What a student reads of a result: every check's id, status, points and message."""
    result = json.loads(result_file.read_text())
    return [(c["id"], c["status"], c["score"], c["message"]) for c in result["checks"]] + [result["status"]]


def check_table(notebook: Path, out: Path, run=grader) -> list[tuple]:
    bundle = TEMPLATES / notebook.name.replace(".ipynb", ".checks.json")
    done = run("check", str(notebook), "--bundle", str(bundle), "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return table(out / "result.json")


def graded(notebook: Path, out: Path, *extra: str, run=grader) -> dict:
    done = run("grade", str(notebook), "--out", str(out), *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def report(capsys, text: str) -> None:
    """A figure the closing note needs, printed past pytest's capture."""
    with capsys.disabled():
        print(f"\n[stress] {text}")


# --------------------------------------------------------------------------
# Kernels


def test_ten_cold_kernels_in_a_row_become_ready_under_load(capsys):
    seconds = []
    with MachineLoad():
        time.sleep(3)  # let the load take the cores first
        for _ in range(10):
            with Sandbox(Limits()) as sandbox:  # no image: a cold start, the LMS and student path
                session = KernelSession(sandbox)
                start = time.monotonic()
                session.start()
                seconds.append(time.monotonic() - start)
                assert session.run("print(6 * 7)", timeout_s=120).output_text.strip() == "42"
                session.stop()
        load = os.getloadavg()[0]  # the 1-minute average, read before the load stops
    report(capsys, f"cold kernel starts under load (load average {load:.1f}): ready 10 / 10, median "
           f"{statistics.median(seconds):.2f} s, slowest {max(seconds):.2f} s")


def test_grader_check_gives_the_idle_table_under_load(tmp_path):
    notebooks = [TEMPLATES / "gradient_descent.ipynb", SOLUTIONS / "gradient_descent.ipynb"]
    idle = [check_table(nb, tmp_path / f"idle-{i}") for i, nb in enumerate(notebooks)]
    with MachineLoad():
        busy = [check_table(nb, tmp_path / f"busy-{i}") for i, nb in enumerate(notebooks)]
    assert busy == idle


def test_cold_kernels_under_load_give_the_forked_kernel_s_scores(tmp_path):
    for name in ("gradient_descent", "polynomial_overfit"):
        forked = graded(SOLUTIONS / f"{name}.ipynb", tmp_path / f"forked-{name}")
        with MachineLoad():
            cold = graded(SOLUTIONS / f"{name}.ipynb", tmp_path / f"cold-{name}", "--cold-kernels")
        assert cold["environment"]["sandbox"]["kernel"] == "started cold"
        assert table(tmp_path / f"cold-{name}" / "result.json") == table(tmp_path / f"forked-{name}" / "result.json")
        assert cold["score"] == forked["score"] == forked["max_score"]


# --------------------------------------------------------------------------
# Training: the budget, never the clock


def test_a_model_trains_its_whole_budget_under_load_to_the_idle_score(tmp_path, capsys):
    idle = graded(SOLUTIONS / "toy_2d.ipynb", tmp_path / "idle")
    with MachineLoad():
        busy = graded(SOLUTIONS / "toy_2d.ipynb", tmp_path / "busy")
    assert busy["status"] == idle["status"] == "graded"
    assert busy["score"] == idle["score"] == idle["max_score"]
    for before, after in zip(idle["checks"], busy["checks"], strict=False):
        assert (after["id"], after["score"], after["message"]) == (before["id"], before["score"], before["message"])
        training = before["details"].get("training")
        if training:  # every epoch and step of the budget, and the same accuracy to the last digit
            for key in ("epochs", "steps", "final_loss", "test_accuracy"):
                assert after["details"]["training"].get(key) == training.get(key), (before["id"], key)
    report(capsys, f"toy-2d reference: {idle['score']:g} / {idle['max_score']:g} idle, {busy['score']:g} / "
           f"{busy['max_score']:g} under load (training {idle['timings'].get('train_s', 0):.1f} s idle, "
           f"{busy['timings'].get('train_s', 0):.1f} s under load)")


# --------------------------------------------------------------------------
# The LMS entry points in a Docker-like container, under load


@pytest.fixture(scope="module")
def gradescope_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "autograder.zip"
    done = grader("gradescope", "build", "gradient-descent", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.skipif(not containers.available(), reason="needs root and util-linux unshare")
def test_lms_entry_points_in_a_docker_like_container_under_load(gradescope_bundle):
    from test_gradescope import autograder_tree
    from test_prairielearn import grade_tree

    cases = [("reference", SOLUTIONS / "gradient_descent.ipynb", 14, 1.0),
             ("template", TEMPLATES / "gradient_descent.ipynb", 0, 0.0)]
    with MachineLoad():
        for name, notebook, gradescope_score, prairielearn_score in cases:
            with OpenBase() as base:
                root = autograder_tree(base, gradescope_bundle, {"gradient_descent.ipynb": notebook})
                done = containers.run_in_container(
                    ["bash", str(root / "run_autograder")], cwd=base, docker=True, binds=container_binds(base),
                    env={"GRADER_GRADESCOPE_ROOT": str(root), "GRADER_EXECUTABLE": GRADER,
                         "GRADER_SANDBOX_USER": STUDENT})
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
                results = json.loads((root / "results" / "results.json").read_text())
                assert results["score"] == gradescope_score, (name, done.stdout[-3000:])
                recorded = json.loads((root / "results" / "grader" / "result.json").read_text())
                sandbox = recorded["environment"]["sandbox"]
                assert (sandbox["isolation"], sandbox["user"]) == ("user", STUDENT)  # degraded by itself
            with OpenBase() as base:
                root = grade_tree(base, {"gradient_descent.ipynb": notebook})
                for path in [root, *root.rglob("*")]:
                    path.chmod(0o755 if path.is_dir() else 0o644)
                done = containers.run_in_container(
                    [GRADER, "prairielearn", "--root", str(root)], cwd=base, docker=True,
                    env={"GRADER_SANDBOX_USER": STUDENT, "GRADER_DATA": str(base / "no-data")},
                    binds=container_binds(base))
                assert done.returncode == 0, done.stderr[-3000:]
                results = json.loads((root / "results" / "results.json").read_text())
                assert results["gradable"] is True and results["score"] == prairielearn_score, (name, results)
                recorded = json.loads((root / "results" / "grader" / "result.json").read_text())
                sandbox = recorded["environment"]["sandbox"]
                assert (sandbox["isolation"], sandbox["user"]) == ("user", STUDENT)


# --------------------------------------------------------------------------
# A machine that gives the grader 15 % of one CPU: deterministic starvation


@pytest.mark.skipif(not cgroup_cpu_available(), reason="needs root and a cgroup cpu controller")
def test_at_fifteen_percent_of_a_cpu_check_and_cold_grading_still_finish(tmp_path, capsys):
    template, solution = TEMPLATES / "gradient_descent.ipynb", SOLUTIONS / "gradient_descent.ipynb"
    idle_check = check_table(template, tmp_path / "idle-check")
    idle_grade = graded(solution, tmp_path / "idle-grade")

    def starved(*args: str) -> subprocess.CompletedProcess:
        return cpu_limited([GRADER, *args, "--data-root", str(data_root())], percent=15)

    start = time.monotonic()
    assert check_table(template, tmp_path / "slow-check", run=starved) == idle_check
    checked = time.monotonic() - start
    slow = graded(solution, tmp_path / "slow-grade", "--cold-kernels", run=starved)
    assert slow["score"] == idle_grade["score"] == 14
    report(capsys, f"at 15 % of one CPU: grader check of the template {checked:.1f} s, grade --cold-kernels of the "
           f"solution {slow['timings']['total_s']:.1f} s (kernel start {slow['timings']['kernel_start_s']:.1f} s)")
