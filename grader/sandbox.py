"""The child process that runs student code, and everything that limits it.

This is the only module that starts processes. A `Sandbox` owns one
submission's private directories, its cgroups and the kernel it launches
(through `SandboxedKernelManager`, which jupyter_client calls to build the
command line); leaving the `with` block kills whatever is still running and
removes the directories.

Protections are layered and detected at run time, because a TA's laptop or an
LMS container may lack some of them; `Protections` records what was active:

- isolation "bwrap": mount, pid, ipc and network namespaces; the child sees
  a read-only view of the system and the Python environment, its own working
  directory, and nothing of the course, the data root or other submissions.
- isolation "unshare": network and pid namespaces only (util-linux unshare).
- isolation "none": a separate process session and the limits below.
- as root, the child runs as the unprivileged user `nobody` (rlimits such as
  RLIMIT_NPROC do not bind root);
- rlimits: data segment (memory), processes, file size, open files, no core;
- cgroups (v1 or v2) for memory and process count where writable.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets import Any as AnyTrait

from grader.errors import HarnessError

CHILD_LIB = Path(__file__).parent / "child"
ISOLATION_MODES = ("auto", "bwrap", "unshare", "none")
_MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one submission may use. Wall-clock limits are safety caps, not budgets."""

    cell_timeout_s: float = 60.0
    total_timeout_s: float = 600.0
    memory_mb: int = 4096
    max_processes: int = 256
    max_file_mb: int = 256
    max_open_files: int = 1024
    tmp_mb: int = 512
    output_kb_per_cell: int = 256
    output_kb_total: int = 2048

    def replace(self, **changes: Any) -> "Limits":
        return Limits(**{**asdict(self), **changes})


@dataclass(frozen=True)
class Protections:
    """Which protections were active for one submission (result.json's environment)."""

    isolation: str
    network: str
    filesystem: str
    user: str
    memory: str
    processes: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data


# --------------------------------------------------------------------------
# Detection: what this machine offers. Each probe runs a real command once.


@functools.cache
def _command_works(*argv: str) -> bool:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def bwrap_available() -> bool:
    exe = shutil.which("bwrap")
    return bool(exe) and _command_works(
        exe, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--die-with-parent",
        "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true")


def unshare_available() -> bool:
    exe = shutil.which("unshare")
    return bool(exe) and _command_works(exe, "--net", "--pid", "--fork", "--kill-child", "true")


def choose_isolation(requested: str = "auto") -> str:
    """The strongest isolation available, or the requested one if it works."""
    requested = requested or "auto"
    if requested not in ISOLATION_MODES:
        raise HarnessError(f"unknown sandbox mode {requested!r}; choose one of {', '.join(ISOLATION_MODES)}")
    available = {"bwrap": bwrap_available, "unshare": unshare_available, "none": lambda: True}
    if requested != "auto":
        if not available[requested]():
            raise HarnessError(f"sandbox mode {requested!r} was asked for but does not work on this machine")
        return requested
    return next(mode for mode in ("bwrap", "unshare", "none") if available[mode]())


def _nobody() -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _world_traversable(path: Path) -> bool:
    """Whether an unprivileged user can reach `path` (every ancestor o+x, the file o+r)."""
    path = path.resolve()
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        needed = stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH
        if not mode & needed:
            return False
    return True


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


# --------------------------------------------------------------------------
# cgroups: the only limits that hold for a whole process tree.


class _Cgroups:
    """Memory and pids cgroups for one sandbox (v1 or v2), or none."""

    def __init__(self, name: str, limits: Limits):
        self.dirs: list[Path] = []
        self.kind = "none"
        self._memory_dir: Path | None = None
        try:
            self._create(name, limits)
        except OSError:
            self.remove()
            self.dirs, self.kind, self._memory_dir = [], "none", None

    @staticmethod
    def _own_path(controller: str) -> str | None:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return path
        return None

    def _create(self, name: str, limits: Limits) -> None:
        base = Path("/sys/fs/cgroup")
        memory_bytes = str(limits.memory_mb * _MB)
        v1_memory, v1_pids = base / "memory", base / "pids"
        memory_path, pids_path = self._own_path("memory"), self._own_path("pids")
        if memory_path is not None and pids_path is not None and (v1_memory / "cgroup.procs").exists():
            memory_dir = v1_memory / memory_path.lstrip("/") / name
            pids_dir = v1_pids / pids_path.lstrip("/") / name
            memory_dir.mkdir()
            self.dirs.append(memory_dir)
            pids_dir.mkdir()
            self.dirs.append(pids_dir)
            (memory_dir / "memory.limit_in_bytes").write_text(memory_bytes)
            swap = memory_dir / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(memory_bytes)
            (pids_dir / "pids.max").write_text(str(limits.max_processes))
            self.kind, self._memory_dir = "v1", memory_dir
            return
        if (base / "cgroup.controllers").exists():
            own = base / (self._own_path("") or "/").lstrip("/")
            child = own / name
            child.mkdir()
            self.dirs.append(child)
            enabled = (child / "cgroup.controllers").read_text().split()
            if not {"memory", "pids"} <= set(enabled):
                raise OSError("memory and pids controllers are not delegated here")
            (child / "memory.max").write_text(memory_bytes)
            (child / "memory.swap.max").write_text("0") if (child / "memory.swap.max").exists() else None
            (child / "pids.max").write_text(str(limits.max_processes))
            self.kind, self._memory_dir = "v2", child

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def kill_all(self) -> None:
        if self.kind == "v2" and (self.dirs[0] / "cgroup.kill").exists():
            try:
                (self.dirs[0] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        # v1 has no cgroup.kill: stop every process first (a stopped process cannot fork), then kill;
        # repeat until the group is empty, so a fork bomb cannot outrun us.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        if self._memory_dir is None:
            return False
        try:
            if self.kind == "v1":
                control = (self._memory_dir / "memory.oom_control").read_text()
                counts = dict(line.split() for line in control.splitlines() if len(line.split()) == 2)
                if int(counts.get("oom_kill", "0")) > 0:
                    return True
                return int((self._memory_dir / "memory.failcnt").read_text()) > 0 and not self.pids()
            events = (self._memory_dir / "memory.events").read_text()
            counts = dict(line.split() for line in events.splitlines())
            return int(counts.get("oom_kill", "0")) > 0
        except (OSError, ValueError):
            return False

    def pids_exhausted(self) -> bool:
        """Whether a fork was refused because the process limit was reached."""
        for d in self.dirs:
            events = d / "pids.events"
            try:
                counts = dict(line.split() for line in events.read_text().splitlines() if len(line.split()) == 2)
            except (OSError, ValueError):
                continue
            if int(counts.get("max", "0")) > 0:
                return True
        return False

    def remove(self) -> None:
        for d in reversed(self.dirs):
            for _ in range(250):  # until the last zombie is reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


# --------------------------------------------------------------------------
# The exec shim: as the first program in the child, it joins the cgroups,
# sets the rlimits and ignores SIGINT before exec'ing the isolation layer.
# SIGINT is ignored so that an interrupt sent to the kernel's process group
# does not kill bwrap's monitor process; ipykernel installs its own SIGINT
# handler while it runs a cell, so interrupts still reach student code.

_SHIM = """\
import os, resource, signal, sys
spec = sys.argv[1].split(",")
n_cgroups = int(spec[0])
for path in sys.argv[2:2 + n_cgroups]:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
for item in spec[1:]:
    name, value = item.split("=")
    value = int(value)
    resource.setrlimit(getattr(resource, name), (value, value))
signal.signal(signal.SIGINT, signal.SIG_IGN)
os.execvp(sys.argv[2 + n_cgroups], sys.argv[2 + n_cgroups:])
"""


class Sandbox:
    """One submission's child process environment. Use as a context manager."""

    def __init__(self, limits: Limits, *, isolation: str = "auto", device: str = "cpu",
                 blocked_modules: tuple[str, ...] = (), hidden_paths: tuple[Path, ...] = (),
                 threads: int | None = None):
        self.limits = limits
        self.device = device
        self.blocked_modules = tuple(blocked_modules)
        self.hidden_paths = tuple(Path(p).resolve() for p in hidden_paths if p)
        self.threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self.isolation = choose_isolation(isolation)
        self.root: Path | None = None
        self._cgroups: _Cgroups | None = None
        self._kernel_log = None
        self.user = self._choose_user()

    # -- set-up and tear-down ------------------------------------------------

    def __enter__(self) -> "Sandbox":
        base = Path(tempfile.mkdtemp(prefix="grader-"))
        os.chmod(base, 0o755)
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
        self._spent_cgroups: list[_Cgroups] = []
        return self

    def _new_cgroups(self) -> "_Cgroups":
        return _Cgroups(f"grader-{uuid.uuid4().hex[:12]}", self.limits)

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._cgroups is not None:
            for cgroups in [self._cgroups, *self._spent_cgroups]:
                cgroups.kill_all()
                cgroups.remove()
            self._cgroups = None
        if self._kernel_log is not None:
            self._kernel_log.close()
            self._kernel_log = None
        if self.root is not None:
            os.close(self.exchange_fd)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _child_dir(self, name: str) -> Path:
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

    # -- who the child runs as ---------------------------------------------

    def _choose_user(self) -> tuple[int, int] | None:
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            return None
        nobody = _nobody()
        if nobody is None:
            return None
        if self.isolation == "bwrap":
            return nobody  # bwrap builds a view in which the environment is reachable
        if all(_world_traversable(Path(p)) for p in (sys.executable, *python_roots())):
            return nobody
        return None

    def protections(self) -> Protections:
        notes = []
        if os.geteuid() == 0 and self.user is None:
            notes.append("the child runs as root: no setpriv, no 'nobody' user, "
                         "or the Python environment is not readable by 'nobody'")
        cgroups = self._cgroups.kind if self._cgroups else "none"
        rlimit_memory = "" if self.device != "cpu" else f"rlimit data {self.limits.memory_mb} MB"
        memory = ", ".join(x for x in (f"cgroup {cgroups} {self.limits.memory_mb} MB" if cgroups != "none" else "",
                                       rlimit_memory) if x) or "none"
        processes = (f"cgroup {cgroups} pids.max {self.limits.max_processes}" if cgroups != "none"
                     else f"rlimit nproc ({'binds' if self.user or os.geteuid() != 0 else 'does not bind root'})")
        if self.isolation == "none":
            notes.append("no namespaces: the child shares the network and sees the file system "
                         "with its user's permissions; run the grader inside a container for isolation")
        return Protections(
            isolation=self.isolation,
            network="isolated" if self.isolation in ("bwrap", "unshare") else "not isolated",
            filesystem="private read-only view" if self.isolation == "bwrap"
            else "host file system (user permissions)",
            user="nobody" if self.user else pwd.getpwuid(os.geteuid()).pw_name,
            memory=memory,
            processes=processes,
            notes=tuple(notes),
        )

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
            "MKL_NUM_THREADS": str(self.threads),
            "OPENBLAS_NUM_THREADS": str(self.threads),
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        }
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        else:
            for key in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES"):
                if key in os.environ:
                    env[key] = os.environ[key]
        return env

    def _rlimits(self) -> dict[str, int]:
        limits = {
            "RLIMIT_FSIZE": self.limits.max_file_mb * _MB,
            "RLIMIT_NOFILE": self.limits.max_open_files,
            "RLIMIT_CORE": 0,
        }
        if self.device == "cpu":
            # RLIMIT_AS breaks torch's import (it maps its CUDA libraries); the
            # data limit counts only private writable memory, which is what we want.
            limits["RLIMIT_DATA"] = self.limits.memory_mb * _MB
        own_uid_processes = 0 if self.user else _count_processes_of(os.getuid())
        cgroup_backstop = 8 if self._cgroups and self._cgroups.kind != "none" else 1
        limits["RLIMIT_NPROC"] = own_uid_processes + self.limits.max_processes * cgroup_backstop
        return limits

    def wrap(self, argv: list[str]) -> list[str]:
        """The full command line that runs `argv` inside this sandbox."""
        rlimits = self._rlimits()
        cgroup_files = self._cgroups.procs_files() if self._cgroups else []
        spec = ",".join([str(len(cgroup_files)), *(f"{k}={v}" for k, v in rlimits.items())])
        shim = [sys.executable, "-I", "-S", "-c", _SHIM, spec, *cgroup_files]
        drop = []
        if self.user is not None:
            uid, gid = self.user
            drop = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all"]
        if self.isolation == "bwrap":
            return [*shim, *self._bwrap_prefix(), *drop, *argv]
        if self.isolation == "unshare":
            return [*shim, shutil.which("unshare"), "--net", "--pid", "--fork", "--kill-child", "--", *drop, *argv]
        return [*shim, *drop, *argv]

    def _bwrap_prefix(self) -> list[str]:
        args = [shutil.which("bwrap"), "--die-with-parent", "--unshare-net", "--unshare-pid",
                "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
        made: set[Path] = set()

        def ensure_parents(path: Path) -> None:
            # bwrap creates missing parents with mode 0700, which 'nobody' cannot cross.
            for parent in reversed(path.parents):
                if parent != Path("/") and parent not in made:
                    args.extend(["--perms", "0755", "--dir", str(parent)])
                    made.add(parent)

        # The private /tmp first: a Python environment that lives under /tmp is then mounted on top of it.
        args.extend(["--proc", "/proc", "--dev", "/dev",
                     "--perms", "1777", "--size", str(self.limits.tmp_mb * _MB), "--tmpfs", "/tmp",
                     "--perms", "1777", "--size", str(self.limits.tmp_mb * _MB), "--tmpfs", "/dev/shm"])
        for root in _bound_roots():
            ensure_parents(root)
            args.extend(["--ro-bind", str(root), str(root)])
        if self.device != "cpu":
            for dev in sorted(Path("/dev").glob("nvidia*")):
                args.extend(["--dev-bind", str(dev), str(dev)])
            if os.path.exists("/sys"):
                args.extend(["--ro-bind", "/sys", "/sys"])
        ensure_parents(self.root / "x")
        args.extend(["--ro-bind", str(self.childlib), str(self.childlib),
                     "--bind", str(self.work), str(self.work),
                     "--bind", str(self.runtime), str(self.runtime),
                     "--bind", str(self.exchange), str(self.exchange)])
        for path in self._masked_paths():
            if path.is_dir():
                args.extend(["--tmpfs", str(path)])
            elif path.exists():
                args.extend(["--ro-bind", "/dev/null", str(path)])
        args.extend(["--chdir", str(self.work)])
        return args

    def _masked_paths(self) -> list[Path]:
        """Paths inside the bound view the child must not see: blocked modules, course files."""
        candidates = list(self.hidden_paths)
        for module in self.blocked_modules:
            candidates.extend(module_locations(module))
        bound = _bound_roots()
        return [p for p in candidates if any(p.resolve().is_relative_to(root) for root in bound)]

    def kernel_command(self, connection_file: str) -> list[str]:
        argv = [sys.executable, "-s", "-m", "ipykernel_launcher", "-f", connection_file,
                "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=True",
                # the sandbox kills the kernel with its parent; ipykernel's own check
                # misreads the pid namespace as an orphaned process
                "--IPKernelApp.parent_handle=0"]
        return self.wrap(argv)

    def launch_kwargs(self) -> dict[str, Any]:
        return {"env": self.child_env(), "cwd": str(self.work),
                "stdout": subprocess.DEVNULL, "stderr": self._kernel_log, "stdin": subprocess.DEVNULL}

    def kernel_manager(self) -> "SandboxedKernelManager":
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


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")


def _bound_roots() -> list[Path]:
    """What bwrap shows the child, read-only: the system and the Python environment."""
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


def _count_processes_of(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


class SandboxedKernelManager(AsyncKernelManager):
    """A jupyter_client kernel manager whose kernel always runs inside a Sandbox.

    The notebook's own kernelspec is ignored: a submission cannot pick another
    language or interpreter by editing its metadata.
    """

    sandbox = AnyTrait()

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return self.sandbox.kernel_command(self.connection_file)

    def write_connection_file(self, **kwargs: Any) -> None:
        super().write_connection_file(**kwargs)
        if self.sandbox.user is not None:
            os.chown(self.connection_file, *self.sandbox.user)

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        kw = {**kw, **self.sandbox.launch_kwargs()}
        return await super()._async_pre_start_kernel(**kw)
