"""The sandbox in each namespace mode this machine offers: what the child can and cannot do.

The modes without namespaces ("user" inside an LMS container, "none" on a laptop)
need a machine laid out for them: tests/test_fallback_modes.py.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import REPO, SESSION_WARM
from grader.child import protocol
from grader.errors import HarnessError
from grader.kernel.session import KernelSession
from grader.sandbox import detect
from grader.sandbox.detect import bwrap_available, choose_isolation, unshare_available
from grader.sandbox.exchange import write_value
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import Limits
from workers import SANDBOX_USER_GROUP

MODES = [pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_available(), reason="bwrap does not work here")),
         pytest.param("unshare", marks=pytest.mark.skipif(not unshare_available(),
                                                          reason="unshare does not work here")),
         # "unshare" with the kernel forked from a pre-started image (tests/test_kernel_image.py)
         pytest.param("image", marks=pytest.mark.skipif(not unshare_available(), reason="unshare does not work here"))]


def run_in(mode: str, source: str, limits: Limits = Limits(memory_mb=1024),
           **sandbox_args) -> tuple[str, dict, Path]:
    image = SESSION_WARM.images.get(("numpy",), sandbox_args.get("blocked_modules", ())) if mode == "image" else None
    with Sandbox(limits, isolation="unshare" if image else mode, image=image, **sandbox_args) as sandbox:
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
    assert protections["isolation"] == ("unshare" if mode == "image" else mode)
    assert protections["kernel"].startswith("forked") if mode == "image" else protections["kernel"] == "started cold"
    assert f"cwd {root}/work" in output
    assert not root.exists(), "the sandbox's directories are removed afterwards"


@pytest.mark.parametrize("mode", MODES)
def test_no_network_in_namespaced_modes(mode):
    code = ("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', e)")
    output, protections, _ = run_in(mode, code)
    assert protections["network"] == "isolated"
    assert "refused" in output and "CONNECTED" not in output


@pytest.mark.parametrize("mode", MODES)
def test_the_child_sees_no_course_files_no_grader_and_no_blocked_module(mode, tmp_path):
    secret = tmp_path / "data"
    secret.mkdir()
    (secret / "labels.npy").write_text("secret")
    code = (f"import os, sys\nprint('solutions visible', os.path.exists({str(REPO / 'solutions')!r}))\n"
            f"print('data visible', os.path.exists({str(secret / 'labels.npy')!r}))\n"
            "import importlib.util\nfor name in ('torch', 'grader'):\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    files = [os.listdir(p) for p in (spec.submodule_search_locations or [])] if spec else None\n"
            "    print(name, 'files', files)")
    output, _, _ = run_in(mode, code, blocked_modules=("torch",), hidden_paths=(secret,))
    assert "solutions visible False" in output and "data visible False" in output, output
    assert "torch files None" in output or "torch files [[]]" in output, output  # absent, or an empty mount
    assert "grader files None" in output or "grader files [[]]" in output, output


@pytest.mark.parametrize("mode", MODES)
def test_student_code_never_runs_as_root(mode):
    code = ("import os\nprint('uid', os.getuid())\nprint('map', open('/proc/self/uid_map').read().split())\n"
            "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('CapEff')])")
    output, protections, _ = run_in(mode, code)
    _inside, outside, _ = output.split("map [")[1].split("]")[0].replace("'", "").split(", ")
    assert "uid 0" not in output or outside != "0", output  # root inside only when it is another user outside
    assert "['0000000000000000']" in output, output  # no capabilities whatever the uid
    if os.geteuid() == 0:
        assert protections["user"] == "nobody" and "uid 65534" in output


@pytest.mark.parametrize("mode", MODES)
def test_the_child_cannot_reach_the_grader_or_other_processes(mode):
    code = ("import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
            "cmds = [open(f'/proc/{p}/cmdline', 'rb').read() for p in pids]\n"
            "print('pytest seen', any(b'pytest' in c for c in cmds), 'processes', len(pids))\n"
            "print('cgroup writable', os.access('/sys/fs/cgroup', os.W_OK))")
    output, _, _ = run_in(mode, code)
    assert "pytest seen False" in output and "cgroup writable False" in output, output


@pytest.mark.parametrize("mode", MODES)
def test_writable_space_is_size_limited(mode):
    code = ("import os\nfor where in ('.', '/tmp', '/dev/shm'):\n    try:\n"
            "        with open(os.path.join(where, 'big'), 'wb') as f:\n"
            "            for _ in range(40):\n                f.write(b'x' * 2 ** 20)\n"
            "        print(where, 'wrote 40 MB')\n    except OSError as e:\n        print(where, 'refused', e)")
    output, protections, _ = run_in(mode, code, Limits(memory_mb=1024, disk_mb=16, tmp_mb=16))
    assert output.count("No space left on device") == 3, output
    assert "tmpfs 16 MB" in protections["writable"]


@pytest.mark.parametrize("mode", MODES)
def test_shared_memory_and_temp_files_die_with_the_sandbox(mode):
    code = ("import ctypes, os\nprint('shm', ctypes.CDLL(None).shmget(0x6eed, 4096, 0o1666))\n"
            "for d in ('/dev/shm', '/var/tmp', '/run/lock'):\n    try:\n"
            "        open(os.path.join(d, 'left-behind'), 'w').write('x')\n    except OSError as e:\n"
            "        print(d, 'refused')")
    before = Path("/proc/sysvipc/shm").read_text()
    output, _, _ = run_in(mode, code)
    assert "shm -1" not in output, output
    assert Path("/proc/sysvipc/shm").read_text() == before
    assert not any(Path(d, "left-behind").exists() for d in ("/dev/shm", "/var/tmp", "/run/lock"))


def test_blocked_module_import_fails_with_a_reason():
    """Where the module's files are hidden the import fails anyway; the hook gives it a reason."""
    with Sandbox(Limits(), isolation=choose_isolation("auto"), blocked_modules=("torch",)) as sandbox:
        request = sandbox.exchange / "prepare"
        request.mkdir()
        write_value(protocol.to_wire(protocol.Prepare(seed=0, blocked_modules=("torch",),
                                                      block_reason="not allowed here")), request)
        session = KernelSession(sandbox)
        session.start()
        try:
            session.run(f'__import__("sys").path.insert(0, {str(sandbox.childlib)!r})\n'
                        f'__import__("grader_child.prepare").prepare.run({str(request)!r})', timeout_s=30)
            run = session.run("import torch", timeout_s=30)
        finally:
            session.stop()
    assert run.error_name == "ModuleNotFoundError" and "not allowed here" in run.error_value


@pytest.mark.parametrize("mode", MODES)
def test_no_processes_are_left_behind(mode):
    # durations no other process on the machine uses (someone's `sleep 300` is not a leak of ours)
    seconds = [f"{300 + n}.{uuid.uuid4().int % 10**6:06d}" for n in range(2)]
    code = ("import subprocess, os\n"
            f"subprocess.Popen(['sleep', '{seconds[0]}'], start_new_session=True)\n"
            f"os.system('(sleep {seconds[1]} &)')\nprint('spawned')")
    output, _, _ = run_in(mode, code)
    assert "spawned" in output
    left = [p for p in os.listdir("/proc")
            if p.isdigit() and _cmdline(p) in (f"sleep {seconds[0]}", f"sleep {seconds[1]}")]
    assert left == []


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root could run student code as root")
def test_none_is_refused_as_root():
    with pytest.raises(HarnessError, match="would run student code as root"):
        choose_isolation("none")


def test_auto_never_falls_back_to_no_isolation(monkeypatch):
    monkeypatch.setattr(detect, "bwrap_available", lambda: False)
    monkeypatch.setattr(detect, "unshare_available", lambda: False)
    monkeypatch.setattr(detect, "user_mode_problem", lambda user=None: "the grader is not root")
    with pytest.raises(HarnessError, match=r"no sandbox works on this machine.*pass --sandbox none"):
        choose_isolation("auto")


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(HarnessError, match="unknown sandbox mode 'docker'"):
        Sandbox(Limits(), isolation="docker")


def test_the_grader_holds_bounded_memory_whatever_the_kernel_sends(tmp_path):
    """Widget messages with large buffers, a huge display: the grader keeps none of it."""
    import subprocess
    import sys

    script = tmp_path / "flood.py"
    script.write_text(
        "import resource\nfrom grader.kernel.session import KernelSession\n"
        "from grader.sandbox.limits import Limits\nfrom grader.sandbox.jail import Sandbox\n"
        "flood = ('from ipykernel.comm import Comm\\nimport os\\n'\n"
        "         'c = Comm(target_name=\"jupyter.widget\", data={\"state\": {\"_model_name\": \"x\"}})\\n'\n"
        "         'for i in range(8):\\n'\n"
        "         '    c.send(data={\"state\": {\"v\": i}, \"buffer_paths\": [[\"a\"]]}, "
        "buffers=[os.urandom(50 * 2 ** 20)])\\n'\n"
        "         'from IPython.display import display\\n'\n"
        "         'display({\"text/plain\": \"y\" * (40 * 2 ** 20)}, raw=True)\\n')\n"
        "with Sandbox(Limits(memory_mb=2048)) as sandbox:\n"
        "    session = KernelSession(sandbox)\n    session.start()\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    run = session.run(flood, timeout_s=60)\n    session.stop()\n"
        "print('grew_mb', (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, run.status)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    grew = int(done.stdout.split("grew_mb")[1].split()[0])
    assert grew < 150, done.stdout + done.stderr  # 440 MB were sent


@SANDBOX_USER_GROUP
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs root to act as the sandbox user, and a Python it can run")
def test_a_sysv_object_given_away_is_still_swept_by_its_creator():
    # the user mode's sweep matched the owner only: IPC_SET to root hid a segment from it
    from grader.sandbox.reaping import ipc_objects_of, sweep_user

    give_away = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "ident = libc.shmget(0, 4096, 0o1600)\n"  # IPC_PRIVATE, IPC_CREAT | 0600
        "buffer = ctypes.create_string_buffer(256)\n"
        "assert libc.shmctl(ident, 2, buffer) == 0\n"  # IPC_STAT
        "buffer[4:8] = (0).to_bytes(4, 'little')\n"  # ipc_perm.uid: root's now
        "assert libc.shmctl(ident, 1, buffer) == 0\n"  # IPC_SET
        "print(ident)\n")
    nobody = pwd.getpwnam("nobody").pw_uid
    done = subprocess.run(["/usr/bin/python3", "-c", give_away], user=nobody, capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    ident = int(done.stdout)
    assert ("shm", ident) in ipc_objects_of(nobody)
    assert f"SysV shm {ident}" in sweep_user(nobody, processes=False)
    assert ("shm", ident) not in ipc_objects_of(nobody) and f" {ident} " not in Path("/proc/sysvipc/shm").read_text()


@SANDBOX_USER_GROUP
@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs root to act as the sandbox user, and a Python it can run")
def test_the_process_limit_counts_the_threads_the_sandbox_user_already_runs(monkeypatch):
    # RLIMIT_NPROC counts every thread of the user on the machine: counted as processes, 300 sleeping
    # threads of another grade (or of a TA's browser, without a sandbox user) ate a kernel's allowance
    # where no cgroup backs the limit up (an LMS container)
    from grader.sandbox.reaping import Cgroups, tasks_of

    def not_writable(*args, **kwargs):
        raise OSError("cgroups are read-only here")

    monkeypatch.setattr(Cgroups, "_create", not_writable)

    nobody = pwd.getpwnam("nobody").pw_uid
    threads = ("import threading, time\nfor _ in range(300):\n"
               "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
               "print('ready', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen(["/usr/bin/python3", "-c", threads], user=nobody, stdout=subprocess.PIPE, text=True,
                              cwd="/")
    try:
        assert holder.stdout.readline() == "ready\n"
        with Sandbox(Limits(), isolation=choose_isolation("auto")) as sandbox:
            assert sandbox._cgroups.kind == "none"
            allowed = sandbox._rlimits()["RLIMIT_NPROC"]
        assert allowed - tasks_of(nobody) >= Limits().max_processes
    finally:
        holder.kill()
        holder.wait()
