"""A real Dask scheduler and two workers as separate processes on 127.0.0.1, for the tests that grade
on a cluster (test_distributed, test_service): w1 says it has a GPU (`--resources GPU=1` and
tests/dask_fake_gpu.py), w2 does not."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, data_root
from grader.grading.distributed import GPU_RESOURCE
from grader.sandbox.reaping import sweep_orphaned_sandboxes

DASK = Path(sys.executable).parent / "dask"
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A scheduler and workers as separate processes on 127.0.0.1; `close` ends every one of them."""

    def __init__(self, root: Path):
        self.root = root
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.env = {**os.environ, "GRADER_DATA": str(data_root())}
        self.processes: list[subprocess.Popen] = []
        self._client = None

    def _start(self, name: str, argv: list[str]) -> None:
        with open(self.root / f"{name}.log", "wb") as log:
            self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                   cwd=self.root, start_new_session=True))

    def start(self) -> LoopbackCluster:
        port = self.address.rsplit(":", 1)[1]
        self._start("scheduler", [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"])
        common = ["--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1", "--memory-limit", "2GiB",
                  "--no-dashboard", "--death-timeout", "60"]
        self._start("w1", [str(DASK), "worker", self.address, *common, "--name", "w1", "--local-directory",
                           str(self.root / "w1"), "--resources", f"{GPU_RESOURCE}=1",
                           "--preload", str(REPO / "tests" / "dask_fake_gpu.py")])
        self._start("w2", [str(DASK), "worker", self.address, *common, "--name", "w2", "--local-directory",
                           str(self.root / "w2")])
        self.client().wait_for_workers(2, timeout=START_TIMEOUT_S)
        return self

    def client(self):
        if self._client is None:
            from distributed import Client

            self._client = Client(self.address, timeout=START_TIMEOUT_S, set_as_default=False)
        return self._client

    def executing(self) -> dict[str, tuple[list[str], int]]:
        """worker address -> (keys of the tasks it is running, the worker process's pid)."""
        def running(dask_worker):
            return [str(ts.key) for ts in dask_worker.state.executing], os.getpid()

        return self.client().run(running, on_error="ignore")  # a worker that just died has nothing to say

    def kill_worker_running(self, student: str, *, spared: set[int], settle_s: float = 1.5,
                            timeout_s: float = 90) -> int:
        """SIGKILL the worker process (not in `spared`) once it has been grading `student` for a while."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for keys, pid in self.executing().values():
                if pid not in spared and any(f"'{student}'" in key for key in keys):
                    time.sleep(settle_s)  # its kernel is up and running the student's cells
                    os.kill(pid, signal.SIGKILL)
                    return pid
            time.sleep(0.1)
        raise AssertionError(f"no worker started grading {student} within {timeout_s} s")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for process in reversed(self.processes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=15)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # a worker killed mid-submission leaves its sandbox behind (tmpfs, cgroups): the sweep removes it
        sweep_orphaned_sandboxes()
