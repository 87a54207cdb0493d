"""Shared fixtures: the course in this checkout, grading options, notebook surgery."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from grader.course.assignment import Assignment, find_assignment
from grader.grading.options import GradeOptions
from grader.grading.pipeline import grade_submission
from grader.grading.warm import Warm
from grader.ml.datasets import DatasetMissing, load_california_housing, load_images
from grader.results import GradeResult
from grader.sandbox.reaping import sweep_orphaned_sandboxes
from workers import MachineShare, use_own_temp_dir

use_own_temp_dir()  # before anything makes a sandbox (tests/workers.py)

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
TEMPLATES = REPO / "assignments"


def data_root() -> Path:
    return Path(os.environ.get("GRADER_DATA", REPO.parent / "shared" / "data")).resolve()


def _present(load) -> bool:
    try:
        load(data_root())
    except DatasetMissing:
        return False
    return True


HAVE_MNIST = _present(lambda root: load_images("mnist", root))
HAVE_HOUSING = _present(load_california_housing)
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST is not under {data_root()} (set GRADER_DATA)")
needs_housing = pytest.mark.skipif(not HAVE_HOUSING,
                                   reason=f"California housing is not under {data_root()} (set GRADER_DATA)")


@pytest.fixture(scope="session")
def options(tmp_path_factory) -> GradeOptions:
    return GradeOptions(course_root=REPO, data_root=data_root(),
                        cache_dir=tmp_path_factory.mktemp("cache"), device="cpu",
                        isolation=os.environ.get("GRADER_SANDBOX", "auto"))


def assignment(assignment_id: str, **limits) -> Assignment:
    spec = find_assignment(REPO, assignment_id)
    if limits:
        spec = dataclasses.replace(spec, limits=spec.limits.replace(**limits))
    return spec


# The test session is one command: one owner of what it keeps warm between grades, closed at its end.
SESSION_WARM = Warm()


@pytest.fixture(scope="session", autouse=True)
def _close_session_warm():
    yield
    SESSION_WARM.close()
    sweep_orphaned_sandboxes()  # what graders the tests killed left in this worker's temp dir


# Beside other pytest-xdist workers, the SANDBOX_USER_GROUP's tests have the machine to themselves
# (tests/workers.py); held from before a test's fixtures are set up to after they are torn down.
MACHINE = MachineShare()


def _alone(item) -> bool:
    return item is not None and any(mark.args[:1] == ("sandbox-user",) for mark in item.iter_markers("xdist_group"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    MACHINE.take(exclusive=_alone(item))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    MACHINE.let_go(unless_exclusive_next=_alone(nextitem))


def grade(path: Path, spec: Assignment, options: GradeOptions) -> GradeResult:
    return grade_submission(path, spec, options, SESSION_WARM)


def check(result: GradeResult, check_id: str):
    return next(c for c in result.checks if c.id == check_id)


def scores(result: GradeResult) -> dict[str, float]:
    return {c.id: c.score for c in result.checks}


def load(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def save(notebook: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(notebook, path)
    return path


def defining_cell(notebook: nbformat.NotebookNode, name: str) -> int:
    pattern = re.compile(rf"^(def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*=", re.M)
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and pattern.search(cell.source):
            return i
    raise KeyError(name)


def with_definition(notebook, name: str, source: str):
    """A copy of `notebook` where the cell defining `name` holds `source` instead."""
    copy = nbformat.from_dict(notebook)
    copy.cells[defining_cell(copy, name)].source = source
    return copy


def without_definition(notebook, name: str):
    copy = nbformat.from_dict(notebook)
    del copy.cells[defining_cell(copy, name)]
    return copy


def with_cell(notebook, source: str, *, after: int = 1, tags: tuple[str, ...] = ()):
    """A copy of `notebook` with a new code cell inserted after cell index `after`."""
    copy = nbformat.from_dict(notebook)
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    copy.cells.insert(after + 1, cell)
    return copy


def edit_source(notebook, name: str, old: str, new: str):
    """Replace text inside the cell defining `name` (for small deliberate bugs)."""
    copy = nbformat.from_dict(notebook)
    cell = copy.cells[defining_cell(copy, name)]
    assert old in cell.source, f"{old!r} not in the cell defining {name}"
    cell.source = cell.source.replace(old, new)
    return copy


# Every test file belongs to one layer, so that a run can pick what it needs: `pytest` runs the fast
# layers (unit, kernel, sandbox, lms, browser), `pytest -m sandbox` the tests whose outcome depends
# on the isolation in use (CI runs them once more under bubblewrap), `-m e2e` and `-m stress` the
# heavy layers, which their tests mark themselves. A test may name its own layer (a kernel test that
# also belongs in each sandbox mode, say).
LAYERS = {
    # values in, values out: no kernel, no sandbox
    "unit": ("test_authoring", "test_checks_numeric", "test_compat", "test_course_door", "test_exchange",
             "test_exports",
             "test_forged_answers", "test_layout", "test_notebook_io", "test_outputs", "test_result_schema",
             "test_states",
             "test_wheel"),
    # a student's notebook through a kernel and the checks: grades, training, the student's own check()
    "kernel": ("test_batch", "test_call_many", "test_cli", "test_cnn_mnist", "test_distributed",
               "test_gradient_descent", "test_mnist", "test_polynomial_overfit", "test_regression",
               "test_student_check", "test_toy_2d", "test_warm_trainer"),
    # what the isolation guarantees: the hostile corpus, the modes and their fallbacks, the kernel image,
    # files that cross the wall
    "sandbox": ("test_busy_machine", "test_fallback_modes", "test_hostile", "test_kernel_image", "test_save_load",
                "test_model_integrity", "test_sandbox"),
    # the Gradescope and PrairieLearn entry points in their simulated trees
    "lms": ("test_gradescope", "test_prairielearn"),
    # the HTML feedback as a browser shows it
    "browser": ("test_html_feedback",),
    # grader serve on loopback: uploads, the queue in its database, who may read what, a killed server
    "service": ("test_service",),
}
HEAVY_LAYERS = ("e2e", "stress")
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}


# `pytest` runs on several workers (pytest-xdist, `-n auto --dist loadgroup` in pyproject.toml): most of a
# fast test waits on a kernel, a timeout or a server, so two workers per core keep the cores busy. The
# e2e layer trains models, which keeps a core busy: one worker per core (on 2 cores, `-m e2e` took 272 s
# on two workers, 291 s serially and 323 s on four). The stress layer loads the machine itself, one
# test after another: serially. `-n 0` runs serially; PYTEST_XDIST_AUTO_NUM_WORKERS picks the number.
def pytest_xdist_auto_num_workers(config):
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    cores = len(os.sched_getaffinity(0))
    selected = config.option.markexpr or ""
    if "not" not in selected and "stress" in selected:
        return 0
    if "not" not in selected and "e2e" in selected:
        return cores
    return min(8, 2 * cores)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(layer) for layer in (*HEAVY_LAYERS, *LAYERS)):
            continue  # a test that names its layer itself
        layer = LAYER_OF.get(item.path.stem)
        if layer is None:
            raise pytest.UsageError(f"{item.path.name} belongs to no test layer: add it to LAYERS in "
                                    f"tests/conftest.py")
        item.add_marker(getattr(pytest.mark, layer))


# --------------------------------------------------------------------------
# A real browser: headless Chromium driven by Selenium (tests skip without them; .ci/run installs them)


def _executable(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if found:
            return found
    return None


def _chromium() -> tuple[str, str]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    del webdriver
    browser = _executable("chromium", "chromium-browser")
    driver = _executable("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium and chromedriver are needed (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture
def chrome(tmp_path):
    browser, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # an explicit driver path: Selenium Manager must never try to download a browser or driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
