"""Several calls in one round trip (CheckContext.call_many) give every call what `call` gives it alone:
its answer or failure, its own time limit, one more try after it stopped the kernel, and no second run of
a function that ran out of time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from conftest import SESSION_WARM, assignment
from grader.checks.context import CallSpec, CheckContext, value_of
from grader.errors import StudentError
from grader.grading.pipeline import _preamble
from grader.intake.notebooks import CodeCell
from grader.kernel.execution import Deadline, NotebookRunner
from grader.kernel.session import KernelSession
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import Limits
from grader.states import StudentErrorKind
from load import MachineLoad

CELL_TIMEOUT_S = 3.0
FUNCTIONS = """
import time
CALLS = []

def add(a, b):
    CALLS.append(("add", a, b))
    return a + b

def slow(seconds):
    CALLS.append(("slow", seconds))
    time.sleep(seconds)
    return seconds

def spin():
    CALLS.append(("spin",))
    while True:
        pass

def fail():
    CALLS.append(("fail",))
    raise ValueError("no")

def crash():
    import os
    CALLS.append(("crash",))
    os._exit(3)

def forge(exchange):
    # the student's code can write into the exchange too: a nonsense progress mark must cost it, not the grader
    import json, os
    for name in os.listdir(exchange):
        mark = os.path.join(exchange, name, "value.json")
        if os.path.exists(mark) and '"call"' in open(mark).read():
            with open(mark, "w") as f:
                f.write(json.dumps({"dict": [[{"str": "call"}, 99], [{"str": "at"}, 9.0], [{"str": "cell_at"}, 1.0]]}))
    while True:
        pass
"""


@pytest.fixture
def ctx() -> Iterator[CheckContext]:
    spec = assignment("gradient-descent")
    image = SESSION_WARM.images.get(("numpy", "matplotlib.pyplot"))
    with Sandbox(Limits(memory_mb=1024), image=image) as sandbox:
        runner = NotebookRunner(KernelSession(sandbox), preamble=_preamble(sandbox, spec),
                                cell_timeout_s=CELL_TIMEOUT_S, deadline=Deadline(120))
        try:
            runner.start()
            report = runner.run_cells([CodeCell(index=0, source=FUNCTIONS)])
            assert report.problems == []
            yield CheckContext(runner=runner, sandbox=sandbox, seed=1, device="cpu")
        finally:
            runner.session.stop()


def made(ctx: CheckContext) -> list[tuple]:
    return [tuple(call) for call in ctx.get("CALLS")]


def test_calls_answer_in_order_in_one_round_trip(ctx):
    cells_before = len(ctx.runner.session.client.nb.cells)
    answers = ctx.call_many([CallSpec("add", (1, 2)), CallSpec("add", (3,), {"b": 4}), CallSpec("fail"),
                             CallSpec("missing")], keep_going=True)
    assert answers[:2] == [3, 7]
    assert answers[2].kind == StudentErrorKind.EXCEPTION and "raised ValueError: no" in answers[2].message
    assert answers[3].kind == StudentErrorKind.MISSING
    assert len(ctx.runner.session.client.nb.cells) == cells_before + 1


def test_without_keep_going_no_call_is_made_after_the_first_failure(ctx):
    answers = ctx.call_many([CallSpec("add", (1, 2)), CallSpec("fail"), CallSpec("add", (5, 6))])
    assert answers[0] == 3 and isinstance(answers[1], StudentError) and len(answers) == 2
    with pytest.raises(StudentError, match="raised ValueError"):
        [value_of(answer) for answer in answers]
    assert made(ctx) == [("add", 1, 2), ("fail",)]


@pytest.mark.parametrize("busy", [False, True], ids=["quiet", "busy"])
def test_an_endless_call_costs_one_time_limit_and_is_not_called_again(ctx, monkeypatch, busy):
    """On a busy machine too: how long the cell waited to start is not time the calls before it took."""
    alone = []
    real = ctx._call
    monkeypatch.setattr(ctx, "_call", lambda spec, **kw: alone.append(spec.function) or real(spec, **kw))
    with MachineLoad(seconds=120, per_core=4, torch_share=0.0) if busy else contextlib.nullcontext():
        answers = ctx.call_many([CallSpec("add", (1, 2)), CallSpec("spin"), CallSpec("add", (2, 2)),
                                 CallSpec("spin")], keep_going=True)
    assert answers[0] == 3 and answers[2] == 4
    assert answers[1].kind == StudentErrorKind.TIMEOUT and "spin did not finish within 3 s" in answers[1].message
    assert answers[3].kind == StudentErrorKind.TIMEOUT and "it was not called again" in answers[3].message
    assert "spin" not in alone, "the endless call ran again alone: a second time limit"


def test_a_call_cut_off_by_the_time_the_calls_before_it_took_runs_again_alone(ctx):
    """2 s + 2 s run past the cell's 3 s: the second call is cut off after about 1 s and runs again alone."""
    answers = ctx.call_many([CallSpec("slow", (2.0,)), CallSpec("slow", (2.0,)), CallSpec("add", (1, 1))])
    assert answers == [2.0, 2.0, 2]
    assert made(ctx) == [("slow", 2.0), ("slow", 2.0), ("slow", 2.0), ("add", 1, 1)]


def test_a_call_that_stops_the_kernel_gets_one_more_try_on_a_fresh_kernel(ctx):
    answers = ctx.call_many([CallSpec("add", (1, 2)), CallSpec("crash"), CallSpec("add", (2, 3))], keep_going=True)
    assert answers[0] == 3 and answers[2] == 5
    assert answers[1].kind == StudentErrorKind.DIED and "crash stopped the Python kernel" in answers[1].message
    assert "exit status 3" in answers[1].message
    assert ctx.runner.session.restarts == 2  # the cell's death, then the call's own second try


def test_a_forged_progress_mark_counts_as_the_whole_limit_used(ctx, monkeypatch):
    """It says that call 99 started 8 s after the cell: the call that was running had its whole limit."""
    alone = []
    real = ctx._call
    monkeypatch.setattr(ctx, "_call", lambda spec, **kw: alone.append(spec.function) or real(spec, **kw))
    answers = ctx.call_many([CallSpec("add", (1, 2)), CallSpec("forge", (str(ctx.sandbox.exchange),)),
                             CallSpec("add", (3, 3))], keep_going=True)
    assert answers[0] == 3 and answers[2] == 6
    assert answers[1].kind == StudentErrorKind.TIMEOUT
    assert "forge" not in alone
