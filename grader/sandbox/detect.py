"""Which isolation works on this machine, who the sandbox user is, and what that user can reach."""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from grader.errors import HarnessError
from grader.sandbox.limits import CHILD_LIB, DEFAULT_USER, ISOLATION_MODES, SYSTEM_DIRS


def sandbox_user(name: str | None = None) -> tuple[str, int, int]:
    """(name, uid, gid) of the unprivileged user a root grader runs student code as."""
    name = name or os.environ.get("GRADER_SANDBOX_USER") or DEFAULT_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if name == DEFAULT_USER:
            return name, 65534, 65534  # no passwd entry; the conventional ids still hold no rights
        raise HarnessError(f"the sandbox user {name!r} does not exist (create it, or set "
                           "GRADER_SANDBOX_USER to an unprivileged user)") from None
    if entry.pw_uid == 0:
        raise HarnessError(f"the sandbox user {name!r} is root; choose an unprivileged user")
    return name, entry.pw_uid, entry.pw_gid


def reachable_by(path: Path, uid: int, gid: int, *, read: bool = True) -> bool:
    """Whether `uid` can reach `path` by its permission bits (every ancestor searchable,
    the path itself readable, or searchable with read=False)."""
    path = Path(path).absolute()
    chain = [*reversed(path.parents), path]
    for i, part in enumerate(chain):
        try:
            info = part.stat()
        except OSError:
            return False
        last = i == len(chain) - 1
        need = (stat.S_IRUSR if read or not stat.S_ISDIR(info.st_mode) else stat.S_IXUSR) if last \
            else stat.S_IXUSR
        shift = 0 if info.st_uid == uid else 3 if info.st_gid == gid else 6
        if not info.st_mode & (need >> shift):
            return False
    return True


def writable_by(path: Path, uid: int, gid: int) -> bool:
    path = Path(path)
    if not reachable_by(path, uid, gid, read=False):
        return False
    info = path.stat()
    shift = 0 if info.st_uid == uid else 3 if info.st_gid == gid else 6
    return bool(info.st_mode & (stat.S_IWUSR >> shift))


def python_roots() -> list[Path]:
    """Directories the child's Python needs to read: prefixes and site-packages."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[key])
    roots = sorted({Path(p).resolve() for p in paths if p and Path(p).exists()}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for root in roots:
        if not any(root.is_relative_to(k) for k in kept):
            kept.append(root)
    return kept


def bound_roots() -> list[Path]:
    """What a namespace sandbox shows the child, read-only: the system and the Python environment."""
    roots = [Path(d) for d in SYSTEM_DIRS if os.path.exists(d)]
    for root in python_roots():
        if not any(root.is_relative_to(d) for d in roots):
            roots.append(root)
    return roots


def module_locations(name: str) -> list[Path]:
    """Where a top-level module lives in this environment (to hide it from the child)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return [Path(spec.origin)] if spec.origin else []


def launcher_command(spec: dict[str, Any], command: list[str], *, childlib: Path = CHILD_LIB) -> list[str]:
    return [sys.executable, "-I", "-S", str(childlib / "launch.py"), json.dumps(spec), *command]


def unshare_prefix() -> list[str]:
    prefix = [shutil.which("unshare") or "unshare"]
    if os.geteuid() != 0:
        prefix += ["--user", "--map-root-user"]
    return [*prefix, "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--kill-child", "--"]


def _runs(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == b"ok"


@functools.cache
def bwrap_available() -> bool:
    exe = shutil.which("bwrap")
    if not exe:
        return False
    return _runs([
        exe, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
        "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", sys.executable, "-I", "-S", "-c", "print('ok')"])


@functools.cache
def unshare_available() -> bool:
    """Whether launch.py can build a private view in namespaces here (and drop to the sandbox user)."""
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory(prefix="grader-probe-") as tmp:
        os.chmod(tmp, 0o755)
        drop = None
        if os.geteuid() == 0:
            _, uid, gid = sandbox_user()
            drop = [uid, gid]
        view = {"root": f"{tmp}/view", "steps": [["tmpfs", "/tmp", 1024 * 1024, 0o1777],
                                                 *(["ro", str(p)] for p in bound_roots()), ["devices"], ["proc"]]}
        return _runs([*unshare_prefix(), *launcher_command({"view": view, "drop": drop},
                                                     [sys.executable, "-I", "-S", "-c", "print('ok')"])])


def user_mode_problem(user: str | None = None) -> str:
    """Why the "user" mode cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "the grader is not root, so it cannot run student code as another user"
    name, uid, gid = sandbox_user(user)
    for root in [Path(sys.executable), *python_roots()]:
        if not reachable_by(root, uid, gid):
            return (f"the sandbox user {name!r} cannot read the Python environment at {root} "
                    "(install Python where every user can read it)")
    return ""


def choose_isolation(requested: str = "auto", *, user: str | None = None, own_code: bool = False) -> str:
    """The strongest isolation available, or the requested one if it works; never silently none, except
    for `own_code`: a student checking their own notebook on their own machine."""
    requested = requested or "auto"
    if requested not in ISOLATION_MODES:
        raise HarnessError(f"unknown sandbox mode {requested!r}; choose one of {', '.join(ISOLATION_MODES)}")
    if requested == "none":
        if os.geteuid() == 0 and not own_code:
            raise HarnessError("--sandbox none would run student code as root; use --sandbox user (an "
                               "unprivileged user, e.g. inside an LMS container) or a mode with namespaces")
        return "none"
    if requested == "user":
        problem = user_mode_problem(user)
        if problem:
            raise HarnessError(f"sandbox mode 'user' does not work here: {problem}")
        return "user"
    if requested != "auto":
        available = bwrap_available() if requested == "bwrap" else unshare_available()
        if not available:
            raise HarnessError(f"sandbox mode {requested!r} was asked for but does not work on this machine")
        return requested
    if bwrap_available():
        return "bwrap"
    if unshare_available():
        return "unshare"
    problem = user_mode_problem(user)
    if not problem:
        return "user"
    if own_code:
        return "none"
    raise HarnessError("no sandbox works on this machine: bubblewrap is missing and namespaces are not "
                       f"available, and {problem}. Install bubblewrap, enable user namespaces, run as root "
                       "with an unprivileged GRADER_SANDBOX_USER, or pass --sandbox none to run student "
                       "code without isolation")
