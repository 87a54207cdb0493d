"""What a check sees: a way to ask the student's kernel for values, and nothing more.

Checks run in the grader's process. They send inputs into the child, get
plain data back (see grader.sandbox.exchange) and compare it there with expected
values the child never sees.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from grader.child import protocol
from grader.errors import StudentError
from grader.kernel.execution import NotebookRunner, child_call
from grader.sandbox.exchange import ExchangeError, read_value, write_value
from grader.sandbox.jail import Sandbox
from grader.states import RunStatus, StudentErrorKind

if TYPE_CHECKING:
    from grader.ml.analysis import Analysis
    from grader.ml.graph import ModelGraph
    from grader.ml.task import ModelTask
    from grader.ml.training import Trainers, TrainingSetup

# A call that a cell of several calls cut off counts as one that ran out of time when the calls before it
# took less than this (it had about the whole limit: one endless loop costs one time limit); after calls
# that took longer, it runs again alone with its whole limit.
CUT_OFF_SLACK_S = 0.5


@dataclass(frozen=True)
class CallSpec:
    """function(*args, **kwargs) in the student's namespace."""

    function: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


class AnswerExchange(Protocol):
    """What a context needs of its sandbox to pass values: the exchange directory (a Sandbox's; in a student's
    own kernel, grader.student's private temporary one)."""

    exchange: Path
    exchange_fd: int

    def new_output_dir(self, name: str) -> Path: ...


class CheckContext:
    def __init__(self, *, runner: NotebookRunner | None, sandbox: Sandbox | AnswerExchange, seed: int, device: str,
                 resources: Any = None, cell_problems: int = 0, trainers: Trainers | None = None):
        self.runner = runner
        self.trainers = trainers  # the grading process's trainers, ready before they are needed (None: start one)
        self.sandbox = sandbox
        self.seed = seed
        self.device = device
        self.resources = resources
        self._cell_problems = cell_problems
        self._memo: dict[str, Any] = {}
        self._stuck: dict[str, StudentError] = {}  # functions that ran out of time: not called again
        self._counter = 0
        self.timings: dict[str, float] = {}  # e.g. train_s, added to result.json's timings

    # -- values from the child ------------------------------------------------

    def call(self, name: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """`name(*args, **kwargs)` evaluated in the student's kernel.

        A function that once ran out of time is not called again: every later call fails at once
        with the same reason, so one endless loop costs one time limit, not one per check.
        """
        return self._call(CallSpec(name, args, kwargs), timeout_s=timeout_s)

    def call_many(self, calls: Sequence[CallSpec], *, keep_going: bool = False,
                  timeout_s: float | None = None) -> list[Any]:
        """The answers of several calls, in order: each the value, or the StudentError the call failed with.

        They run in one cell, one round trip to the kernel instead of one each, and each keeps what `call`
        gives it: its own time limit (a call that the cell's limit cut off because the calls before it took
        time runs again alone), one more try on a fresh kernel after it stopped the kernel, and no call to a
        function that ran out of time. Without `keep_going`, no call is made after the first that fails:
        the list ends with that failure.
        """
        answers: list[Any] = []
        while len(answers) < len(calls):
            rest = calls[len(answers):]
            unstuck = next((i for i, c in enumerate(rest) if c.function in self._stuck), len(rest))
            if unstuck == 0:
                answers.append(self._stuck[rest[0].function])
            elif unstuck == 1:
                answers.append(_value_or_error(self._call, rest[0], timeout_s=timeout_s))
            else:
                answers.extend(self._call_in_one_cell(rest[:unstuck], keep_going=keep_going, timeout_s=timeout_s))
            if not keep_going and isinstance(answers[-1], StudentError):
                break
        return answers

    def _call(self, spec: CallSpec, *, timeout_s: float | None, stopped_kernel: bool = False) -> Any:
        """`call`; `stopped_kernel`: the kernel already stopped once during this call, in a cell of several."""
        name = spec.function
        if name in self._stuck:
            raise self._stuck[name]
        in_dir = self._input_dir(protocol.to_wire(protocol.Call(list(spec.args), dict(spec.kwargs))))
        try:
            return self._ask("probe", "call", (name, str(in_dir)), what=name, timeout_s=timeout_s,
                             stopped_kernel=stopped_kernel)
        except StudentError as exc:
            if exc.kind == StudentErrorKind.TIMEOUT:
                self._stuck[name] = StudentError(f"{exc.message}; it was not called again",
                                                 kind=StudentErrorKind.TIMEOUT)
            raise

    def _call_in_one_cell(self, calls: Sequence[CallSpec], *, keep_going: bool,
                          timeout_s: float | None) -> list[Any]:
        """The answers of a first part of `calls` (at least the first call's), from one cell.

        The cell has one call's time limit. What the calls answered before it ended stands; the call it
        did not finish gets what `call` would have given it, and the rest are left to the caller."""
        first = calls[0].function
        if self._runner.deadline.expired():
            return [_value_or_error(self._call, calls[0], timeout_s=timeout_s)]  # the budget's message
        request = protocol.Calls(names=[c.function for c in calls], keep_going=keep_going,
                                 calls=[protocol.to_wire(protocol.Call(list(c.args), dict(c.kwargs))) for c in calls])
        in_dir = self._input_dir(protocol.to_wire(request))
        progress, outs = self._output_name(), [self._output_name() for _ in calls]
        source = child_call("probe", "calls", str(in_dir),
                            *(str(self.sandbox.exchange / name) for name in (progress, *outs)))
        try:
            run, limit = self._run_probe(source, first, timeout_s)
        except StudentError as exc:  # the kernel had died and could not be restarted
            return [exc]
        answers: list[Any] = []
        for out_name, spec in zip(outs, calls, strict=True):
            if not self._answered(out_name):
                break
            answers.append(_value_or_error(self._read_answer, out_name, spec.function))
            if isinstance(answers[-1], StudentError) and not keep_going:
                return answers
        if len(answers) == len(calls):
            return answers
        cut_off = calls[len(answers)]
        if run.status == RunStatus.TIMEOUT:
            before = self._time_taken_before(progress, len(answers)) if answers else 0.0
            if before < CUT_OFF_SLACK_S or self._runner.deadline.expired():
                error = _timed_out(cut_off.function, limit)
                self._stuck[cut_off.function] = StudentError(f"{error.message}; it was not called again",
                                                             kind=StudentErrorKind.TIMEOUT)
                return [*answers, error]
            return [*answers, _value_or_error(self._call, cut_off, timeout_s=timeout_s)]
        if run.status == RunStatus.DIED:
            if not self._runner.ensure_alive():
                return [*answers, StudentError(f"{cut_off.function} stopped the Python kernel: {run.error_value}",
                                               kind=StudentErrorKind.DIED)]
            return [*answers, _value_or_error(self._call, cut_off, timeout_s=timeout_s, stopped_kernel=True)]
        # the cell raised (the student's own KeyboardInterrupt, a broken helper) or left an answer out: that
        # call alone says which
        return [*answers, _value_or_error(self._call, cut_off, timeout_s=timeout_s)]

    def _answered(self, out_name: str) -> bool:
        try:
            os.stat(f"{out_name}/value.json", dir_fd=self.sandbox.exchange_fd, follow_symlinks=False)
        except OSError:
            return False
        return True

    def _time_taken_before(self, progress: str, index: int) -> float:
        """How long the calls before call `index` of a cell took, by the child's clock (not the time the cell
        waited to start on a busy machine), from the mark it leaves before each call; infinite when call
        `index` never started. A mark that cannot be read or makes no sense (the student's code can write
        it) counts as no time: the call had its whole limit."""
        try:
            mark = read_value(self.sandbox.exchange_fd, progress)
        except ExchangeError:
            return 0.0
        if not isinstance(mark, dict) or type(mark.get("call")) is not int or mark["call"] > index or \
                not all(isinstance(mark.get(key), float) for key in ("at", "cell_at")):
            return 0.0
        if mark["call"] < index:
            return math.inf
        return max(mark["at"] - mark["cell_at"], 0.0)

    def get(self, name: str) -> Any:
        """The value of a module-level name in the student's notebook."""
        return self._ask("probe", "get", (name,), what=name, timeout_s=None)

    def set(self, name: str, value: Any) -> None:
        """Bind a module-level name in the student's notebook to `value` (data only)."""
        in_dir = self._input_dir(value)
        self._ask("probe", "assign", (name, str(in_dir)), what=name, timeout_s=None)

    def restart_kernel(self) -> None:
        """A fresh kernel that has run the notebook's cells again: nothing of the old one's memory is left
        (to prove that a value comes from a file, not from the process that wrote it)."""
        self._runner.session.stop()
        self._runner.report.fresh_kernels += 1
        if not self._runner.ensure_alive():
            raise StudentError("the notebook could not be run again in a fresh kernel", kind=StudentErrorKind.DIED)

    def run_child(self, module: str, function: str, request: Any, *, what: str,
                  timeout_s: float | None = None) -> Any:
        """Run grader_child.<module>.<function>(namespace, in_dir, out_dir) in the kernel, with a request
        from grader.child.protocol."""
        in_dir = self._input_dir(protocol.to_wire(request))
        return self._ask(module, function, (str(in_dir),), what=what, timeout_s=timeout_s)

    def analyze_model(self, graph: ModelGraph, task: ModelTask,
                      probes: dict[str, np.ndarray]) -> tuple[str, Analysis]:
        """Why the grader cannot rebuild the student's model ("" when it can), and what its rebuild does on
        the probe inputs: from a trainer, which imports torch anyway (the grader's process never does)."""
        from grader.ml.training import analyze_in_trainer

        return analyze_in_trainer(graph, task, probes, self.training_setup(), self.trainers)

    def training_setup(self) -> TrainingSetup:
        """How the grader's trainer runs for this submission: its device, threads, memory and seed."""
        from grader.ml.training import training_setup

        assert isinstance(self.sandbox, Sandbox), "the grader trains only in grading, for a sandbox"
        return training_setup(self.sandbox.limits, threads=self.sandbox.threads, device=self.device, seed=self.seed)

    @property
    def _runner(self) -> NotebookRunner:
        assert self.runner is not None, "a context without a runner (LocalContext) overrides what runs code"
        return self.runner

    def shared_file(self, name: str) -> Path:
        """A path in the exchange directory the child can read (for large inputs)."""
        return self.sandbox.exchange / name

    def _input_dir(self, value: Any) -> Path:
        self._counter += 1
        in_dir = self.sandbox.exchange / f"in-{self._counter}"
        in_dir.mkdir(mode=0o755)
        write_value(value, in_dir)
        return in_dir

    def _output_name(self) -> str:
        self._counter += 1
        name = f"out-{self._counter}"
        self.sandbox.new_output_dir(name)
        return name

    def _ask(self, module: str, function: str, args: tuple[str, ...], *, what: str,
             timeout_s: float | None, stopped_kernel: bool = False) -> Any:
        """grader_child.<module>.<function>(namespace, *args, out_dir) in the kernel; its answer, read as data
        (`stopped_kernel`: see `_call`)."""
        out_name = self._output_name()
        source = child_call(module, function, *args, str(self.sandbox.exchange / out_name))
        return self._answer(source, out_name, what=what, timeout_s=timeout_s, stopped_kernel=stopped_kernel)

    def _answer(self, source: str, out_name: str, *, what: str, timeout_s: float | None,
                stopped_kernel: bool = False) -> Any:
        if self._runner.deadline.expired():
            raise StudentError(f"{what} was not checked: the submission's time budget was used up",
                               kind=StudentErrorKind.BUDGET)
        run, timeout = self._run_probe(source, what, timeout_s)
        if run.status == RunStatus.DIED and not stopped_kernel and self._runner.ensure_alive():
            # Once more on a fresh kernel: the death may come from what an earlier cell left behind.
            run, timeout = self._run_probe(source, what, timeout_s)
        if run.status == RunStatus.TIMEOUT:
            raise _timed_out(what, timeout)
        if run.status == RunStatus.DIED:
            raise StudentError(f"{what} stopped the Python kernel: {run.error_value}", kind=StudentErrorKind.DIED)
        if run.status == RunStatus.ERROR:
            raise StudentError(f"the grader could not evaluate {what}: {run.error_name}: {run.error_value} "
                               "(did the notebook change the grader's helpers?)",
                               kind=StudentErrorKind.BROKEN, traceback=run.traceback)
        return self._read_answer(out_name, what)

    def _read_answer(self, out_name: str, what: str) -> Any:
        try:
            answer = read_value(self.sandbox.exchange_fd, out_name)
        except ExchangeError as exc:
            raise StudentError(f"the grader could not read the answer for {what}: {exc}",
                               kind=StudentErrorKind.BROKEN) from None
        if not isinstance(answer, dict) or not ({"ok"} == set(answer) or {"error"} == set(answer)):
            raise StudentError(f"the grader got a malformed answer for {what}", kind=StudentErrorKind.BROKEN)
        if "error" in answer:
            raise self._error_from(answer["error"], what)
        return answer["ok"]

    def _readable(self, traceback: list[str]) -> list[str]:
        return self._runner.readable(traceback)

    def _run_probe(self, source: str, what: str, timeout_s: float | None):
        if not self._runner.ensure_alive():
            raise StudentError(f"{what} could not be checked: the kernel had died and could not be "
                               "restarted", kind=StudentErrorKind.DIED)
        timeout = self._runner.timeout_for(timeout_s)
        return self._runner.session.run(source, timeout_s=timeout), timeout

    def _error_from(self, error: Any, what: str) -> StudentError:
        error = error if isinstance(error, dict) else {}
        kind = str(error.get("type", "Exception"))
        message = str(error.get("message", ""))
        traceback = self._readable([str(line) for line in error.get("traceback", [])][-10:])
        if kind == "Missing":
            hint = (" (a cell that raised an error may have stopped it from being defined)"
                    if self._cell_problems else "")
            return StudentError(f"{what} is not defined: define it in your notebook{hint}",
                                kind=StudentErrorKind.MISSING)
        if kind == "NotCallable":
            return StudentError(message, kind=StudentErrorKind.MISSING)
        if kind == "NotImplementedError":
            return StudentError(f"{what} is not implemented yet: it still raises NotImplementedError",
                                kind=StudentErrorKind.NOT_IMPLEMENTED, traceback=traceback)
        if kind == "KeyboardInterrupt":
            return StudentError(f"{what} was interrupted (it ran too long)", kind=StudentErrorKind.TIMEOUT)
        where = _last_line(traceback)
        return StudentError(f"{what} raised {kind}: {message}" + (f" ({where})" if where else ""),
                            kind=StudentErrorKind.EXCEPTION, traceback=traceback)

    # -- helpers for checks ----------------------------------------------------

    def rng(self, key: str) -> np.random.Generator:
        """A generator seeded by the assignment's seed and `key`: the same for every grading."""
        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute once per submission (a training run several checks share).

        A StudentError is remembered too, so every check that depends on a
        failed step reports it without running the step again.
        """
        return remembered(self._memo, key, compute)


def value_of(answer: Any) -> Any:
    """One of `CheckContext.call_many`'s answers as `call` gives it: the value, or its failure raised."""
    if isinstance(answer, StudentError):
        raise answer
    return answer


def _timed_out(what: str, seconds: float) -> StudentError:
    return StudentError(f"{what} did not finish within {seconds:.0f} s and was stopped (an endless loop?)",
                        kind=StudentErrorKind.TIMEOUT)


def _value_or_error(compute: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """compute(*args, **kwargs)'s value, or the StudentError it raised."""
    try:
        return compute(*args, **kwargs)
    except StudentError as exc:
        return exc


def _last_line(traceback: list[str]) -> str:
    """'cell 4, line 3, in linear_grad': where the student's code raised."""
    for block in reversed(traceback):
        first = block.strip().splitlines()[0] if block.strip() else ""
        if first.startswith(("cell ", "File ")):
            return first
    return ""


def remembered(memo: dict[str, tuple[str, Any]], key: str, compute: Callable[[], Any]) -> Any:
    """`compute()` once per key in `memo`, its StudentError remembered as well as its value."""
    if key not in memo:
        try:
            memo[key] = ("ok", compute())
        except StudentError as exc:
            memo[key] = ("error", exc)
    status, value = memo[key]
    if status == "error":
        raise value
    return value
