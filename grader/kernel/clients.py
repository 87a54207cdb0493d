"""The jupyter_client classes the grader talks to a sandboxed kernel through: a manager that starts
the kernel through its sandbox, and a client whose readiness survives a busy machine."""

from __future__ import annotations

import os
import time
import uuid
from queue import Empty
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Any as AnyTrait
from traitlets import Type

from grader.sandbox.image import RECONNECT_MS
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import MAX_MESSAGE_BYTES

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


def kernel_manager(sandbox: Sandbox) -> SandboxedKernelManager:
    """A manager for one kernel of this sandbox, over IPC sockets in the sandbox's runtime directory."""
    return SandboxedKernelManager(
        sandbox=sandbox, transport="ipc", ip=str(sandbox.runtime / "kernel"),
        connection_file=str(sandbox.runtime / f"kernel-{uuid.uuid4().hex[:8]}.json"),
        kernel_name="python3")
