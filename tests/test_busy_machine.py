"""What keeps a busy machine from changing a grade, tested without loading this one (the stress layer,
tests/test_stress.py, loads it): kernels asked once and given time, guards that count CPU time, and a
grader's failure that is never a score."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from jupyter_core.utils import run_sync

from conftest import SESSION_WARM, SOLUTIONS, assignment
from grader.errors import GraderFailure
from grader.grading.pipeline import grade_safely, grade_submission
from grader.kernel.clients import kernel_manager
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import Limits
from grader.sandbox.trusted import Stalled, cpu_seconds, finish_trusted
from grader.states import CheckStatus, ResultStatus


def test_a_kernel_that_answers_late_is_asked_once_not_flooded():
    # Today's failure under load: a new kernel_info request every second, only the newest reply accepted,
    # so a late kernel answered stale requests forever. Here the kernel is stopped for 4 s after launch.
    with Sandbox(Limits()) as sandbox:
        km = kernel_manager(sandbox)
        run_sync(km.start_kernel)()
        group = km.provisioner.process.pid
        os.killpg(group, signal.SIGSTOP)
        resume = threading.Timer(4.0, os.killpg, (group, signal.SIGCONT))
        resume.start()
        client = km.client()
        sent: list[str] = []
        ask = client.kernel_info
        client.kernel_info = lambda: sent.append(ask()) or sent[-1]
        client.start_channels()
        try:
            start = time.monotonic()
            run_sync(client.wait_for_ready)(timeout=60)
            waited = time.monotonic() - start
        finally:
            resume.join()
            client.stop_channels()
            sandbox.kill_all()
            run_sync(km.cleanup_resources)()
    assert waited >= 3.5
    assert len(sent) <= 2, f"{len(sent)} kernel_info requests for one start"


def test_a_kernel_that_never_answers_is_tried_twice_and_the_message_names_the_mode(options, monkeypatch):
    from grader.errors import HarnessError
    from grader.kernel import clients as clients
    from grader.kernel.session import KernelSession

    tried = []

    async def silent(self, timeout=None):
        tried.append(timeout)
        raise clients.KernelNotReady(f"the kernel did not answer kernel_info on its shell channel within "
                                            f"{timeout:.0f} s")

    monkeypatch.setattr(clients.CappedKernelClient, "wait_for_ready", silent)
    with Sandbox(Limits()) as sandbox, pytest.raises(HarnessError) as raised:
        KernelSession(sandbox, startup_timeout_s=1.0).start()
    assert len(tried) == 2
    assert f"in the {sandbox.isolation!r} sandbox (started cold)" in raised.value.message
    assert "did not answer kernel_info on its shell channel" in raised.value.message
    assert "then, with a fresh kernel" in raised.value.message


def test_the_runaway_guard_waits_for_a_busy_process_and_stops_a_hung_one():
    def started(code: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    busy = started("import time\nend = time.time() + 3\nwhile time.time() < end: pass\nprint('done')")
    assert finish_trusted(busy, stall_s=2.0).stdout.strip() == "done"  # 3 s of wall time, but working
    hung = started("import time; time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(Stalled, match="used no CPU for 2 s"):
        finish_trusted(hung, stall_s=2.0)
    assert time.monotonic() - start < 10 and hung.poll() is not None
    runaway = started("while True: pass")
    with pytest.raises(Stalled, match="more than 1 s of CPU time"):
        finish_trusted(runaway, stall_s=60.0, max_cpu_s=1.0)
    assert runaway.poll() is not None and cpu_seconds(runaway.pid) == 0.0


def test_a_training_run_the_guard_stops_is_not_scored_and_a_batch_grades_it_again(options, monkeypatch):
    # A guard set so low that the reference model cannot finish: the result is the grader's failure,
    # with no points anywhere, never a partly trained model's score
    from grader.ml import training

    monkeypatch.setattr(training, "max_cpu_seconds", lambda task, setup: 0.0)
    result = grade_safely(SOLUTIONS / "toy_2d.ipynb", assignment("toy-2d"), options, SESSION_WARM)
    assert result.status == ResultStatus.GRADER_ERROR and not result.has_grade
    assert "runaway guard" in result.message and "not your fault" in result.message
    assert result.submission_sha256 == ""  # a batch grades it again
    assert all(c.status == CheckStatus.ERROR and c.score == 0 for c in result.checks)


def test_a_trainer_that_dies_is_the_grader_s_failure(options, monkeypatch):
    from grader.ml import training

    real = training.run_job

    def killed(process, line, **kwargs):
        process.kill()
        return real(process, line, **kwargs)

    monkeypatch.setattr(training, "run_job", killed)
    with pytest.raises(GraderFailure, match="training process failed"):
        grade_submission(SOLUTIONS / "toy_2d.ipynb", assignment("toy-2d"), options, SESSION_WARM)
