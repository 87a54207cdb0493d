"""What a sandbox's processes hold, and removing all of it when the sandbox closes.

- `Cgroups`: memory and pids cgroups (v1 or v2) that one sandbox's processes
  join; the only limits that hold for a whole process tree, and the only
  reliable way to find every process again, however it detached itself.
- `sweep_user`: where there is no namespace (the "user" sandbox mode, inside
  an LMS container), what the sandbox user left in the machine's shared
  places: processes, SysV shared memory, semaphores and message queues, and
  files in /tmp, /var/tmp, /dev/shm and /run/lock.
- `sweep_orphaned_sandboxes`: what a grader killed mid-submission (a batch
  worker killed or out of memory) could not remove itself: its sandbox's
  root (a tmpfs when root) and its cgroups, found by the owner record each
  sandbox keeps in its root.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from grader.files import write_atomically

log = logging.getLogger(__name__)

_MB = 1024 * 1024
SHARED_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
OWNER_FILE = "owner.json"  # in a sandbox's root: the grader process that owns it, and its cgroups
CGROUP_BASE = Path("/sys/fs/cgroup")
IPC_RMID = 0


class Cgroups:
    """Memory and pids cgroups for one sandbox (v1 or v2), or none ("none" when not writable)."""

    def __init__(self, name: str, *, memory_mb: int, max_processes: int):
        self.dirs: list[Path] = []
        self.kind = "none"
        self._memory_dir: Path | None = None
        try:
            self._create(name, memory_mb * _MB, max_processes)
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

    def _create(self, name: str, memory_bytes: int, max_processes: int) -> None:
        base = Path("/sys/fs/cgroup")
        v1_memory, v1_pids = base / "memory", base / "pids"
        memory_path, pids_path = self._own_path("memory"), self._own_path("pids")
        if memory_path is not None and pids_path is not None and (v1_memory / "cgroup.procs").exists():
            memory_dir = v1_memory / memory_path.lstrip("/") / name
            pids_dir = v1_pids / pids_path.lstrip("/") / name
            memory_dir.mkdir()
            self.dirs.append(memory_dir)
            pids_dir.mkdir()
            self.dirs.append(pids_dir)
            (memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
            swap = memory_dir / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(memory_bytes))
            (pids_dir / "pids.max").write_text(str(max_processes))
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
            (child / "memory.max").write_text(str(memory_bytes))
            if (child / "memory.swap.max").exists():
                (child / "memory.swap.max").write_text("0")
            (child / "pids.max").write_text(str(max_processes))
            self.kind, self._memory_dir = "v2", child

    @classmethod
    def existing(cls, dirs: list[Path]) -> Cgroups:
        """Cgroups made earlier by a grader since gone: to kill what they hold and remove them."""
        group = cls.__new__(cls)
        group.dirs = list(dirs)
        group.kind = "v2" if any((d / "cgroup.kill").exists() for d in group.dirs) else "v1"
        group._memory_dir = None
        return group

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def kill_all(self) -> None:
        if self.kind == "v2" and (self.dirs[0] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
        kill_until_gone(self.pids)

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


def kill_until_gone(find_pids, *, seconds: float = 30.0) -> None:
    """Stop every process first (a stopped process cannot fork), then kill; repeat until none is
    left, so that a fork bomb cannot outrun us."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = find_pids()
        if not pids:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        time.sleep(0.01)


# --------------------------------------------------------------------------
# The sandbox user's leftovers, where no namespace holds them


def processes_of(uid: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and _state(entry.name) != "Z":
                    found.add(int(entry.name))
            except OSError:
                pass
    return found


def tasks_of(uid: int) -> int:
    """How many tasks (threads: what RLIMIT_NPROC counts) the user's processes hold."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):  # gone, or a status without threads
                if entry.stat().st_uid == uid:
                    status = Path(entry.path, "status").read_text()
                    count += int(status.split("\nThreads:", 1)[1].split(None, 1)[0])
    return count


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def ipc_objects_of(uid: int) -> list[tuple[str, int]]:
    """("shm" | "sem" | "msg", id) for every SysV IPC object the user owns or created: an object given
    away with IPC_SET (to root, say) still names its creator."""
    found = []
    for kind in ("shm", "sem", "msg"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        header = lines[0].split() if lines else []
        if "uid" not in header or ("shmid" not in header and "semid" not in header and "msqid" not in header):
            continue
        id_column = next(header.index(name) for name in ("shmid", "semid", "msqid") if name in header)
        who = [header.index(name) for name in ("uid", "cuid") if name in header]
        for line in lines[1:]:
            fields = line.split()
            if len(fields) > max(id_column, *who) and any(fields[column] == str(uid) for column in who):
                found.append((kind, int(fields[id_column])))
    return found


def posix_queues_of(uid: int, root: Path = Path("/dev/mqueue")) -> list[Path]:
    """The user's POSIX message queues, where the mqueue file system is mounted (elsewhere none can be
    listed, and they go with the IPC namespace)."""
    try:
        return [entry for entry in root.iterdir() if entry.lstat().st_uid == uid]
    except OSError:
        return []


def remove_ipc_object(kind: str, ident: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if kind == "shm":
        libc.shmctl(ident, IPC_RMID, None)
    elif kind == "sem":
        libc.semctl(ident, 0, IPC_RMID)
    else:
        libc.msgctl(ident, IPC_RMID, None)


def temp_files_of(uid: int, dirs: tuple[str, ...] = SHARED_TEMP_DIRS) -> list[Path]:
    found = []
    for folder in dirs:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid == uid:
                    found.append(Path(entry.path))
            except OSError:
                pass
    return found


def sweep_user(uid: int, *, processes: bool) -> list[str]:
    """Remove the user's IPC objects and shared temp files, and kill its processes if asked (where no
    cgroup holds them); say what went. Only for a user that grades one submission at a time."""
    swept = []
    if processes and processes_of(uid):
        kill_until_gone(lambda: processes_of(uid))
        swept.append("processes")
    for kind, ident in ipc_objects_of(uid):
        remove_ipc_object(kind, ident)
        swept.append(f"SysV {kind} {ident}")
    for path in posix_queues_of(uid):
        path.unlink(missing_ok=True)
        swept.append(f"POSIX message queue {path.name}")
    for path in temp_files_of(uid):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        swept.append(str(path))
    return swept


# --------------------------------------------------------------------------
# What a killed grader left


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (with the pid, names one process for good)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def record_owner(root: Path, cgroup_dirs: list[Path]) -> None:
    """Write (atomically) which process owns the sandbox at `root`, and its cgroup directories."""
    record = {"pid": os.getpid(), "start": _start_time(os.getpid()), "pid_namespace": _pid_namespace(),
              "cgroups": [str(d) for d in cgroup_dirs]}
    write_atomically(root / OWNER_FILE, json.dumps(record).encode())


def _owner_alive(record: dict) -> bool:
    """Whether the owner may still run; True where this process cannot tell (another pid namespace)."""
    pid = record.get("pid")
    if record.get("pid_namespace") != _pid_namespace() or not isinstance(pid, int) or pid <= 0:
        return True
    return _start_time(pid) == str(record.get("start"))


def sweep_orphaned_sandboxes(temp_dir: str | os.PathLike | None = None) -> list[str]:
    """Remove the sandboxes under `temp_dir` (default: the temp directory sandboxes are made in) whose
    owner process is gone: kill what is left in their cgroups, remove the cgroups, unmount and delete
    the root. Sandboxes without an owner record (being set up, or older) are left alone. Says what went."""
    import tempfile

    swept = []
    for root in Path(temp_dir or tempfile.gettempdir()).glob("grader-*"):
        try:
            if root.is_symlink() or not root.is_dir():
                continue
            record = json.loads((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or _owner_alive(record):
            continue
        for cgroup in _own_cgroups(record.get("cgroups")):
            group = Cgroups.existing([cgroup])
            group.kill_all()
            group.remove()
        if os.path.ismount(root):
            ctypes.CDLL(None, use_errno=True).umount2(str(root).encode(), 2)  # MNT_DETACH
        shutil.rmtree(root, ignore_errors=True)
        swept.append(str(root))
    return swept


def sweep_what_dead_graders_left() -> None:
    """sweep_orphaned_sandboxes(), said in the log: run once by each process that grades (a grader killed
    outright, SIGKILL or a power cut, leaves its sandboxes' tmpfs, cgroups and kernel image behind)."""
    swept = sweep_orphaned_sandboxes()
    if swept:  # one line, however many a killed batch left
        more = f" and {len(swept) - 3} more" if len(swept) > 3 else ""
        log.warning("removed what %d sandbox(es) of a grader that was killed left: %s%s", len(swept),
                    ", ".join(swept[:3]), more)


def _own_cgroups(listed: object) -> list[Path]:
    """The cgroup directories of an owner record that really are a sandbox's (grader-*, under the base)."""
    if not isinstance(listed, list):
        return []
    found = []
    for entry in listed:
        path = Path(str(entry))
        if (path.is_absolute() and path.name.startswith("grader-") and CGROUP_BASE in path.parents
                and ".." not in path.parts and path.is_dir() and not path.is_symlink()):
            found.append(path)
    return found
