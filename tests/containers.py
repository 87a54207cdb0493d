"""Simulated machines for the sandbox modes this test machine does not offer as it is.

The suite runs as root, with Python under /root (mode 0700) where `nobody`
cannot read it, and with namespaces available. An LMS container (Gradescope,
PrairieLearn) and a TA's laptop differ: Python is readable by every user, the
grader may run as an ordinary user, and namespaces may be missing.
`run_in_container` runs a command in a private mount namespace laid out like
such a machine: /root becomes a tmpfs that every user may cross, with the
Python installation bound back at its place, and nothing else changes. The
command then runs as root (an LMS container) or as another user (a TA's
laptop), and the grader inside picks its sandbox mode from what it finds, or
from --sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "grader" / "child" / "launch.py"

_INIT = textwrap.dedent('''
    import ctypes, json, os, struct, sys, tempfile

    def deny_namespaces_and_drop_capabilities():
        # Docker's default seccomp profile and capability set, as far as a sandbox can tell: no new
        # namespaces (unshare, setns, clone with CLONE_NEW*; clone3 "not implemented", so that libc falls
        # back to clone), no mounts, and only Docker's 14 default capabilities (no CAP_SYS_ADMIN)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        allow, eperm, enosys = 0x7FFF0000, 0x00050001, 0x00050026
        unshare, setns, clone, clone3, mount, umount2 = 272, 308, 56, 435, 165, 166
        clone_new = 0x7E020080  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWTIME
        ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
        program = [
            (ld, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, allow),  # not x86_64: leave it be
            (ld, 0, 0, 0),
            (jeq, 0, 1, unshare), (ret, 0, 0, eperm),
            (jeq, 0, 1, setns), (ret, 0, 0, eperm),
            (jeq, 0, 1, mount), (ret, 0, 0, eperm),
            (jeq, 0, 1, umount2), (ret, 0, 0, eperm),
            (jeq, 0, 1, clone3), (ret, 0, 0, enosys),
            (jeq, 0, 3, clone), (ld, 0, 0, 16), (jset, 0, 1, clone_new), (ret, 0, 0, eperm),
            (ret, 0, 0, allow),
        ]
        filters = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
        buffer = ctypes.create_string_buffer(filters)
        fprog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buffer))
        fprog_buffer = ctypes.create_string_buffer(fprog)
        if libc.prctl(22, 2, ctypes.addressof(fprog_buffer), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            raise OSError(ctypes.get_errno(), "seccomp")
        kept = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31}  # Docker's default capabilities
        for capability in range(41):
            if capability not in kept:
                libc.prctl(24, capability, 0, 0, 0)  # PR_CAPBSET_DROP (a root exec gets the bounding set)
    sys.path.insert(0, os.path.dirname(LAUNCH))
    import launch
    spec = json.loads(sys.argv[1])
    launch.mount(None, "/", None, launch.MS_REC | launch.MS_PRIVATE)
    for hidden_parent, kept in spec["expose"]:
        # bind what must stay, cover its unreadable parent with a tmpfs every user may cross, bind it back
        staging = tempfile.mkdtemp(prefix="container-")
        launch._bind(kept, staging, read_only=False)
        launch._tmpfs(hidden_parent, size=1 << 20, mode=0o755)
        launch._bind(staging, kept, read_only=False)
        launch._check(launch._libc.umount2(staging.encode(), 2), "umount staging")
        os.rmdir(staging)
    for source, target in spec["binds"]:
        launch._bind(source, target, read_only=False)
    if spec["docker"]:
        deny_namespaces_and_drop_capabilities()
    if spec["user"] is not None:
        uid, gid = spec["user"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    os.chdir(spec["cwd"])
    os.execvpe(sys.argv[2], sys.argv[2:], spec["env"])
''').replace("LAUNCH", repr(str(LAUNCH)))


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def _unreadable_parents() -> list[tuple[str, str]]:
    """(directory nobody can cross, the Python installation under it) pairs to expose."""
    pairs = []
    for root in {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}:
        for parent in root.parents:
            if parent != Path("/") and not parent.stat().st_mode & 0o001:
                pairs.append((str(parent), str(root)))
                break
    return sorted(set(pairs))


def run_in_container(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
                     user: tuple[int, int] | None = None, binds: list[tuple[Path, Path]] = (),
                     timeout: float = 600, docker: bool = False) -> subprocess.CompletedProcess:
    """Run argv as root (or as `user`) in a container-like view of this machine; binds are
    (host path, path inside) pairs, e.g. a root-only directory holding course and data. With `docker`,
    as Docker's defaults confine a container: namespace creation and mounts denied by a seccomp filter,
    Docker's default capabilities only (a grader there finds no namespaces and degrades by itself)."""
    spec = {"expose": _unreadable_parents(), "binds": [[str(a), str(b)] for a, b in binds],
            "user": list(user) if user else None, "cwd": str(cwd), "docker": docker,
            "env": {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
                    "HOME": str(cwd), **(env or {})}}
    command = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I", "-S", "-c", _INIT,
               json.dumps(spec), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def grader_command() -> list[str]:
    return [str(Path(sys.executable).parent / "grader")]
