"""The sandbox where namespaces or root are missing, on machines laid out for it (tests/containers.py).

- "user": the grader is root inside an LMS container without namespaces; the kernel runs as an
  unprivileged user and only file permissions keep it from the course, the data and the outputs.
  The grader refuses to start when they would not.
- "unshare" without root: a TA's laptop; the view is built in a user namespace and the kernel
  keeps the TA's uid without any capability.
- "none": only when asked for, never as root, and said loudly in result.json and the feedback.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import containers
from conftest import SOLUTIONS, TEMPLATES, load, save, with_cell
from grader.sandbox.reaping import SHARED_TEMP_DIRS, ipc_objects_of, processes_of
from workers import SANDBOX_USER_GROUP, another_workers_processes

pytestmark = [pytest.mark.skipif(not containers.available(), reason="needs root and util-linux unshare to lay out "
                                                                     "a container-like machine"),
              SANDBOX_USER_GROUP]
NOBODY = (65534, 65534)
GRADER = containers.grader_command()


def course_in(root: Path) -> Path:
    course = root / "course"
    shutil.copytree(SOLUTIONS, course / "solutions", ignore=shutil.ignore_patterns("__pycache__"))
    return course


@pytest.fixture
def lms(tmp_path):
    """An LMS container's layout: everything of the grader's under a root-only directory."""
    os.chmod(tmp_path, 0o700)
    (tmp_path / "in").mkdir()
    (tmp_path / "data").mkdir()
    return tmp_path


def grade_in(root: Path, notebook: Path, *extra: str, user=None, out: str = "out"):
    done = containers.run_in_container(
        [*GRADER, "grade", str(notebook), "--course", str(root / "course"), "--data-root", str(root / "data"),
         "--out", str(root / out), *extra], cwd=root, env={"XDG_CACHE_HOME": str(root / "cache")}, user=user)
    result = json.loads((root / out / "result.json").read_text()) if (root / out / "result.json").exists() else None
    return done, result


def test_user_mode_grades_as_an_unprivileged_user(lms):
    course_in(lms)
    for name, expected in (("solution", 14), ("template", 0)):
        source = (SOLUTIONS if name == "solution" else TEMPLATES) / "gradient_descent.ipynb"
        notebook = lms / "in" / f"{name}.ipynb"
        shutil.copy(source, notebook)
        done, result = grade_in(lms, notebook, "--sandbox", "user", out=f"out-{name}")
        assert done.returncode == 0, done.stderr
        assert result["score"] == expected
        sandbox = result["environment"]["sandbox"]
        assert sandbox["isolation"] == "user" and sandbox["user"] == "nobody"
        assert any("the container is the outer wall" in note for note in sandbox["notes"])


def test_user_mode_keeps_spec_data_and_outputs_away_and_sweeps_what_is_left(lms):
    """A notebook that knows every path still earns nothing and leaves nothing."""
    course = course_in(lms)
    (lms / "data" / "MNIST").mkdir()
    (lms / "data" / "MNIST" / "t10k-labels").write_text("the test labels")
    attack = (f"import ctypes, json, os, subprocess\nfound = []\n"
              f"for path in ({str(course / 'solutions' / 'gradient_descent.py')!r}, "
              f"{str(lms / 'data' / 'MNIST' / 't10k-labels')!r}):\n"
              "    try:\n        found.append(open(path).read()[:20])\n    except OSError as e:\n"
              "        print('refused', path, e)\n"
              "for out in (" + repr(str(lms / "out")) + ",):\n"
              "    try:\n        os.makedirs(out, exist_ok=True)\n"
              "        json.dump({'score': 14}, open(os.path.join(out, 'result.json'), 'w'))\n"
              "        print('WROTE THE RESULT')\n    except OSError as e:\n        print('refused', out, e)\n"
              "ctypes.CDLL(None).shmget(0x7eed, 4096, 0o1666)\n"
              "for d in ('/dev/shm', '/var/tmp', '/tmp'):\n    try:\n"
              "        open(os.path.join(d, 'user-mode-leftover'), 'w').write('x')\n    except OSError:\n"
              "        pass\nsubprocess.Popen(['sleep', '900'], start_new_session=True)\nprint('found', found)")
    notebook = save(with_cell(load(TEMPLATES / "gradient_descent.ipynb"), attack, after=1), lms / "in" / "x.ipynb")
    done, result = grade_in(lms, notebook, "--sandbox", "user")
    assert done.returncode == 0, done.stderr
    assert result["score"] == 0 and result["checks"][0]["status"] == "failed"
    assert "WROTE THE RESULT" not in done.stdout
    assert processes_of(NOBODY[0]) - another_workers_processes() == set(), "the sandbox user's processes are killed"
    assert ipc_objects_of(NOBODY[0]) == []
    assert not [d for d in SHARED_TEMP_DIRS if Path(d, "user-mode-leftover").exists()]
    assert any("removed what the sandbox user left behind" in note
               for note in result["environment"]["sandbox"]["notes"])


def grade_beside_an_open_directory(lms, *, as_option: str):
    """Grade in user mode with a fresh directory every user may enter given as `as_option` (--data-root or
    --out); the completed run and the directory's resolved path."""
    course_in(lms)
    notebook = lms / "in" / "alice.ipynb"
    shutil.copy(SOLUTIONS / "gradient_descent.ipynb", notebook)
    options = {"--data-root": str(lms / "data"), "--out": str(lms / "out")}
    open_dir = Path(tempfile.mkdtemp(prefix="grader-open-"))
    try:
        os.chmod(open_dir, 0o755)
        done = containers.run_in_container(
            [*GRADER, "grade", str(notebook), "--sandbox", "user", "--course", str(lms / "course"),
             *[item for option, path in {**options, as_option: str(open_dir)}.items() for item in (option, path)]],
            cwd=lms, env={"XDG_CACHE_HOME": str(lms / "cache")})
    finally:
        shutil.rmtree(open_dir)
    return done, open_dir.resolve()


def test_user_mode_refuses_when_the_sandbox_user_could_read_the_data(lms):
    done, readable = grade_beside_an_open_directory(lms, as_option="--data-root")
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        f"grader: error: sandbox mode 'user': {readable} is readable by the sandbox user 'nobody'; make "
        "it unreadable to that user (chmod o-rwx, or a parent directory without o+x), or use a sandbox with "
        "namespaces"]


def test_user_mode_refuses_an_output_directory_the_sandbox_user_can_enter(lms):
    # one student's kernel could read other students' result.json there, hidden checks' messages included
    done, shared = grade_beside_an_open_directory(lms, as_option="--out")
    assert done.returncode == 3
    assert f"the output directory {shared} can be entered by the sandbox user 'nobody'" in done.stderr
    done, result = grade_in(lms, lms / "in" / "alice.ipynb", "--sandbox", "user", out="private-out")
    assert result["score"] == 14 and stat.S_IMODE((lms / "private-out").stat().st_mode) == 0o700


@pytest.mark.e2e  # five notebooks that each hit a limit, one at a time: half a minute
def test_user_mode_holds_the_limits(lms):
    """The corpus cases whose stopping does not depend on namespaces, in one batch."""
    from test_hostile import CASES, DEGRADED

    spec = course_in(lms) / "solutions" / "gradient_descent.py"
    # the corpus's scores are for its own limits (test_hostile's hostile_spec): a 5 s cell, not the course's 60 s
    source = spec.read_text()
    assert source.count("cell_timeout_s=60,") == 1
    spec.write_text(source.replace("cell_timeout_s=60,", "cell_timeout_s=5,"))
    for case in CASES:
        if case.name in DEGRADED:
            save(case.submission(), lms / "in" / f"{case.name}.ipynb")
    done = containers.run_in_container(
        [*GRADER, "batch", str(lms / "in"), "--assignment", "gradient-descent", "--sandbox", "user",
         "--course", str(lms / "course"), "--data-root", str(lms / "data"), "--out", str(lms / "out")],
        cwd=lms, env={"XDG_CACHE_HOME": str(lms / "cache")}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    for case in CASES:
        if case.name in DEGRADED:
            result = json.loads((lms / "out" / case.name / "result.json").read_text())
            assert result["score"] == case.score, (case.name, [c["message"] for c in result["checks"]])
    assert processes_of(NOBODY[0]) - another_workers_processes() == set()


@pytest.fixture
def laptop():
    """A TA's laptop: the grader runs as an ordinary user (here nobody) who owns the course."""
    root = Path(tempfile.mkdtemp(prefix="grader-laptop-"))
    os.chmod(root, 0o755)
    course_in(root)
    (root / "in").mkdir()
    (root / "data").mkdir()
    for path in [root, *root.rglob("*")]:
        os.chown(path, *NOBODY, follow_symlinks=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_without_root_the_view_is_built_in_a_user_namespace(laptop):
    attack = (f"import os, subprocess\n"
              f"print('course visible', os.path.exists({str(laptop / 'course')!r}))\n"
              "print('caps', [l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')])\n"
              "print('umount', subprocess.run(['umount', '-l', '/tmp'], capture_output=True).returncode)\n"
              "for target in ('/usr/lib/planted', os.path.dirname(os.__file__) + '/planted'):\n    try:\n"
              "        open(target, 'w').write('x')\n        print('PLANTED', target)\n"
              "    except OSError:\n        pass")
    notebook = save(with_cell(load(SOLUTIONS / "gradient_descent.ipynb"), attack, after=1),
                    laptop / "in" / "gradient_descent.ipynb")
    os.chown(notebook, *NOBODY)
    done, result = grade_in(laptop, notebook, "--sandbox", "unshare", user=NOBODY)
    assert done.returncode == 0, done.stderr
    assert result["score"] == 14
    sandbox = result["environment"]["sandbox"]
    assert sandbox["isolation"] == "unshare" and "user namespace" in sandbox["user"]
    assert sandbox["kernel"].startswith("forked from a pre-started image"), sandbox  # forked as a user, too
    assert not (laptop / "course" / "planted").exists()


def test_a_notebook_the_grader_cannot_read_is_a_usage_error(laptop):
    notebook = laptop / "in" / "gradient_descent.ipynb"
    shutil.copy(SOLUTIONS / "gradient_descent.ipynb", notebook)
    os.chmod(notebook, 0o600)  # root's, and the grader runs as nobody
    done, result = grade_in(laptop, notebook, "--sandbox", "unshare", user=NOBODY)
    assert done.returncode == 2 and result is None
    assert done.stderr == f"grader: error: {notebook}: cannot be read (permission denied)\n"


def test_no_isolation_only_when_asked_for_and_said_loudly(laptop):
    notebook = laptop / "in" / "gradient_descent.ipynb"
    shutil.copy(SOLUTIONS / "gradient_descent.ipynb", notebook)
    os.chown(notebook, *NOBODY)
    done, result = grade_in(laptop, notebook, "--sandbox", "none", user=NOBODY)
    assert done.returncode == 0, done.stderr
    assert result["score"] == 14, [(c["id"], c["message"]) for c in result["checks"]]
    assert result["environment"]["sandbox"]["isolation"] == "none"
    assert "NO ISOLATION" in done.stdout
    assert "NO ISOLATION" in (laptop / "out" / "feedback.html").read_text()
