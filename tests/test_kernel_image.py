"""Kernels forked from a pre-started image (grader/child/forkserver.py): as isolated as cold ones, each
fresh, the same scores, and a failing image costs speed only.

The sandbox's own properties under the image (network, files, root, limits) are in test_sandbox.py's
"image" mode; this file holds what is particular to forking.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (
    SESSION_WARM,
    SOLUTIONS,
    TEMPLATES,
    assignment,
    edit_source,
    grade,
    load,
    save,
    scores,
    with_cell,
)
from grader.kernel.session import KernelSession
from grader.sandbox.detect import unshare_available
from grader.sandbox.image import BASE_MODULES, KernelImage, KernelImages
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import Limits

pytestmark = pytest.mark.skipif(not unshare_available(), reason="the image forks into namespaces this machine lacks")

NUMPY_IMAGE = ("numpy", "matplotlib.pyplot")


def run_cells(sources: list[str], image: KernelImage, **sandbox_args) -> tuple[list[str], dict]:
    with Sandbox(Limits(memory_mb=1024), isolation="auto", image=image, **sandbox_args) as sandbox:
        session = KernelSession(sandbox)
        session.start()
        try:
            runs = [session.run(source, timeout_s=30) for source in sources]
        finally:
            session.stop()
        return [run.output_text + run.error_value for run in runs], sandbox.protections().to_dict()


def test_image_and_cold_kernels_give_the_same_scores(options, tmp_path):
    spec = assignment("gradient-descent")
    notebooks = [SOLUTIONS / "gradient_descent.ipynb", _sign_error(tmp_path), TEMPLATES / spec.notebook]
    image_options = dataclasses.replace(options, isolation="auto", kernel_image=True)
    cold_options = dataclasses.replace(options, isolation="auto", kernel_image=False)
    for notebook in notebooks:
        forked, cold = grade(notebook, spec, image_options), grade(notebook, spec, cold_options)
        assert scores(forked) == scores(cold), notebook.name
        assert forked.environment["sandbox"]["kernel"].startswith("forked from a pre-started image"), forked.environment
        assert cold.environment["sandbox"]["kernel"] == "started cold"
        assert forked.environment["sandbox"]["isolation"] == "unshare"


def _sign_error(tmp_path: Path) -> Path:
    notebook = edit_source(load(SOLUTIONS / "gradient_descent.ipynb"), "linear_grad",
                           "residual = a * x + b - y", "residual = y - a * x - b")
    return save(notebook, tmp_path / "sign_error.ipynb")


def test_every_submission_gets_a_fresh_kernel():
    image = SESSION_WARM.images.get(NUMPY_IMAGE)
    first, _ = run_cells(["import numpy, builtins, os\nnumpy.mean = lambda *a: 42\nbuiltins.planted = 'x'\n"
                          "open('/tmp/planted', 'w').write('x')\nprint('pid', os.getpid(), 'planted')"], image)
    second, protections = run_cells([
        "import numpy, builtins, os\n"
        "print('mean', numpy.mean([1.0, 3.0]), 'planted', hasattr(builtins, 'planted'),"
        " os.path.exists('/tmp/planted'))"], image)
    assert "planted" in first[0]
    assert "mean 2.0 planted False False" in second[0], second
    assert protections["kernel"].startswith("forked"), protections


def test_a_forked_kernel_is_pid_1_of_its_own_namespace_and_cannot_touch_the_image():
    image = SESSION_WARM.images.get(NUMPY_IMAGE)
    outputs, _ = run_cells([
        "import os\nprint('ppid', os.getppid(), 'pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        "import grader_child, sys\nroot = os.path.dirname(os.path.dirname(grader_child.__file__))\n"
        "try:\n    open(os.path.join(root, 'grader_child', 'prepare.py'), 'a').write('# planted')\n"
        "    print('image writable')\nexcept OSError as e:\n    print('image refused', e.errno)\n"
        "import socket\nlinks = [os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')]\n"
        "print('unix sockets', sum(l.startswith('socket:') for l in links))"], image)
    assert "ppid 0" in outputs[0], outputs  # its parent lives outside its pid namespace
    pids = eval(outputs[0].split("pids ")[1].split("\n")[0])
    assert pids[0] == 1 and len(pids) < 5, outputs  # the kernel and what it runs; nothing of the grader
    assert "image refused" in outputs[0], outputs
    assert image.problem == "", image.problem


def test_an_image_that_cannot_start_leaves_kernels_cold():
    image = KernelImage(("grader_no_such_module",)).start()
    outputs, protections = run_cells(["print(1 + 1)"], image)
    assert outputs == ["2\n"]
    assert protections["kernel"] == "started cold"
    assert any("kernel image failed" in note and "grader_no_such_module" in note
               for note in protections["notes"]), protections
    assert image.root is None, "a failed image removes its directory"


def test_an_image_never_holds_a_blocked_module():
    image = KernelImage(("numpy", "torch"), blocked=("torch",)).start()
    outputs, protections = run_cells(["import sys\nprint('torch' in sys.modules)"], image,
                                     blocked_modules=("torch",))
    assert outputs == ["False\n"] and protections["kernel"] == "started cold"
    assert "which this assignment blocks" in " ".join(protections["notes"])


def test_a_numpy_only_assignment_forks_from_an_image_without_torch(options):
    spec = assignment("gradient-descent")
    assert "torch" in spec.blocked_modules
    image = SESSION_WARM.image_for(spec, dataclasses.replace(options, isolation="auto", kernel_image=True))
    assert image is not None and not any(m.split(".")[0] == "torch" for m in image.modules)
    outputs, protections = run_cells(["import sys\nprint('torch loaded', 'torch' in sys.modules)"], image,
                                      blocked_modules=spec.blocked_modules)
    assert outputs == ["torch loaded False\n"] and protections["kernel"].startswith("forked")


def test_a_forked_kernel_is_interrupted_and_killed_like_a_cold_one():
    image = SESSION_WARM.images.get(NUMPY_IMAGE)
    with Sandbox(Limits(memory_mb=1024), image=image) as sandbox:
        session = KernelSession(sandbox)
        session.start()
        try:
            spin = session.run("while True:\n    pass", timeout_s=2)
            after = session.run("print('still here')", timeout_s=10)
            hog = session.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                              "while True:\n    pass", timeout_s=2)
            dead = session.run("print('x')", timeout_s=10)
            session.restart()
            restarted = session.run("print('back')", timeout_s=10)
            crash = session.run("import os\nos._exit(3)", timeout_s=10)
        finally:
            session.stop()
    assert spin.status == "timeout" and spin.error_value == "interrupted"
    assert after.output_text == "still here\n"
    assert hog.status == "timeout" and "killed" in hog.error_value
    assert dead.status == "died"
    assert restarted.output_text == "back\n"
    assert crash.status == "died" and "exit status 3" in crash.error_value, crash


@pytest.mark.parametrize("kernel", ["forked", "cold"])
def test_the_image_and_its_kernels_die_with_the_grader(tmp_path, kernel):
    """A grader killed outright (SIGKILL: no atexit) leaves neither the image nor a kernel running: a kernel
    forked from the image, or one started cold in the unshare mode (which has no --die-with-parent of
    its own, as bubblewrap has)."""
    script = tmp_path / "killed_grader.py"
    image = f"KernelImage({NUMPY_IMAGE!r}).start()" if kernel == "forked" else "None"
    script.write_text(
        "import os, time\nfrom grader.kernel.session import KernelSession\n"
        "from grader.sandbox.limits import Limits\nfrom grader.sandbox.jail import Sandbox\n"
        "from grader.sandbox.image import KernelImage\n"
        f"image = {image}\n"
        "sandbox = Sandbox(Limits(memory_mb=1024), image=image, isolation='unshare').__enter__()\n"
        "session = KernelSession(sandbox)\nsession.start()\n"
        "session.run('import subprocess; subprocess.Popen([\"sleep\", \"302\"], start_new_session=True)', "
        "timeout_s=30)\n"
        "print('ready', flush=True)\ntime.sleep(300)\n")
    grader = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert grader.stdout.readline() == "ready\n"
        started = _descendants(grader.pid)
        # forked: the image, a keeper, the kernel and its sleep; cold: unshare, the kernel and its sleep
        assert len(started) >= (4 if kernel == "forked" else 3), started
        assert any("ipykernel_launcher" in command for command in started.values()) == (kernel == "cold")
    finally:
        grader.kill()
        grader.wait()
    assert _left_running_after(started, seconds=10) == []
    # What no process removes any more (the image's directory, the sandbox's root and cgroups) goes when
    # the next grading starts.
    left = _owned_by(grader.pid)
    assert any(root.name.startswith("grader-image-") for root in left) == (kernel == "forked"), left
    assert len(left) >= (2 if kernel == "forked" else 1), left
    subprocess.run([sys.executable, "-m", "grader", "grade", str(SOLUTIONS / "gradient_descent.ipynb"),
                    "--out", str(tmp_path / "out"), "--device", "cpu"], check=True, capture_output=True)
    assert [root for root in left if root.exists()] == []


# Plays the image for one spawn request, on a machine busy enough that a parent ends before its fork's
# first steps ("image": the image exits before the keeper runs its first line) or while the kernel is
# being set up ("keeper": the keeper is killed then). What a kernel becomes is replaced by a line in
# MARKER: a process that gets there outlived the process it must die with.
_PARENT_ENDS_FIRST = """
import os, signal, sys, time
from grader.child import forkserver, launch

race, marker, stderr = sys.argv[1:]

def note(line):
    with open(marker, "a") as f:
        f.write(line + "\\n")

def became_a_kernel(request, base_path):
    note(f"kernel {os.readlink('/proc/self')}")
    time.sleep(60)

def building(view):
    note("building")
    time.sleep(2)

original_prctl, slept = launch._prctl, []
def late_prctl(option, *args):  # the keeper's first line runs once the image has gone
    if race == "image" and not slept:
        slept.append(True)
        time.sleep(2)
    return original_prctl(option, *args)

forkserver._become_fresh_interpreter, launch.build_view, launch._prctl = became_a_kernel, building, late_prctl
request = {"stderr": stderr, "cgroups": [], "rlimits": {}, "user_namespace": os.getuid() != 0, "view": {},
           "chown": [], "drop": None, "chdir": "/", "threads": 1}
status, status_for_keeper = os.pipe()
image = os.getpid()
keeper = os.fork()
if keeper == 0:
    forkserver._keeper(request, status_for_keeper, [], image)
if race == "keeper":
    while not os.path.exists(marker):
        time.sleep(0.01)
    os.kill(keeper, signal.SIGKILL)
    os.waitpid(keeper, 0)
"""


@pytest.mark.parametrize("race", ["image", "keeper"])
def test_a_kernel_never_outlives_a_parent_that_ended_before_it_could_follow(tmp_path, race):
    marker, stderr = tmp_path / "marker", tmp_path / "stderr"
    script = tmp_path / "image.py"
    script.write_text(_PARENT_ENDS_FIRST)
    with open(tmp_path / "image.log", "wb") as image_log:  # the keeper's until it opens the kernel's
        subprocess.run([sys.executable, str(script), race, str(marker), str(stderr)], stderr=image_log,
                       check=True, timeout=30)
    time.sleep(4)  # past the two seconds the race's parent slept
    lines = marker.read_text().splitlines() if marker.exists() else []
    escaped = [int(line.split()[1]) for line in lines if line.startswith("kernel ")]
    for pid in escaped:
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    assert escaped == [], lines
    ended = "the kernel image ended before this keeper started" if race == "image" else (
        "the sandbox's keeper ended while its kernel was being set up")
    said = "".join(log.read_text() for log in (tmp_path / "image.log", stderr) if log.exists())
    assert ended in said


def test_an_image_started_ahead_imports_what_the_assignment_then_names():
    """`grader grade` starts its image before it loads the course; the assignment's helpers come after."""
    images = KernelImages()
    try:
        images.start_ahead()
        ahead = images._ahead
        torch_assignment = (*BASE_MODULES, "grader_child.model")
        image = images.get(torch_assignment, ("tensorflow",))
        assert image is ahead and image.modules == torch_assignment and image.blocked == ("tensorflow",)
        cells = ["import sys\nprint('torch' in sys.modules, 'grader_child.model' in sys.modules)",
                 "import debugpy\nprint(debugpy.__name__)"]
        outputs, protections = run_cells(cells, image)
        assert outputs == ["True True\n", "debugpy\n"], outputs  # and a kernel may import what the image kept out
        assert protections["kernel"].startswith("forked from a pre-started image that imported numpy, "
                                                "matplotlib.pyplot, grader_child.prepare, grader_child.model")
    finally:
        images.close()
    assert ahead._process is None and ahead.root is None


def test_an_image_started_ahead_that_holds_what_the_assignment_blocks_is_replaced():
    images = KernelImages()
    try:
        images.start_ahead()
        ahead = images._ahead
        process = ahead._process
        image = images.get(("numpy", "grader_child.prepare"), ("matplotlib",))
        assert image is not ahead and process.wait(timeout=10) is not None
        outputs, protections = run_cells(["import sys\nprint('matplotlib' in sys.modules)"], image,
                                         blocked_modules=("matplotlib",))
        assert outputs == ["False\n"] and protections["kernel"].startswith("forked"), protections
    finally:
        images.close()


def test_an_image_started_ahead_and_never_needed_ends_with_its_owner():
    """A notebook that names no known assignment: the command ends, and the image with it."""
    images = KernelImages()
    images.start_ahead()
    process, root = images._ahead._process, images._ahead.root
    images.close()
    assert process.poll() is not None and not root.exists()


def test_channels_attached_to_one_image_fork_from_it_and_it_ends_with_its_owner():
    image = KernelImage(NUMPY_IMAGE).start()
    image.attach().close()  # a worker gone before the image was ready to hear of it
    first, second = image.attach(), image.attach()
    for channel in (first, second, image):
        outputs, protections = run_cells(["print(6 * 7)"], channel)
        assert outputs == ["42\n"] and protections["kernel"].startswith("forked"), protections
    first.close()  # a worker's end: the image serves on
    assert image._process.poll() is None
    assert run_cells(["print(1)"], second)[1]["kernel"].startswith("forked")
    image.close()  # the owner's end: the image is gone, and an attached channel only starts kernels cold
    outputs, protections = run_cells(["print(2)"], second)
    assert outputs == ["2\n"] and protections["kernel"] == "started cold", protections
    assert any("kernel image failed" in note for note in protections["notes"]), protections


def test_a_parallel_batch_forks_workers_that_share_one_image_and_die_with_the_batch(tmp_path):
    """-j 2 from the command line: two workers forked from the batch, one kernel image for both; a batch
    killed outright leaves no worker, image, keeper or kernel behind."""
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    save(load(SOLUTIONS / "gradient_descent.ipynb"), class_dir / "a_done.ipynb")
    save(load(TEMPLATES / "gradient_descent.ipynb"), class_dir / "b_untouched.ipynb")
    for name in ("c_stuck", "d_stuck"):  # graded last, each holds a worker until the batch is killed
        save(with_cell(load(SOLUTIONS / "gradient_descent.ipynb"), "import time\ntime.sleep(300)"),
             class_dir / f"{name}.ipynb")
    out = tmp_path / "out"
    batch = subprocess.Popen([sys.executable, "-m", "grader", "batch", str(class_dir), "--assignment",
                              "gradient-descent", "--out", str(out), "-j", "2", "--device", "cpu", "--sandbox", "auto"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("*/result.json"))) < 2 and time.monotonic() < deadline:
            assert batch.poll() is None, batch.stderr.read()
            time.sleep(0.2)
        time.sleep(2)  # both workers now in a stuck notebook's sleep
        started, parents = _descendants(batch.pid), _parents()
        children = [cmd for pid, cmd in started.items() if parents.get(pid) == batch.pid]
        # the image's keepers and kernels are forks of it, named as it is, but not the batch's children
        assert sum("forkserver.main" in cmd for cmd in children) == 1, children
        assert sum(cmd.startswith(f"{sys.executable} -m grader batch") for cmd in children) == 2, children
        assert sum("forkserver.main" in cmd for cmd in started.values()) == 5, "the image, 2 keepers, 2 kernels"
        scores = {path.parent.name: json.loads(path.read_text())["score"] for path in out.glob("*/result.json")}
        assert scores == {"a_done": 14, "b_untouched": 0}, scores
    finally:
        batch.kill()
        batch.wait()
    assert _left_running_after(started, seconds=10) == []


def _owned_by(pid: int) -> list[Path]:
    """The sandbox and image directories whose owner record names `pid`."""
    owned = []
    for root in Path(tempfile.gettempdir()).glob("grader-*"):
        try:
            if json.loads((root / "owner.json").read_text())["pid"] == pid:
                owned.append(root)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return owned


def _parents() -> dict[int, int]:
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def _descendants(root: int) -> dict[int, str]:
    parents, found, frontier = _parents(), {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, its_parent in parents.items():
            if its_parent == parent and pid not in found:
                found[pid] = _cmdline(pid)
                frontier.append(pid)
    return found


def _left_running_after(processes: dict[int, str], *, seconds: float) -> list[str]:
    """Those of `processes` still alive once they had `seconds` to end."""
    deadline = time.monotonic() + seconds
    while _still_running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _still_running(processes)


def _still_running(processes: dict[int, str]) -> list[str]:
    """Those of `processes` still alive (a pid reused by something else does not count)."""
    return [cmd for pid, cmd in processes.items() if _cmdline(pid) == cmd and not _is_zombie(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
