"""The kernel image: a process that has imported what an assignment's kernels need and forks each
submission's kernel from itself, so a submission does not pay for importing torch."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from grader.sandbox.limits import CHILD_LIB
from grader.sandbox.reaping import record_owner

IMAGE_START_TIMEOUT_S = 120.0  # importing torch on a busy machine
IMAGE_REPLY_TIMEOUT_S = 30.0
RECONNECT_MS = 5  # how soon a kernel client tries a refused connection again (ZMQ's default: 100)
# What every assignment's kernels import first (the students' notebooks and the grader's child library);
# an image can start on these before the grader has loaded the assignment (KernelImage.ahead).
BASE_MODULES = ("numpy", "matplotlib.pyplot", "grader_child.prepare")


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
        self.settled = True  # False for an image started ahead, until `settle`
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

    @classmethod
    def ahead(cls) -> KernelImage:
        """An image started before the grader knows the assignment (a single grade: the image's imports
        then run beside the grader's own). It imports BASE_MODULES and waits for `settle`."""
        image = cls(BASE_MODULES)
        image.settled = False
        return image.start()

    def settle(self, modules: tuple[str, ...], blocked: tuple[str, ...]) -> bool:
        """Tell an image started ahead the rest of what the assignment's kernels import and what they must
        never hold; False, sending nothing, where it has imported what the assignment blocks or too much."""
        assert not self.settled, "an image is settled once"
        if not set(self.modules) <= set(modules) or {m.split(".")[0] for m in self.modules} & set(blocked):
            return False
        rest = [m for m in modules if m not in self.modules]
        self.modules, self.blocked, self.settled = tuple(modules), tuple(blocked), True
        if not self.problem:
            try:
                self._live_channel.sendall(json.dumps({"modules": rest, "blocked": list(blocked)}).encode())
            except OSError as exc:
                self.problem = f"the kernel image failed: could not reach it ({exc})"
                self.close()
        return True

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
        record_owner(self.root, [])  # a killed grader's image is swept like its sandboxes, from the start
        shutil.copytree(CHILD_LIB, self.childlib / "grader_child", ignore=shutil.ignore_patterns("__pycache__"))
        (self.root / "matplotlib").mkdir(mode=0o755)
        _copy_font_lists(_font_cache(), self.root / "matplotlib")
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
                    [sys.executable, "-s", "-c", _SERVE, json.dumps(self.modules),
                     json.dumps(self.blocked if self.settled else None),
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
        assert self.settled, "an image started ahead forks once it is settled"
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
    from grader.locations import cache_dir

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


MAX_IMAGES = 4  # a worker grading several assignments keeps the latest (closing one ends its kernels)


class KernelImages:
    """The kernel images one owner keeps (a command, a batch worker, a Dask worker: see
    grader.grading.warm), by what they import: each started on first use, all closed with `close`."""

    def __init__(self) -> None:
        self._images: dict[tuple[tuple[str, ...], tuple[str, ...]], KernelImage] = {}
        self._ahead: KernelImage | None = None  # started before its assignment was known
        self._lock = threading.Lock()  # a Dask worker grades in threads

    def start_ahead(self) -> None:
        """Start an image now, before the assignment is known: the next `get` settles it, where it can."""
        with self._lock:
            if self._ahead is None:
                self._ahead = KernelImage.ahead()

    def get(self, modules: tuple[str, ...], blocked: tuple[str, ...] = ()) -> KernelImage:
        """The image for kernels that need `modules`, started now if this owner has none. One that
        failed stays failed: its sandboxes start their kernels cold."""
        key = (tuple(modules), tuple(blocked))
        with self._lock:
            if key not in self._images:
                while len(self._images) >= MAX_IMAGES:
                    self._images.pop(next(iter(self._images))).close()
                ahead, self._ahead = self._ahead, None
                if ahead is not None and not ahead.settle(*key):
                    ahead.close()  # it holds what this assignment blocks: a fresh one holds only what it needs
                    ahead = None
                self._images[key] = ahead or KernelImage(*key).start()
            return self._images[key]

    def adopt(self, image: KernelImage) -> None:
        """Keep `image` (a channel attached for this process by the one that forked it) as this owner's."""
        with self._lock:
            self._images[(image.modules, image.blocked)] = image

    def forget(self) -> None:
        """In a process forked from this owner's: let go of the copies without closing the images, which
        belong to the process that started them."""
        with self._lock:
            while self._images:
                self._images.popitem()[1].forget()
            if self._ahead is not None:
                self._ahead.forget()
                self._ahead = None

    def close(self) -> None:
        with self._lock:
            while self._images:
                self._images.popitem()[1].close()
            if self._ahead is not None:
                self._ahead.close()
                self._ahead = None
