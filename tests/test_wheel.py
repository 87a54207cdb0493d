"""A built wheel is complete without the checkout, and holds none of the course.

Built from a copy of the checkout, so the test leaves no build/ behind. .ci/run
goes further: it installs the wheel in a clean venv and grades with it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "grader-out",
                                    ".pytest_cache", ".whl", ".gl")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(REPO, tmp / "src", ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp / "dist"), str(tmp / "src")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp / "dist").glob("grader-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_ships_the_templates_from_the_top_level_directory(wheel_names):
    templates = {f"grader/templates/{p.name}" for p in (REPO / "templates").glob("*.j2")}
    assert templates and templates <= wheel_names


def test_the_wheel_ships_the_child_library_and_the_result_schema(wheel_names):
    child = {f"grader/child/{p.name}" for p in (REPO / "grader" / "child").glob("*.py")}
    assert child and child <= wheel_names
    assert "grader/schemas/result.schema.json" in wheel_names


def test_every_module_of_the_package_is_in_the_wheel(wheel_names):
    # pyproject.toml lists the packages (grader.templates lives outside grader/), so a new
    # subpackage must be added there; this is the reminder.
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "grader").rglob("*.py") if "__pycache__" not in p.parts}
    missing = sorted(modules - wheel_names)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages): {missing}"


def test_the_wheel_holds_nothing_of_the_course(wheel_names):
    outside = sorted(n for n in wheel_names if not re.match(r"grader/|grader-[^/]+\.dist-info/", n))
    assert outside == []
    assert not [n for n in wheel_names if n.endswith(".ipynb") or "solutions/" in n or "assignments/" in n]
