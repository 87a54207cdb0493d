"""What a sandbox may use, and the record of what protected it: the vocabulary the course and the
reports share."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHILD_LIB = Path(__file__).resolve().parent.parent / "child"


ISOLATION_MODES = ("auto", "bwrap", "unshare", "user", "none")
NAMESPACE_MODES = ("bwrap", "unshare")
DEFAULT_USER = "nobody"
MB = 1024 * 1024
MAX_MESSAGE_BYTES = 32 * MB  # a kernel message larger than this is dropped before the grader reads it


# Threads that wait for work sleep instead of spinning. On a busy machine a spinning OpenMP thread burns
# the core its siblings need: toy-2d's training took 110-140 s instead of 4-6 s beside four busy processes
# per core, and 25 s of CPU instead of 1 (which the runaway guard counts). Idle, it costs toy-2d's tiny
# steps a few tenths of a second.
OMP_WAIT_POLICY = "PASSIVE"
# Sleeping costs every small step a wake-up, though: the deep-mlp reference trained 1.6-1.9x slower with
# two sleeping threads than with threads that spin a little. So the trainer (the grader's own code) spins
# for about 30 µs (GOMP_SPINCOUNT) where it has several threads and the machine is not contended: beside
# toy-2d's trainer under four busy processes per core a 10 µs spin cost 1.6x and a 100 µs one 4.8x. How
# threads wait changes only the speed, never the numbers.
BRIEF_SPIN = "3000"
CONTENDED_PERCENT = 10.0  # tasks waited for a CPU this share of the time: the machine is busy
CPU_PRESSURE = Path("/proc/pressure/cpu")
CONTENTION_WINDOW_S = 0.05
MIN_MARK_WINDOW_S = 0.005


def submission_threads(requested: int | None) -> int:
    """The threads a submission's kernel and its trainer use: those asked for, else the machine's cores (at
    most 8, past which one small model gains nothing)."""
    return requested or max(1, min(os.cpu_count() or 1, 8))


def trainer_waiting(threads: int, contended: bool | None = None) -> dict[str, str]:
    """How a trainer's OpenMP threads wait for work: on this machine as loaded now, or as `contended` says
    it was (where the caller judged it before its own processes loaded it)."""
    if threads > 1 and not (cpu_contended_now() if contended is None else contended):
        return {"GOMP_SPINCOUNT": BRIEF_SPIN}
    return {"OMP_WAIT_POLICY": OMP_WAIT_POLICY}


@dataclass(frozen=True)
class PressureMark:
    """Where the kernel's count of CPU waiting stood at a moment (see contended_since)."""

    at: float  # time.monotonic()
    stalled_us: int


def pressure_mark() -> PressureMark | None:
    """The count now; None where the kernel keeps none."""
    try:
        return PressureMark(time.monotonic(), _stalled_us())
    except (OSError, IndexError, ValueError):
        return None


def contended_since(mark: PressureMark | None, now: PressureMark | None = None) -> bool | None:
    """Whether tasks waited for a CPU since `mark` as cpu_contended_now counts it, without waiting for a new
    window: taken when a command starts and read before it starts any process of its own, it judges the
    machine as others load it, which cpu_contended_now cannot once a grade has begun (its own kernel image,
    trainer and report imports are three busy processes on two cores). None: no count, or too short a time
    since the mark to say."""
    now = now or pressure_mark()
    if mark is None or now is None or now.at - mark.at < MIN_MARK_WINDOW_S:
        return None
    return now.stalled_us - mark.stalled_us > (now.at - mark.at) * 1e6 * CONTENDED_PERCENT / 100


def cpu_contended_now(window_s: float = CONTENTION_WINDOW_S) -> bool:
    """Whether runnable tasks wait for a CPU now: the share of the next `window_s` seconds in which some
    waited, by the kernel's pressure stall information where it has it (else the 1-minute load average
    against the cores, which lags). Not the kernel's 10-second average: that still holds the burst of a
    grade's own start (the kernel image, the grader and the trainer importing torch at once) when its
    training begins, and so found the machine busy for every single grade of a model on 2 cores."""
    started = pressure_mark()
    if started is not None:
        time.sleep(window_s)
    judged = contended_since(started)
    return _load_above_cores() if judged is None else judged


def _stalled_us() -> int:
    """Microseconds in which some runnable task waited for a CPU, since boot."""
    some = CPU_PRESSURE.read_text().splitlines()[0].split()  # "some avg10=0.32 avg60=... avg300=... total=..."
    return int(some[4].removeprefix("total="))


def _load_above_cores() -> bool:
    return os.getloadavg()[0] > (os.cpu_count() or 1)


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
