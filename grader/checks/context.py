"""What a check sees: a way to ask the student's kernel for values, and nothing more.

Checks run in the grader's process. They send inputs into the child, get
plain data back (see grader.sandbox.exchange) and compare it there with expected
values the child never sees.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
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
    from grader.ml.training import Trainers, TrainingSetup


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
        if name in self._stuck:
            raise self._stuck[name]
        in_dir = self._input_dir(protocol.to_wire(protocol.Call(list(args), kwargs)))
        try:
            return self._ask("probe", "call", (name, str(in_dir)), what=name, timeout_s=timeout_s)
        except StudentError as exc:
            if exc.kind == StudentErrorKind.TIMEOUT:
                self._stuck[name] = StudentError(f"{exc.message}; it was not called again",
                                                 kind=StudentErrorKind.TIMEOUT)
            raise

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

    def training_setup(self) -> TrainingSetup:
        """How the grader's trainer runs for this submission: its device, threads, memory and seed."""
        from grader.ml.training import training_setup

        assert isinstance(self.sandbox, Sandbox), "the grader trains only in grading, for a sandbox"
        return training_setup(self.sandbox, device=self.device, seed=self.seed)

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
             timeout_s: float | None) -> Any:
        """grader_child.<module>.<function>(namespace, *args, out_dir) in the kernel; its answer, read as data."""
        out_name = self._output_name()
        source = child_call(module, function, *args, str(self.sandbox.exchange / out_name))
        return self._answer(source, out_name, what=what, timeout_s=timeout_s)

    def _answer(self, source: str, out_name: str, *, what: str, timeout_s: float | None) -> Any:
        if self._runner.deadline.expired():
            raise StudentError(f"{what} was not checked: the submission's time budget was used up",
                               kind=StudentErrorKind.BUDGET)
        run, timeout = self._run_probe(source, what, timeout_s)
        if run.status == RunStatus.DIED and self._runner.ensure_alive():
            # Once more on a fresh kernel: the death may come from what an earlier cell left behind.
            run, timeout = self._run_probe(source, what, timeout_s)
        if run.status == RunStatus.TIMEOUT:
            raise StudentError(f"{what} did not finish within {timeout:.0f} s and was stopped "
                               "(an endless loop?)", kind=StudentErrorKind.TIMEOUT)
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
