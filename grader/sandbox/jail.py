"""One submission's sandbox: its private directories, its cgroups, the command line that starts its
kernel inside the isolation chosen, and the cleanup when the `with` block ends."""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from grader.errors import HarnessError
from grader.sandbox.detect import (
    bound_roots,
    choose_isolation,
    launcher_command,
    module_locations,
    reachable_by,
    sandbox_user,
    unshare_available,
    unshare_prefix,
    writable_by,
)
from grader.sandbox.image import ForkedKernel, ImageUnavailable, KernelImage
from grader.sandbox.limits import (
    CHILD_LIB,
    MB,
    NAMESPACE_MODES,
    OMP_WAIT_POLICY,
    Limits,
    Protections,
    submission_threads,
)
from grader.sandbox.reaping import Cgroups, record_owner, sweep_user, tasks_of


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size_mb * MB},mode=0755".encode()
    return libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", ctypes.c_ulong(2 | 4), options) == 0


def _unmount(path: Path) -> None:
    ctypes.CDLL(None, use_errno=True).umount2(str(path).encode(), 2)  # MNT_DETACH


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
        self.threads = submission_threads(threads)
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
        # who owns it, at once (cgroups follow): a grader killed while it sets the rest up (copying the child
        # library takes tens of milliseconds) left a mounted tmpfs that no sweep would touch without it
        record_owner(base, [])
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
            "RLIMIT_FSIZE": self.limits.max_file_mb * MB,
            "RLIMIT_NOFILE": self.limits.max_open_files,
            "RLIMIT_CORE": 0,
        }
        # RLIMIT_AS breaks torch's import (it maps its CUDA libraries); the data limit counts only
        # private writable memory, which is what we want.
        limits["RLIMIT_DATA"] = self.limits.memory_mb * MB
        # RLIMIT_NPROC counts every thread the user has on the machine (a TA's browser, other graders'
        # kernels under the same sandbox user): the limit is that many and the submission's allowance more
        own_uid_tasks = tasks_of(self.user[0] if self.user else os.getuid())
        cgroup_backstop = 8 if self._cgroups and self._cgroups.kind != "none" else 1
        limits["RLIMIT_NPROC"] = own_uid_tasks + self.limits.max_processes * cgroup_backstop
        return limits

    def wrap(self, argv: list[str]) -> list[str]:
        """The full command line that runs `argv` inside this sandbox."""
        outer: dict[str, Any] = {"cgroups": self._cgroups.procs_files() if self._cgroups else [],
                                 "rlimits": self._rlimits(), "ignore_sigint": True}
        drop = list(self.user) if self.user else None
        inner: dict[str, Any]
        if self.isolation == "bwrap":
            inner = {"chown": [str(self.work)], "drop": drop, "chdir": str(self.work)}
            return [*launcher_command(outer, self._bwrap_prefix()), *self._launcher(inner, argv)]
        if self.isolation == "unshare":
            # bwrap has --die-with-parent. Here the grader's end ends unshare (die_with), and unshare's end
            # its child (die_with_parent, as --kill-child would if the drop did not clear it): a grader
            # killed outright left its cold kernels running until the next grader swept them.
            outer["die_with"] = os.getpid()
            inner = {"view": self._view(), "chown": [str(self.work)], "drop": drop, "chdir": str(self.work),
                     "die_with_parent": True}
            return [*launcher_command(outer, unshare_prefix()), *self._launcher(inner, argv)]
        return launcher_command({**outer, "drop": drop, "chdir": str(self.work)}, argv)

    def _launcher(self, spec: dict[str, Any], argv: list[str]) -> list[str]:
        return launcher_command(spec, argv, childlib=self.childlib / "grader_child")

    def _private_tmpfs(self) -> list[tuple[str, int, int]]:
        """(path, bytes, mode) of the size-limited tmpfs mounts every namespace view has."""
        return [("/tmp", self.limits.tmp_mb * MB, 0o1777), ("/dev/shm", self.limits.tmp_mb * MB, 0o1777),
                (str(self.work), self.limits.disk_mb * MB, 0o700)]

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
