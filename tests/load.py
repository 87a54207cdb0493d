"""A busy machine, made by a test and stopped by it: the load a TA's laptop during `grader batch -j 2`,
a shared LMS host or a Dask worker carries.

`MachineLoad` starts, per core, `per_core` busy processes (most of them pure Python loops, some
multi-threaded torch matrix products, which fight over cores the way a trainer does) and, with
`batch`, a real `grader batch -j 2` of a model assignment over and over. Every process ends by itself
after `seconds` (a test that dies leaves nothing running for long) and is killed when the block ends.

`cpu_limited` runs a command in a cgroup allowed `percent` of one CPU (cgroup v1 cpu.cfs_quota_us or
v2 cpu.max), the deterministic version of a machine too busy to give a process its share.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

GRADER = str(Path(sys.executable).parent / "grader")
REPO = Path(__file__).resolve().parent.parent

_SPIN = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    sum(range(10000))\n"
_TORCH = ("import sys, time, torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\n"
          "end = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    a = torch.tanh(a @ a)\n")
_BATCH = ("import subprocess, sys, tempfile, time\nend = time.time() + float(sys.argv[1])\n"
          "while time.time() < end:\n    with tempfile.TemporaryDirectory() as out:\n"
          "        subprocess.run([sys.argv[2], 'batch', sys.argv[3], '--assignment', sys.argv[4], '-j', '2',\n"
          "                        '--out', out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,\n"
          "                       timeout=max(1.0, end - time.time()))\n")


class MachineLoad:
    def __init__(self, *, seconds: float = 900, per_core: int = 4, torch_share: float = 0.375,
                 batch: str | None = "toy_2d"):
        self.seconds = seconds
        self.per_core = per_core
        self.torch_share = torch_share
        self.batch = batch
        self.processes: list[subprocess.Popen] = []
        self.folder: Path | None = None

    def __enter__(self) -> MachineLoad:
        busy = self.per_core * (os.cpu_count() or 1)
        with_torch = max(1, round(busy * self.torch_share))
        for i in range(busy):
            self._start([sys.executable, "-c", _TORCH if i < with_torch else _SPIN, str(self.seconds)])
        if self.batch:
            self.folder = Path(tempfile.mkdtemp(prefix="grader-load-"))
            for name in ("ann", "ben", "cat"):
                shutil.copy(REPO / "solutions" / f"{self.batch}.ipynb", self.folder / f"{name}.ipynb")
            self._start([sys.executable, "-c", _BATCH, str(self.seconds), GRADER, str(self.folder),
                         self.batch.replace("_", "-")])
        return self

    def _start(self, argv: list[str]) -> None:
        self.processes.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True))

    def __exit__(self, *exc_info: object) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # with its graders, kernels and trainers
        for process in self.processes:
            process.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def cgroup_cpu_available() -> bool:
    return os.geteuid() == 0 and (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists()
                                  or Path("/sys/fs/cgroup/cgroup.controllers").exists())


def cpu_limited(argv: list[str], *, percent: int, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    """Run argv, and everything it starts, in a new cgroup allowed `percent` % of one CPU."""
    period = 100_000
    quota = period * percent // 100
    name = f"grader-slow-{uuid.uuid4().hex[:8]}"
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        group = Path("/sys/fs/cgroup") / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} {period}")
    procs = str(group / "cgroup.procs")
    try:
        # the shell joins the group, then becomes the command: nothing of it runs outside the limit
        return subprocess.run(["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv],
                              capture_output=True, text=True, timeout=timeout, **kwargs)
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:  # processes still leaving it
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                time.sleep(0.1)
