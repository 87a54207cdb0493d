"""The child process that runs student code, and everything that limits it.

This is the only module that starts processes. A `Sandbox` owns one
submission's private directories, its cgroups and the kernel it launches
(through `SandboxedKernelManager`, which jupyter_client calls to build the
command line); leaving the `with` block kills whatever is still running and
removes the directories.

Protections are layered and detected at run time, because a TA's laptop or an
LMS container may lack some of them; `Protections` records what was active.
The child always starts with grader/child/launch.py, which joins the cgroups,
sets the rlimits, builds the view where the mode has one, and drops privileges:

- "bwrap": bubblewrap's mount, pid, ipc, uts and network namespaces and its
  read-only view of the system and the Python environment;
- "unshare": the same, built by launch.py inside namespaces from util-linux
  `unshare` (with a user namespace when the grader is not root): the child
  sees the system, the Python environment and its own directories, nothing of
  the course, the data root, the caches, the grader's output or other
  submissions;
- "user": no namespaces, but the child runs as an unprivileged user (an LMS
  container's outer wall plus file permissions); the grader refuses to start
  when that user could read the course's specs, the data or the outputs;
- "none": nothing; only when asked for explicitly, and never as root.

In every mode student code never runs as real root: as root the child becomes
the sandbox user (`nobody`, or GRADER_SANDBOX_USER); otherwise it keeps the
grader's own user and loses every capability.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Empty
from typing import Any, BinaryIO, NoReturn

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Any as AnyTrait
from traitlets import Type

from grader.errors import HarnessError
from grader.reaping import Cgroups, processes_of, record_owner, sweep_user

CHILD_LIB = Path(__file__).parent / "child"
ISOLATION_MODES = ("auto", "bwrap", "unshare", "user", "none")
NAMESPACE_MODES = ("bwrap", "unshare")
DEFAULT_USER = "nobody"
_MB = 1024 * 1024
MAX_MESSAGE_BYTES = 32 * _MB  # a kernel message larger than this is dropped before the grader reads it
# Threads that wait for work sleep instead of spinning. On a busy machine a spinning OpenMP thread burns
# the core its siblings need: toy-2d's training took 110-140 s instead of 4-6 s beside four busy processes
# per core, and 25 s of CPU instead of 1 (which the runaway guard counts). Idle, it costs toy-2d's tiny
# steps a few tenths of a second.
OMP_WAIT_POLICY = "PASSIVE"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Wall-clock limits are safety caps, not budgets."""

    cell_timeout_s: float = 60.0
    total_timeout_s: float = 600.0
    memory_mb: int = 4096
    max_processes: int = 256
    max_file_mb: int = 256
    max_open_files: int = 1024
    tmp_mb: int = 512  # each of /tmp and /dev/shm, where the sandbox has private ones
    disk_mb: int = 1024  # the working directory, and the exchange where the grader can mount it
    output_kb_per_cell: int = 256
    output_kb_total: int = 2048

    def replace(self, **changes: Any) -> Limits:
        return Limits(**{**asdict(self), **changes})


@dataclass(frozen=True)
class Protections:
    """Which protections were active for one submission (result.json's environment.sandbox)."""

    isolation: str
    network: str
    filesystem: str
    user: str
    memory: str
    processes: str
    writable: str = ""
    kernel: str = ""  # how the kernel process was made: cold, or forked from a pre-started image
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


# --------------------------------------------------------------------------
# Who the child runs as


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


# --------------------------------------------------------------------------
# Detection: what this machine offers. Each probe runs the real thing once.


def _launcher(spec: dict[str, Any], command: list[str], *, childlib: Path = CHILD_LIB) -> list[str]:
    return [sys.executable, "-I", "-S", str(childlib / "launch.py"), json.dumps(spec), *command]


def _unshare_prefix() -> list[str]:
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
        return _runs([*_unshare_prefix(), *_launcher({"view": view, "drop": drop},
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


# --------------------------------------------------------------------------
# A size-limited tmpfs for the sandbox's directories, where the grader may mount one


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size_mb * _MB},mode=0755".encode()
    return libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", ctypes.c_ulong(2 | 4), options) == 0


def _unmount(path: Path) -> None:
    ctypes.CDLL(None, use_errno=True).umount2(str(path).encode(), 2)  # MNT_DETACH


# --------------------------------------------------------------------------
# A pre-started kernel image (grader/child/forkserver.py)

IMAGE_START_TIMEOUT_S = 120.0  # importing torch on a busy machine
IMAGE_REPLY_TIMEOUT_S = 30.0
RECONNECT_MS = 5  # how soon a kernel client tries a refused connection again (ZMQ's default: 100)
# grader/child/forkserver.py, run from the image's own copy of the child library
_SERVE = "import sys; sys.path.insert(0, sys.argv[3]); from grader_child import forkserver; " \
         "sys.exit(forkserver.main(sys.argv))"


class ImageUnavailable(Exception):
    """The image cannot fork a kernel (it failed to start, or died): the sandbox starts one cold."""


class KernelImage:
    """A fork server that has imported what an assignment's kernels need, once; each submission's kernel
    is forked from it into a sandbox of its own ("unshare" isolation, built as launch.py builds it).

    It never runs student code, so every kernel starts from the same untouched image; what a kernel
    does dies with the kernel. Started in the background: the imports run while the grader works.
    """

    def __init__(self, modules: tuple[str, ...], blocked: tuple[str, ...] = ()):
        self.modules = tuple(modules)
        self.blocked = tuple(blocked)
        self.problem = ""  # why the image cannot be used, once it cannot
        self.root: Path | None = None
        self._process: subprocess.Popen | None = None
        self._channel: socket.socket | None = None
        self._ready = False
        self._lock = threading.Lock()
        self._owner = True  # False for a channel attached to another process's image (attach())

    @property
    def _started_root(self) -> Path:
        assert self.root is not None, "the kernel image has not started (or was closed)"
        return self.root

    @property
    def _live_channel(self) -> socket.socket:
        assert self._channel is not None, "the kernel image has not started (or was closed)"
        return self._channel

    @property
    def childlib(self) -> Path:
        return self._started_root / "childlib"

    @property
    def config_dirs(self) -> list[Path]:
        """What the kernels must see of the image, read-only."""
        return [self.childlib, self._started_root / "matplotlib"]

    def start(self) -> KernelImage:
        try:
            self._start()
        except OSError as exc:
            self.problem = f"the kernel image could not start: {exc}"
            self.close()
        return self

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="grader-image-"))
        os.chmod(self.root, 0o755)
        shutil.copytree(CHILD_LIB, self.childlib / "grader_child", ignore=shutil.ignore_patterns("__pycache__"))
        (self.root / "matplotlib").mkdir(mode=0o755)
        _copy_font_lists(_font_cache(), self.root / "matplotlib")
        record_owner(self.root, [])  # a killed grader's image is swept like its sandboxes
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
               "HOME": str(self.root), "MPLCONFIGDIR": str(self.root / "matplotlib"), "MPLBACKEND": "Agg",
               "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "CUDA_VISIBLE_DEVICES": ""}
        self._channel = ours
        try:
            with open(self.root / "image.log", "wb") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-s", "-c", _SERVE, json.dumps(self.modules), json.dumps(self.blocked),
                     str(self.childlib), str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], env=env, cwd=self.root, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        finally:
            theirs.close()

    def attach(self) -> KernelImage:
        """Another channel to this running image, for one process that this one is about to fork (a
        `-j N` worker): each worker asks on its own channel, and every worker's kernels come from the
        one image. The image ends with this process's channel, never with an attached one."""
        with self._lock:
            if self.problem:
                raise ImageUnavailable(self.problem)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                socket.send_fds(self._live_channel, [b'{"attach": true}'], [theirs.fileno()])
            except OSError as exc:
                ours.close()
                self._fail(f"could not reach it ({exc})")
            finally:
                theirs.close()
        attached = KernelImage(self.modules, self.blocked)
        attached.root, attached._channel, attached._owner = self.root, ours, False
        return attached

    def forget(self) -> None:
        """Close this process's descriptor of the image and nothing else: for a forked process holding a
        copy of an image another process owns (closing it would end that process's kernels)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._process, self.root = None, None
        self.problem = self.problem or "the kernel image belongs to another process"

    def fork_kernel(self, request: dict[str, Any]) -> ForkedKernel:
        """Fork one kernel into the sandbox `request` describes (see forkserver.py)."""
        with self._lock:
            if self.problem:
                raise ImageUnavailable(self.problem)
            self._await_ready()
            status, status_for_keeper = os.pipe()
            try:
                socket.send_fds(self._live_channel, [json.dumps(request).encode()], [status_for_keeper])
            except OSError as exc:
                os.close(status)
                self._fail(f"could not reach it ({exc})")
            finally:
                os.close(status_for_keeper)
            reply = self._receive(IMAGE_REPLY_TIMEOUT_S)
            if not isinstance(reply.get("pid"), int):
                os.close(status)
                self._fail(f"it could not fork a kernel ({reply.get('error', reply)})")
            return ForkedKernel(reply["pid"], status)

    def _await_ready(self) -> None:
        if not self._ready:
            reply = self._receive(IMAGE_START_TIMEOUT_S)
            if reply.get("ready") is not True:
                self._fail(f"it did not start ({reply.get('error', reply)})")
            self._ready = True
            _copy_font_lists(self._started_root / "matplotlib", _font_cache())

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        try:
            self._live_channel.settimeout(timeout_s)
            data = self._live_channel.recv(65536)
            reply = json.loads(data) if data else None
        except (OSError, ValueError) as exc:
            self._fail(f"no answer ({exc})")
        if not isinstance(reply, dict):
            self._fail(f"it exited: {self._log_tail()}")
        return reply

    def _log_tail(self) -> str:
        if self.root is None:
            return "no message"
        try:
            return (self.root / "image.log").read_text(errors="replace").strip().splitlines()[-1][-300:]
        except (OSError, IndexError, TypeError):
            return "no message"

    def _fail(self, why: str) -> NoReturn:
        self.problem = f"the kernel image failed: {why}"
        self.close()
        raise ImageUnavailable(self.problem)

    def close(self) -> None:
        """Stop the image; kernels forked from it die with it (their sandboxes are closed first). An
        attached channel only closes itself."""
        if not self._owner:
            self.forget()
            return
        if self._channel is not None:
            self._channel.close()  # the image reads the end of its socket and exits
            self._channel = None
        if self._process is not None:
            # it runs no student code and holds nothing to save: killing it spares its interpreter's teardown
            self._process.kill()
            self._process.wait()
            self._process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self.problem = self.problem or "the kernel image was closed"


def _font_cache() -> Path:
    """Where the images keep matplotlib's font list between runs: building it is half a second."""
    from grader.ml.datasets import cache_dir

    return cache_dir() / "matplotlib"


def _copy_font_lists(source: Path, target: Path) -> None:
    """Best effort: the font list is a cache, and matplotlib builds it again where it is missing."""
    try:
        for font_list in source.glob("fontlist-*.json"):
            if not (target / font_list.name).exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(font_list, target / font_list.name)
    except OSError:
        pass


class ForkedKernel:
    """A forked kernel's keeper process (A in forkserver.py), as jupyter_client's provisioner uses a
    Popen. It is the image's child, not ours, so its end is read from the status pipe it holds."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, status_fd: int):
        self.pid = pid
        self.returncode: int | None = None
        self._status = status_fd
        os.set_blocking(status_fd, False)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                data = os.read(self._status, 32)
            except BlockingIOError:
                return None
            try:
                self.returncode = int(data)
            except ValueError:
                self.returncode = -signal.SIGKILL  # the keeper itself was killed (the cgroup, the group)
            self.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        start = time.monotonic()
        while (returncode := self.poll()) is None:
            if timeout is not None and time.monotonic() > start + timeout:
                raise subprocess.TimeoutExpired(f"kernel keeper {self.pid}", timeout)
            select.select([self._status], [], [], 0.05)
        return returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never a pid the keeper no longer holds
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self._status >= 0:
            os.close(self._status)
            self._status = -1
            if self.returncode is None:
                self.returncode = -signal.SIGKILL


_IMAGES: dict[tuple[tuple[str, ...], tuple[str, ...]], KernelImage] = {}
MAX_IMAGES = 4  # a worker grading several assignments keeps the latest (closing one ends its kernels)
_IMAGES_LOCK = threading.Lock()


def kernel_image(modules: tuple[str, ...], blocked: tuple[str, ...] = ()) -> KernelImage:
    """This process's image for kernels that need `modules` (started on first use, kept until exit)."""
    key = (tuple(modules), tuple(blocked))
    with _IMAGES_LOCK:  # a Dask worker grades in threads
        if key not in _IMAGES:  # one that failed stays failed: its sandboxes start their kernels cold
            while len(_IMAGES) >= MAX_IMAGES:
                _IMAGES.pop(next(iter(_IMAGES))).close()
            _IMAGES[key] = KernelImage(*key).start()
        return _IMAGES[key]


def adopt_kernel_image(image: KernelImage | None, inherited: list[KernelImage]) -> None:
    """In a process just forked from the grader: `image` (a channel attached for this process) is the
    one it uses; what it inherited of other images and channels is forgotten, not closed. Without
    one, it starts an image of its own when it needs one."""
    with _IMAGES_LOCK:
        for other in [*_IMAGES.values(), *inherited]:
            if other is not image:
                other.forget()
        _IMAGES.clear()
        if image is not None:
            _IMAGES[(image.modules, image.blocked)] = image


def start_kernel_image(modules: tuple[str, ...], blocked: tuple[str, ...] = ()) -> None:
    """kernel_image() as a worker pool's initializer: imports little, and never raises (a failed image
    only means cold kernels, which the first sandbox records)."""
    with contextlib.suppress(Exception):  # see the docstring
        kernel_image(modules, blocked)


@atexit.register
def close_kernel_images() -> None:
    with _IMAGES_LOCK:
        while _IMAGES:
            _IMAGES.popitem()[1].close()


class Sandbox:
    """One submission's child process environment. Use as a context manager."""

    def __init__(self, limits: Limits, *, isolation: str = "auto",
                 blocked_modules: tuple[str, ...] = (), hidden_paths: tuple[Path, ...] = (),
                 private_paths: tuple[Path, ...] = (), threads: int | None = None, user: str | None = None,
                 own_code: bool = False, image: KernelImage | None = None):
        self.limits = limits
        self.blocked_modules = tuple(blocked_modules)
        # hidden: the child must not read them; private: not write them either (the grader's outputs)
        self.hidden_paths = tuple(Path(p).resolve() for p in hidden_paths if p)
        self.private_paths = tuple(Path(p).resolve() for p in private_paths if p)
        self.threads = threads or max(1, min(os.cpu_count() or 1, 8))
        # A kernel image forks kernels into the grader's own namespaces: "auto" takes it over bubblewrap
        # (the same view, without a cold start); an explicit "bwrap" does not.
        self.image = image if image is not None and not image.problem and isolation in ("auto", "unshare") \
            and unshare_available() else None
        self.isolation = "unshare" if self.image else choose_isolation(isolation, user=user, own_code=own_code)
        self._image_notes: list[str] = []
        self._forked: list[ForkedKernel] = []
        self._forked_from = self.image.modules if self.image else ()
        self.user_name: str | None = None
        self.user: tuple[int, int] | None = None
        if os.geteuid() == 0 and self.isolation != "none":
            self.user_name, uid, gid = sandbox_user(user)
            self.user = (uid, gid)
        if self.isolation == "user":
            self._check_permissions()
        self.root: Path | None = None
        self._cgroups: Cgroups | None = None
        self._kernel_log: BinaryIO | None = None
        self._tmpfs_root = False
        self.swept: list[str] = []

    def _check_permissions(self) -> None:
        """Without a mount namespace, only file permissions keep the child away from the grader's files."""
        assert self.user is not None, "mode 'user' runs as root, with a sandbox user"
        uid, gid = self.user
        for path in self.hidden_paths:
            if path.exists() and reachable_by(path, uid, gid):
                raise HarnessError(f"sandbox mode 'user': {path} is readable by the sandbox user "
                                   f"{self.user_name!r}; make it unreadable to that user (chmod o-rwx, or "
                                   "a parent directory without o+x), or use a sandbox with namespaces")
        for path in self.private_paths:
            probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
            if writable_by(probe, uid, gid):
                raise HarnessError(f"sandbox mode 'user': {probe} is writable by the sandbox user "
                                   f"{self.user_name!r}; the grader's output must not be")
            if path.is_dir() and reachable_by(path, uid, gid, read=False):
                # other students' results, hidden checks' messages included, would be one path away
                raise HarnessError(f"sandbox mode 'user': the output directory {path} can be entered by the "
                                   f"sandbox user {self.user_name!r}; make it private (chmod 700 {path})")

    # -- set-up and tear-down ------------------------------------------------

    def __enter__(self) -> Sandbox:
        base = Path(tempfile.mkdtemp(prefix="grader-"))
        os.chmod(base, 0o755)
        self._tmpfs_root = _mount_tmpfs(base, self.limits.disk_mb)
        self.root = base
        self.work = self._child_dir("work")
        (self.work / "tmp").mkdir()
        self._hand_over(self.work / "tmp")
        self.runtime = self._child_dir("runtime")
        self.exchange = base / "exchange"
        self.exchange.mkdir(mode=0o755)
        # An fd held from the start, so that paths the child may tamper with
        # are always resolved from a directory it cannot replace.
        self.exchange_fd = os.open(self.exchange, os.O_RDONLY | os.O_DIRECTORY)
        self.childlib = base / "childlib"
        shutil.copytree(CHILD_LIB, self.childlib / "grader_child",
                        ignore=shutil.ignore_patterns("__pycache__"))
        self.kernel_log_path = base / "kernel-stderr.log"
        self._kernel_log = open(self.kernel_log_path, "wb")
        self._cgroups = self._new_cgroups()
        self._spent_cgroups: list[Cgroups] = []
        self._record_owner()
        # where cgroups hold the child's processes they are killed by group; else, in "user" mode, by user
        self._cgroups_hold_processes = self._cgroups.kind != "none"
        return self

    def _new_cgroups(self) -> Cgroups:
        return Cgroups(f"grader-{uuid.uuid4().hex[:12]}", memory_mb=self.limits.memory_mb,
                       max_processes=self.limits.max_processes)

    def _record_owner(self) -> None:
        """Say in the root who owns this sandbox and its cgroups, so that what a killed grader leaves
        (its tmpfs, its cgroups) can be found and removed later (`sweep_orphaned_sandboxes`)."""
        assert self.root is not None and self._cgroups is not None, "the sandbox is not entered"
        record_owner(self.root, [d for c in [self._cgroups, *self._spent_cgroups] for d in c.dirs])

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for kernel in self._forked:
            kernel.close()
        if self._cgroups is not None:
            for cgroups in [self._cgroups, *self._spent_cgroups]:
                cgroups.kill_all()
                cgroups.remove()
            self._cgroups = None
        if self.isolation == "user" and self.user is not None:
            self.swept.extend(sweep_user(self.user[0], processes=not self._cgroups_hold_processes))
        if self._kernel_log is not None:
            self._kernel_log.close()
            self._kernel_log = None
        if self.root is not None:
            os.close(self.exchange_fd)
            if self._tmpfs_root:
                _unmount(self.root)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _child_dir(self, name: str) -> Path:
        assert self.root is not None, "the sandbox is not entered"
        path = self.root / name
        path.mkdir(mode=0o700)
        self._hand_over(path)
        return path

    def _hand_over(self, path: Path) -> None:
        """Make a path the child's own (it may run as another user)."""
        if self.user is not None:
            os.chown(path, *self.user)

    def new_output_dir(self, name: str) -> Path:
        """A fresh directory the child may write one answer into."""
        path = self.exchange / name
        path.mkdir(mode=0o755)
        self._hand_over(path)
        return path

    # -- what was active ---------------------------------------------------------

    def protections(self) -> Protections:
        notes = []
        cgroups = self._cgroups.kind if self._cgroups else "none"
        rlimit_memory = f"rlimit data {self.limits.memory_mb} MB"
        memory = ", ".join(x for x in (f"cgroup {cgroups} {self.limits.memory_mb} MB" if cgroups != "none" else "",
                                       rlimit_memory) if x) or "none"
        processes = (f"cgroup {cgroups} pids.max {self.limits.max_processes}" if cgroups != "none"
                     else "rlimit nproc")
        namespaces = self.isolation in NAMESPACE_MODES
        if namespaces:
            filesystem = ("private read-only view of the system and the Python environment; course files, "
                          "data root, caches, outputs and other submissions absent")
        elif self.isolation == "user":
            filesystem = ("host file system with the sandbox user's permissions; course files, data root "
                          "and outputs checked unreadable to it")
            notes.append("no namespaces: the container is the outer wall; the network is not isolated and "
                         "the child sees the host's file system with the sandbox user's permissions")
        else:
            filesystem = "host file system with the grader's own user's permissions"
            notes.append("NO ISOLATION (--sandbox none): student code ran with the grader's own user, the "
                         "network and the host's file system; grades are only as safe as the submissions")
        if self.blocked_modules and not namespaces:
            notes.append(f"{', '.join(self.blocked_modules)} could only be blocked by an import hook "
                         "(no mount namespace to remove it from the child's view)")
        if self.user_name is not None:  # set together with self.user
            user = self.user_name
        elif self.isolation == "unshare":
            user = "the grader's own user (root of a user namespace, without capabilities)"
        else:
            user = pwd.getpwuid(os.geteuid()).pw_name
        writable = (f"tmpfs {self.limits.disk_mb} MB" if self._tmpfs_root
                    else f"working directory: tmpfs {self.limits.disk_mb} MB; exchange on the host disk"
                    if namespaces else "host disk (each file at most "
                                       f"{self.limits.max_file_mb} MB)")
        if namespaces:
            writable += f"; /tmp and /dev/shm: tmpfs {self.limits.tmp_mb} MB each"
        notes.extend(self._image_notes)
        if self.swept:
            notes.append(f"removed what the sandbox user left behind: {', '.join(self.swept[:5])}"
                         + (f" and {len(self.swept) - 5} more" if len(self.swept) > 5 else ""))
        kernel = (f"forked from a pre-started image that imported {', '.join(self._forked_from)} before any "
                  "student code ran" if self._forked else "started cold")
        return Protections(
            isolation=self.isolation,
            network="isolated" if namespaces else "not isolated",
            filesystem=filesystem, user=user, memory=memory, processes=processes, writable=writable,
            kernel=kernel, notes=tuple(notes))

    # -- the command line ----------------------------------------------------

    def child_env(self) -> dict[str, str]:
        """The child's whole environment: nothing of the grader's leaks in."""
        env = {
            "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(self.work),
            "TMPDIR": str(self.work / "tmp"),
            "IPYTHONDIR": str(self.work / ".ipython"),
            "MPLCONFIGDIR": str(self.work / ".matplotlib"),
            "MPLBACKEND": "Agg",
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "OMP_WAIT_POLICY": OMP_WAIT_POLICY,
            "MKL_NUM_THREADS": str(self.threads),
            "OPENBLAS_NUM_THREADS": str(self.threads),
            "CUDA_VISIBLE_DEVICES": "",  # the kernel only builds and describes the model: no GPU
        }
        return env

    def _rlimits(self) -> dict[str, int]:
        limits = {
            "RLIMIT_FSIZE": self.limits.max_file_mb * _MB,
            "RLIMIT_NOFILE": self.limits.max_open_files,
            "RLIMIT_CORE": 0,
        }
        # RLIMIT_AS breaks torch's import (it maps its CUDA libraries); the data limit counts only
        # private writable memory, which is what we want.
        limits["RLIMIT_DATA"] = self.limits.memory_mb * _MB
        own_uid_processes = len(processes_of(self.user[0] if self.user else os.getuid()))
        cgroup_backstop = 8 if self._cgroups and self._cgroups.kind != "none" else 1
        limits["RLIMIT_NPROC"] = own_uid_processes + self.limits.max_processes * cgroup_backstop
        return limits

    def wrap(self, argv: list[str]) -> list[str]:
        """The full command line that runs `argv` inside this sandbox."""
        outer: dict[str, Any] = {"cgroups": self._cgroups.procs_files() if self._cgroups else [],
                                 "rlimits": self._rlimits(), "ignore_sigint": True}
        drop = list(self.user) if self.user else None
        inner: dict[str, Any]
        if self.isolation == "bwrap":
            inner = {"chown": [str(self.work)], "drop": drop, "chdir": str(self.work)}
            return [*_launcher(outer, self._bwrap_prefix()), *self._launcher(inner, argv)]
        if self.isolation == "unshare":
            inner = {"view": self._view(), "chown": [str(self.work)], "drop": drop, "chdir": str(self.work)}
            return [*_launcher(outer, _unshare_prefix()), *self._launcher(inner, argv)]
        return _launcher({**outer, "drop": drop, "chdir": str(self.work)}, argv)

    def _launcher(self, spec: dict[str, Any], argv: list[str]) -> list[str]:
        return _launcher(spec, argv, childlib=self.childlib / "grader_child")

    def _private_tmpfs(self) -> list[tuple[str, int, int]]:
        """(path, bytes, mode) of the size-limited tmpfs mounts every namespace view has."""
        return [("/tmp", self.limits.tmp_mb * _MB, 0o1777), ("/dev/shm", self.limits.tmp_mb * _MB, 0o1777),
                (str(self.work), self.limits.disk_mb * _MB, 0o700)]

    def _view(self, extra_read_only: Sequence[Path] = ()) -> dict[str, Any]:
        """launch.py's steps for the unshare view, in mount order."""
        tmp, shm, work = self._private_tmpfs()
        steps: list[list[Any]] = [["tmpfs", *tmp]]  # first: an environment under /tmp is bound on top of it
        steps += [["ro", str(root)] for root in bound_roots()]
        steps += [["ro", str(path)] for path in [self.childlib, *extra_read_only]]
        steps += [["rw", str(self.runtime)], ["rw", str(self.exchange)],
                  ["tmpfs", *work], ["devices"], ["tmpfs", *shm], ["proc"]]
        steps += [["mask", str(path)] for path in self._masked_paths()]
        assert self.root is not None, "the sandbox is not entered"
        return {"root": str(self.root / "view"), "steps": steps}

    def _bwrap_prefix(self) -> list[str]:
        bwrap = shutil.which("bwrap")
        assert bwrap is not None, "mode 'bwrap' is chosen only where bwrap runs"
        args = [bwrap, "--die-with-parent", "--unshare-net", "--unshare-pid",
                "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
        made: set[Path] = set()

        def ensure_parents(path: Path) -> None:
            # bwrap creates missing parents with mode 0700, which 'nobody' cannot cross.
            for parent in reversed(path.parents):
                if parent != Path("/") and parent not in made:
                    args.extend(["--perms", "0755", "--dir", str(parent)])
                    made.add(parent)

        tmp, shm, work = self._private_tmpfs()
        args.extend(["--proc", "/proc", "--dev", "/dev",
                     "--perms", f"{tmp[2]:o}", "--size", str(tmp[1]), "--tmpfs", tmp[0],
                     "--perms", f"{shm[2]:o}", "--size", str(shm[1]), "--tmpfs", shm[0]])
        for root in bound_roots():
            ensure_parents(root)
            args.extend(["--ro-bind", str(root), str(root)])
        assert self.root is not None, "the sandbox is not entered"
        ensure_parents(self.root / "x")
        args.extend(["--ro-bind", str(self.childlib), str(self.childlib),
                     "--perms", f"{work[2]:o}", "--size", str(work[1]), "--tmpfs", work[0],
                     "--bind", str(self.runtime), str(self.runtime),
                     "--bind", str(self.exchange), str(self.exchange)])
        for path in self._masked_paths():
            if path.is_dir():
                args.extend(["--tmpfs", str(path)])
            elif path.exists():
                args.extend(["--ro-bind", "/dev/null", str(path)])
        return args

    def _masked_paths(self) -> list[Path]:
        """Paths inside the bound view the child must not see: blocked modules, the grader, course files."""
        candidates = [*self.hidden_paths, *self.private_paths, *module_locations("grader")]
        for module in self.blocked_modules:
            candidates.extend(module_locations(module))
        bound = bound_roots()
        return [p for p in candidates if any(p.resolve().is_relative_to(root) for root in bound)]

    @staticmethod
    def _kernel_arguments(connection_file: str) -> list[str]:
        return ["-f", connection_file, "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=True",
                # the sandbox kills the kernel with its parent; ipykernel's own check
                # misreads the pid namespace as an orphaned process
                "--IPKernelApp.parent_handle=0"]

    def kernel_command(self, connection_file: str) -> list[str]:
        return self.wrap([sys.executable, "-s", "-m", "ipykernel_launcher", *self._kernel_arguments(connection_file)])

    def forked_kernel(self, connection_file: str) -> ForkedKernel | None:
        """The kernel forked from the image into this sandbox; None (start it cold) without an image or
        when the image fails, which the protections' notes then say."""
        if self.image is None:
            return None
        request = {"stderr": str(self.kernel_log_path), "cgroups": self._cgroups.procs_files() if self._cgroups else [],
                   "rlimits": self._rlimits(), "user_namespace": os.geteuid() != 0,
                   "view": self._view(extra_read_only=self.image.config_dirs), "chown": [str(self.work)],
                   "drop": list(self.user) if self.user else None, "chdir": str(self.work),
                   "env": self.child_env(), "argv": self._kernel_arguments(connection_file),
                   "threads": self.threads}
        try:
            kernel = self.image.fork_kernel(request)
        except ImageUnavailable as exc:
            self._image_notes.append(f"{exc}; the kernel started cold")
            self.image = None
            return None
        self._forked.append(kernel)
        return kernel

    def kernel_mode(self) -> str:
        """How this sandbox starts kernels, in words for an error message."""
        if self.isolation == "none":
            return "without a sandbox (--sandbox none)"
        how = "forked from the kernel image" if self.image is not None else "started cold"
        return f"in the {self.isolation!r} sandbox ({how})"

    def launch_kwargs(self) -> dict[str, Any]:
        return {"env": self.child_env(), "cwd": str(self.root),
                "stdout": subprocess.DEVNULL, "stderr": self._kernel_log, "stdin": subprocess.DEVNULL}

    def kernel_manager(self) -> SandboxedKernelManager:
        return SandboxedKernelManager(
            sandbox=self, transport="ipc", ip=str(self.runtime / "kernel"),
            connection_file=str(self.runtime / f"kernel-{uuid.uuid4().hex[:8]}.json"),
            kernel_name="python3")

    # -- after the fact ---------------------------------------------------------

    def kill_all(self) -> None:
        """Kill everything the current kernel started; the next kernel gets fresh cgroups, because
        killed processes (a fork bomb's) may linger as zombies and hold the old group's budget."""
        if self._cgroups is not None:
            self._cgroups.kill_all()
            if self._cgroups.kind != "none":
                self._spent_cgroups.append(self._cgroups)
                self._cgroups = self._new_cgroups()
                self._record_owner()
        if self.isolation == "user" and self.user is not None:
            self.swept.extend(sweep_user(self.user[0], processes=not self._cgroups_hold_processes))

    def oom_killed(self) -> bool:
        return bool(self._cgroups and self._cgroups.oom_killed())

    def pids_exhausted(self) -> bool:
        return bool(self._cgroups and self._cgroups.pids_exhausted())

    def kernel_stderr_tail(self, max_bytes: int = 4000) -> str:
        try:
            with open(self.kernel_log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.kernel_log_path) - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


def start_trusted(argv: list[str], *, memory_mb: int | None, threads: int, device: str = "cpu") -> subprocess.Popen:
    """Start the grader's own code in a child process (the trainer): not sandboxed, since no student code
    runs there and it reads only validated data, but memory-limited where the device allows; it may
    wait on its standard input (finish_trusted gives it and waits, killing it at the timeout)."""
    rlimits = {"RLIMIT_CORE": 0}
    if memory_mb and device == "cpu":
        rlimits["RLIMIT_DATA"] = memory_mb * _MB
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": OMP_WAIT_POLICY,
           "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS, for the same grade on every run
    return subprocess.Popen(_launcher({"rlimits": rlimits}, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


class Stalled(Exception):
    """A trusted process was stopped by its runaway guard; the message says which guard."""


def finish_trusted(process: subprocess.Popen, *, stall_s: float, max_cpu_s: float | None = None,
                   stdin: str = "") -> subprocess.CompletedProcess:
    """Give a start_trusted process its input and wait for it, however long a busy machine makes that.

    The guard watches the process's CPU time, not the clock: it is killed (and Stalled raised) only
    when it used no CPU at all for `stall_s` seconds (hung: a machine that is merely busy still gives
    it some) or more than `max_cpu_s` seconds of CPU in all (a runaway)."""
    text: str | None = stdin
    last_cpu, last_progress = -1.0, time.monotonic()
    while True:
        try:
            stdout, stderr = process.communicate(text, timeout=TRUSTED_POLL_S)
            return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            text = None  # given once; communicate keeps what it has read so far
        cpu, now = cpu_seconds(process.pid), time.monotonic()
        if cpu > last_cpu:
            last_cpu, last_progress = cpu, now
        why = (f"it used no CPU for {stall_s:.0f} s" if now - last_progress > stall_s
               else f"it used more than {max_cpu_s:.0f} s of CPU time" if max_cpu_s and cpu > max_cpu_s else "")
        if why:
            process.kill()
            process.communicate()
            raise Stalled(why)


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, all threads) a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


TRUSTED_POLL_S = 1.0
KERNEL_START_TIMEOUT_S = 180.0  # a cold kernel on a machine at 15 % of one CPU is ready in about 20 s
FIRST_WAIT_S = 0.005
FIRST_IDLE_WAIT_S = 0.05
MAX_WAIT_S = 2.0
RESEND_AFTER_S = 30.0


class KernelNotReady(RuntimeError):
    """A started kernel did not become ready; the message says what did not answer."""


class CappedKernelClient(AsyncKernelClient):
    """A kernel client whose sockets refuse messages over MAX_MESSAGE_BYTES (ZMQ drops them and
    reconnects), so a kernel cannot make the grader hold gigabytes."""

    def _context_default(self) -> zmq.asyncio.Context:
        self._created_context = True
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        # The client connects as soon as the kernel is forked, before the kernel has made its sockets: a
        # refused connection is tried again after ZMQ's default 100 ms, idle time on every kernel start.
        context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        return context

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        """Ready once the kernel answered kernel_info on shell and went idle after it on IOPub (which
        proves IOPub connected too; jupyter_client's own wait listens for 0.2 s of IOPub silence
        instead, a fifth of a second on every start).

        One request at a time, and a reply to any request sent counts: a busy kernel answers every
        request it gets, so asking again while an answer is on its way only buries the kernel under
        work nobody reads (on a loaded machine, a new request every second kept a kernel behind for
        good). Waits grow from a few milliseconds, so an idle machine pays nothing. An idle status
        published before IOPub's subscription reached the kernel is lost: then one more request."""
        timeout = KERNEL_START_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        request, asked_at, answered = None, 0.0, False
        wait, idle_wait = FIRST_WAIT_S, FIRST_IDLE_WAIT_S
        while True:
            if request is None:
                request, asked_at = self.kernel_info(), time.monotonic()
                sent.add(request)
            try:
                reply = await self.shell_channel.get_msg(timeout=wait)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply" \
                    and reply["parent_header"].get("msg_id") in sent:
                answered, request = True, None
                self._handle_kernel_info_reply(reply)
                if await self._idle_after(sent, timeout=idle_wait):
                    return
                idle_wait = min(idle_wait * 2, MAX_WAIT_S)
                continue
            if reply is not None:
                continue  # a reply to something else: read on at once
            if not await self._async_is_alive():
                raise KernelNotReady("the kernel died before it answered")
            now = time.monotonic()
            if now > deadline:
                what = ("published nothing on IOPub after answering kernel_info" if answered
                        else "did not answer kernel_info on its shell channel")
                raise KernelNotReady(f"the kernel {what} within {timeout:.0f} s")
            wait = min(wait * 2, MAX_WAIT_S)
            if now - asked_at > RESEND_AFTER_S:
                request = None  # a request lost on the way: ask again, once in a long while

    async def _idle_after(self, requests: set[str], *, timeout: float) -> bool:
        """Read IOPub up to an idle status of one of `requests` (earlier messages are start-up noise)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                message = await self.iopub_channel.get_msg(timeout=left)
            except Empty:
                return False
            if message["msg_type"] == "status" and message["content"].get("execution_state") == "idle" \
                    and message["parent_header"].get("msg_id") in requests:
                return True
        return False

    wait_for_ready = _async_wait_for_ready


class SandboxedKernelManager(AsyncKernelManager):
    """A jupyter_client kernel manager whose kernel always runs inside a Sandbox.

    The notebook's own kernelspec is ignored: a submission cannot pick another
    language or interpreter by editing its metadata.
    """

    sandbox = AnyTrait()
    client_factory = Type(klass=AsyncKernelClient, default_value=CappedKernelClient)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return self.sandbox.kernel_command(self.connection_file)

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.sandbox.user is not None:
            os.chown(self.connection_file, *self.sandbox.user)

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        kw = {**kw, **self.sandbox.launch_kwargs()}
        return await super()._async_pre_start_kernel(**kw)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        kernel = self.sandbox.forked_kernel(self.connection_file)
        if kernel is None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        provisioner = self.provisioner
        assert isinstance(provisioner, LocalProvisioner), "the sandbox's kernels use jupyter_client's local provisioner"
        # the keeper leads the kernel's process group: interrupts and kills go to the group
        provisioner.process, provisioner.pid, provisioner.pgid = kernel, kernel.pid, kernel.pid
        provisioner.cwd = kw.get("cwd")
        self._reconcile_connection_info(provisioner.connection_info)
