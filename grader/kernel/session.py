"""Run code in a sandboxed Jupyter kernel, one cell at a time, under timeouts.

nbclient does the talking to the kernel; this module adds what grading needs
on top: a timeout that interrupts and then kills a kernel that will not stop,
output caps, restarts, and a `CellRun` record for every execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from dataclasses import dataclass, field
from queue import Empty

import nbformat
from jupyter_client.client import KernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from grader.errors import HarnessError
from grader.kernel.clients import KERNEL_START_TIMEOUT_S, kernel_manager
from grader.sandbox.jail import Sandbox
from grader.states import RunStatus

INTERRUPT_GRACE_S = 3.0
START_ATTEMPTS = 2  # a kernel that did not become ready, then one fresh kernel
# nbclient logs a timed-out cell as an ERROR; here that is an expected outcome
# that the grader reports itself, so its messages go to debug.
_quiet = logging.getLogger("grader.kernel.session.nbclient")
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class CellRun:
    status: RunStatus
    elapsed_s: float
    error_name: str = ""
    error_value: str = ""
    traceback: list[str] = field(default_factory=list)
    output_text: str = ""
    truncated: bool = False
    execution_count: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.OK


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class _CappedClient(NotebookClient):
    """NotebookClient that keeps only the first part of a flood of output, and nothing a kernel
    asks a front end to remember (widget state, comm buffers, display updates): the grader's
    memory must not grow with what a notebook sends."""

    output_budget = 0
    truncated = False
    saw_idle = False  # the kernel's "idle" arrived: the output stream is intact
    output_reader: asyncio.Task | None = None

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):  # nbclient hook
        # nbclient leaves this reader running when a cell times out; the grader stops it (see
        # KernelSession.run), or it would read on beside the next cell's and take its output.
        self.output_reader = asyncio.current_task()
        return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)

    def process_message(self, msg, cell, cell_index):  # nbclient hook
        msg_type = msg.get("msg_type", "")
        if msg_type == "status" and msg.get("content", {}).get("execution_state") == "idle":
            self.saw_idle = True
        if msg_type.startswith("comm") or msg_type == "update_display_data":
            return None
        transient = msg.get("content", {}).get("transient")
        if transient:
            msg["content"]["transient"] = None  # no display ids: nothing to update later
        msg["buffers"] = []
        return super().process_message(msg, cell, cell_index)

    def output(self, outs, msg, display_id, cell_index):  # nbclient hook
        size = len(str(msg.get("content", "")))
        if size > self.output_budget:
            self.truncated = True
            self.output_budget = 0
            return None
        self.output_budget -= size
        return super().output(outs, msg, display_id, cell_index)


# A fact about this process, not warm state an owner could close: once it has started a kernel it holds
# an event loop and ZMQ sockets, and must not fork workers (grader.grading.batch).
_started_any = False


def started_any_kernel() -> bool:
    return _started_any


def warm_up_kernel_start() -> None:
    """Pay now what the first kernel start of a process imports (jupyter_client finds the python3
    kernel through ipykernel): a batch does this before it forks its workers, once for all of them."""
    from jupyter_client.kernelspec import KernelSpecManager

    KernelSpecManager().get_kernel_spec("python3")


async def _cancelled(task: asyncio.Task | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class KernelSession:
    """A sandboxed kernel that runs code cells; restartable after it dies."""

    def __init__(self, sandbox: Sandbox, *, startup_timeout_s: float = KERNEL_START_TIMEOUT_S):
        self.sandbox = sandbox
        self.startup_timeout_s = startup_timeout_s
        self.client: _CappedClient | None = None
        self.restarts = 0
        self._total_output = sandbox.limits.output_kb_total * 1024
        self.alive = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start a kernel; on a busy machine one that does not become ready gets one fresh try."""
        global _started_any
        _started_any = True
        problems = []
        for _attempt in range(START_ATTEMPTS):
            problem = self._try_start()
            if not problem:
                self.alive = True
                return
            problems.append(problem)
        raise HarnessError(f"could not start a Python kernel {self.sandbox.kernel_mode()}: "
                           f"{'; then, with a fresh kernel, '.join(problems)}")

    def _try_start(self) -> str:
        """Start a kernel and wait until it is ready; what went wrong, or ""."""
        km = kernel_manager(self.sandbox)
        scratch = nbformat.v4.new_notebook()
        self.client = _CappedClient(
            scratch, km=km, timeout=60, allow_errors=True, interrupt_on_timeout=False,
            startup_timeout=int(self.startup_timeout_s), iopub_timeout=4, record_timing=False,
            shutdown_kernel="immediate", kernel_name="python3", log=_quiet,
            resources={"metadata": {"path": str(self.sandbox.work)}})
        try:
            self.client.start_new_kernel()
            self.client.start_new_kernel_client()
        except Exception as exc:  # any start failure is the same to a user
            self.stop()
            detail = self.sandbox.kernel_stderr_tail().strip().splitlines()[-3:]
            return str(exc) + (f" ({' | '.join(detail)})" if detail else "")
        return ""

    def stop(self) -> None:
        # The sandbox kills first: jupyter_client's own shutdown polls for the kernel's end every 0.1 s,
        # and finds it gone at once this way.
        self.sandbox.kill_all()
        if self.client is not None and self.client.km is not None:
            with contextlib.suppress(Exception):  # a kernel that is gone is what we want
                self.client._cleanup_kernel()
        self.client = None
        self.alive = False

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    # -- running code --------------------------------------------------------

    def run(self, source: str, *, timeout_s: float) -> CellRun:
        """Execute `source` as one cell; never raises for anything the cell does."""
        if not self.alive:
            return CellRun(status=RunStatus.DIED, elapsed_s=0.0, error_value="the kernel is not running")
        client = self.client
        assert client is not None, "a running kernel has a client"
        cell = nbformat.v4.new_code_cell(source)
        client.nb.cells.append(cell)
        index = len(client.nb.cells) - 1
        client.timeout = max(1, round(timeout_s))
        client.output_budget = min(self.sandbox.limits.output_kb_per_cell * 1024, self._total_output)
        client.truncated = False
        client.saw_idle = False
        start = time.monotonic()
        try:
            client.execute_cell(cell, index)
        except CellTimeoutError:
            run_sync(_cancelled)(client.output_reader)
            return self._after_timeout(start)
        except DeadKernelError:
            self.alive = False
            return CellRun(status=RunStatus.DIED, elapsed_s=time.monotonic() - start,
                           error_value=self._death_reason())
        finally:
            self._total_output = max(0, self._total_output - (self.sandbox.limits.output_kb_per_cell * 1024
                                                              - client.output_budget))
        elapsed = time.monotonic() - start
        if not self._kernel_alive():
            self.alive = False
            return CellRun(status=RunStatus.DIED, elapsed_s=elapsed, error_value=self._death_reason())
        if not client.saw_idle:
            self._reconnect_output()
            client.truncated = True
        return self._from_outputs(cell, elapsed, client.truncated)

    def _manager(self) -> AsyncKernelManager:
        """The running kernel's manager (the sandbox's, asynchronous)."""
        assert self.client is not None and isinstance(self.client.km, AsyncKernelManager), "no kernel is running"
        return self.client.km

    def _kernel_client(self) -> KernelClient:
        assert self.client is not None and self.client.kc is not None, "no kernel is running"
        return self.client.kc

    def _reconnect_output(self) -> None:
        """A message over the size cap makes ZMQ drop the output connection for good: open a new one."""
        kc = self._kernel_client()
        if kc._iopub_channel is not None:
            kc._iopub_channel.close()
            kc._iopub_channel = None
        kc.iopub_channel  # noqa: B018 - connects a fresh socket

    def _after_timeout(self, start: float) -> CellRun:
        """Interrupt; if the kernel does not answer within a grace period, kill it."""
        try:
            run_sync(self._manager().interrupt_kernel)()
            deadline = time.monotonic() + INTERRUPT_GRACE_S
            while time.monotonic() < deadline:
                try:
                    reply = run_sync(self._kernel_client().shell_channel.get_msg)(timeout=0.2)
                except Empty:
                    continue
                if reply.get("msg_type") == "execute_reply":
                    return CellRun(status=RunStatus.TIMEOUT, elapsed_s=time.monotonic() - start,
                                   error_name="TimeoutError", error_value="interrupted")
        except Exception:  # fall through to killing it
            pass
        self.stop()
        return CellRun(status=RunStatus.TIMEOUT, elapsed_s=time.monotonic() - start,
                       error_name="TimeoutError", error_value="the kernel did not stop and was killed")

    def _kernel_alive(self) -> bool:
        try:
            return bool(run_sync(self._manager().is_alive)())
        except Exception:
            return False

    def _death_reason(self) -> str:
        forks = (f" after trying to start more than {self.sandbox.limits.max_processes} processes"
                 if self.sandbox.pids_exhausted() else "")
        if self.sandbox.oom_killed():
            return (f"the kernel was killed for using more than "
                    f"{self.sandbox.limits.memory_mb} MB of memory{forks}")
        code = None
        try:
            provisioner = self._manager().provisioner
            assert isinstance(provisioner, LocalProvisioner), "the sandbox's kernels use the local provisioner"
            process = provisioner.process
            code = process.poll() if process is not None else None
        except Exception:
            pass
        self.stop()
        # bwrap and shells report a child killed by signal N as exit status 128 + N
        signum = -code if code is not None and code < 0 else code - 128 if code is not None and code > 128 else None
        if signum is not None and signum in signal.Signals._value2member_map_:
            return f"the kernel died (killed by signal {signum}, {signal.Signals(signum).name}){forks}"
        if code is not None:
            return f"the kernel died (exit status {code}){forks}"
        return f"the kernel died{forks}"

    @staticmethod
    def _from_outputs(cell, elapsed: float, truncated: bool) -> CellRun:
        texts, error = [], None
        for out in cell.outputs:
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type == "error":
                error = out
            elif out.output_type in ("execute_result", "display_data"):
                texts.append(out.get("data", {}).get("text/plain", ""))
        text = "".join(texts)
        count = cell.get("execution_count")
        if error is None:
            return CellRun(status=RunStatus.OK, elapsed_s=elapsed, output_text=text, truncated=truncated,
                           execution_count=count)
        return CellRun(status=RunStatus.ERROR, elapsed_s=elapsed, error_name=error.ename,
                       error_value=strip_ansi(error.evalue),
                       traceback=[strip_ansi(line) for line in error.traceback],
                       output_text=text, truncated=truncated, execution_count=count)


