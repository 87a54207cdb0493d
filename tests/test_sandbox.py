"""The sandbox in each mode this machine offers: what the child can and cannot do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import REPO
from grader.kernel import KernelSession
from grader.sandbox import Limits, Sandbox, bwrap_available, unshare_available

MODES = [pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_available(), reason="bwrap does not work here")),
         pytest.param("unshare", marks=pytest.mark.skipif(not unshare_available(),
                                                          reason="unshare does not work here")),
         "none"]


def run_in(mode: str, source: str, **sandbox_args) -> tuple[str, dict, Path]:
    with Sandbox(Limits(memory_mb=1024), isolation=mode, **sandbox_args) as sandbox:
        session = KernelSession(sandbox)
        session.start()
        try:
            run = session.run(source, timeout_s=30)
        finally:
            session.stop()
        root = sandbox.root
        return run.output_text + run.error_value, sandbox.protections().to_dict(), root


@pytest.mark.parametrize("mode", MODES)
def test_child_runs_and_protections_are_recorded(mode):
    output, protections, root = run_in(mode, "import os; print('uid', os.getuid(), 'cwd', os.getcwd())")
    assert protections["isolation"] == mode
    assert f"cwd {root}/work" in output
    if os.geteuid() == 0 and protections["user"] == "nobody":
        assert "uid 65534" in output
    assert not root.exists(), "the sandbox's directories are removed afterwards"


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_no_network_in_namespaced_modes(mode):
    code = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', e)")
    output, protections, _ = run_in(mode, code)
    assert protections["network"] == "isolated"
    assert "refused" in output and "CONNECTED" not in output


@pytest.mark.skipif(not bwrap_available(), reason="bwrap does not work here")
def test_bwrap_child_sees_no_course_files_and_no_blocked_module():
    code = (f"import os\nprint('solutions visible', os.path.exists({str(REPO / 'solutions')!r}))\n"
            "import importlib.util\nprint('torch found', importlib.util.find_spec('torch') is not None)\n"
            "import sys\nprint('torch files', [os.listdir(p) for p in sys.path if os.path.isdir(os.path.join(p, 'torch'))"
            " for p in [os.path.join(p, 'torch')]])")
    output, _, _ = run_in("bwrap", code, blocked_modules=("torch",))
    assert "solutions visible False" in output
    assert "torch files [[]]" in output, output  # the package directory is an empty mount


def test_blocked_module_import_fails_with_a_reason_in_every_mode():
    for mode in ("none",):
        with Sandbox(Limits(), isolation=mode, blocked_modules=("torch",)) as sandbox:
            session = KernelSession(sandbox)
            session.start()
            try:
                session.run(f'__import__("sys").path.insert(0, {str(sandbox.childlib)!r})\n'
                            '__import__("grader_child.prepare").prepare.prepare(0, ["torch"], "not allowed here")',
                            timeout_s=30)
                run = session.run("import torch", timeout_s=30)
            finally:
                session.stop()
        assert run.error_name == "ModuleNotFoundError" and "not allowed here" in run.error_value


@pytest.mark.parametrize("mode", MODES)
def test_no_processes_are_left_behind(mode):
    code = ("import subprocess, os\n"
            "subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
            "os.system('(sleep 301 &)')\nprint('spawned')")
    output, _, _ = run_in(mode, code)
    assert "spawned" in output
    left = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).startswith(("sleep 300", "sleep 301"))]
    assert left == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_unknown_mode_is_a_clear_error():
    from grader.errors import HarnessError

    with pytest.raises(HarnessError, match="unknown sandbox mode 'docker'"):
        Sandbox(Limits(), isolation="docker")
