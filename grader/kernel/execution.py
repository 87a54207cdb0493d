"""Run a submission's cells in a kernel session, within the submission's time budget.

A cell that raises, times out or kills the kernel is recorded as a
`CellProblem` and the notebook goes on. If the kernel dies, a new one is
started and the cells that ran before are replayed (without the cell that
killed it), so the submission is graded on everything that could run.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field

from grader.errors import HarnessError
from grader.intake.notebooks import CodeCell
from grader.kernel.session import CellRun, KernelSession
from grader.results import CellProblem
from grader.sandbox.limits import Limits
from grader.states import CellProblemKind, RunStatus

MAX_RESTARTS = 3
TRACEBACK_LINES = 30


@dataclass
class ExecutionReport:
    problems: list[CellProblem] = field(default_factory=list)
    cells_run: int = 0
    cells_skipped: list[int] = field(default_factory=list)
    restarts: int = 0  # every new kernel after the first
    fresh_kernels: int = 0  # of them, the ones a check asked for (a value must come from a file, not memory)
    elapsed_s: float = 0.0
    budget_exhausted: bool = False

    def to_dict(self) -> dict:
        return {
            "cells_run": self.cells_run,
            "demo_cells_skipped": [i + 1 for i in self.cells_skipped],
            "kernel_restarts": self.restarts - self.fresh_kernels,  # after the kernel stopped: a problem
            "fresh_kernels": self.fresh_kernels,
            "budget_exhausted": self.budget_exhausted,
            "problems": [p.to_dict() for p in self.problems],
        }


class Deadline:
    def __init__(self, total_s: float):
        self.end = time.monotonic() + total_s

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0


class NotebookRunner:
    """Owns a kernel session: the preamble, the student's cells, and replay after a death."""

    def __init__(self, session: KernelSession, *, preamble: str, cell_timeout_s: float, deadline: Deadline):
        self.session = session
        self.preamble = preamble
        self.cell_timeout_s = cell_timeout_s
        self.deadline = deadline
        self.report = ExecutionReport()
        self._replayable: list[CodeCell] = []
        self._cell_of_count: dict[int, str] = {}  # the kernel's In[N] -> "cell 5"

    def _run_cell(self, cell: CodeCell) -> CellRun:
        run = self.session.run(cell.source, timeout_s=self.timeout_for())
        if run.execution_count is not None:
            self._cell_of_count[run.execution_count] = f"cell {cell.index + 1}"
        return run

    def readable(self, traceback: list[str]) -> list[str]:
        """A traceback in the student's terms: their cells by number, no library frames."""
        return readable_traceback(traceback, self._cell_of_count)

    def timeout_for(self, requested: float | None = None) -> float:
        return min(requested or self.cell_timeout_s, self.deadline.remaining())

    def start(self) -> None:
        self.session.start()
        run = self._run_preamble()
        if not run.ok:
            raise HarnessError(f"the grader's set-up code failed in the kernel: {run.error_name} {run.error_value}")

    def _run_preamble(self) -> CellRun:
        return self.session.run(self.preamble, timeout_s=max(30.0, self.cell_timeout_s))

    def run_cells(self, cells: list[CodeCell]) -> ExecutionReport:
        start = time.monotonic()
        for cell in cells:
            if self.deadline.expired():
                self.report.budget_exhausted = True
                self.report.problems.append(CellProblem(
                    cell_index=cell.index, kind=CellProblemKind.SKIPPED, source=cell.source,
                    message=f"{cell.label} was not run: the submission's time budget was used up"))
                continue
            if not self.ensure_alive():
                self.report.problems.append(CellProblem(
                    cell_index=cell.index, kind=CellProblemKind.SKIPPED, source=cell.source,
                    message=f"{cell.label} was not run: the kernel could not be restarted"))
                continue
            run = self._run_cell(cell)
            self.report.cells_run += 1
            problem = problem_from_run(cell, run, self.cell_timeout_s, self.readable,
                                       limits=self.session.sandbox.limits)
            if problem is not None:
                self.report.problems.append(problem)
            if run.status == RunStatus.ERROR and run.error_name == "MemoryError":
                # what the cell allocated before failing may still be held: start afresh without it
                self.session.stop()
            elif run.status in (RunStatus.OK, RunStatus.ERROR):
                self._replayable.append(cell)
        self.report.elapsed_s = time.monotonic() - start
        return self.report

    def ensure_alive(self) -> bool:
        """Restart a dead kernel and replay what had run; False if that is not possible."""
        if self.session.alive:
            return True
        if self.session.restarts >= MAX_RESTARTS or self.deadline.expired():
            return False
        try:
            self.session.restart()
        except HarnessError:
            return False
        self.report.restarts = self.session.restarts
        if not self._run_preamble().ok:  # e.g. what the last kernel left behind still hogs the machine
            self.session.stop()
            return False
        self._cell_of_count.clear()
        for cell in self._replayable:
            if self.deadline.expired():
                return False
            run = self._run_cell(cell)
            if run.status in (RunStatus.TIMEOUT, RunStatus.DIED):
                return False
        return True


def problem_from_run(cell: CodeCell, run: CellRun, cell_timeout_s: float,
                     readable=lambda tb: tb, limits: Limits | None = None) -> CellProblem | None:
    if run.status == RunStatus.OK:
        return None
    if run.status == RunStatus.TIMEOUT:
        return CellProblem(cell_index=cell.index, kind=CellProblemKind.TIMEOUT, source=cell.source,
                           message=f"{cell.label} ran longer than {cell_timeout_s:g} s and was stopped "
                                   f"({run.error_value}); cells that depend on it may fail")
    if run.status == RunStatus.DIED:
        return CellProblem(cell_index=cell.index, kind=CellProblemKind.KERNEL_DIED, source=cell.source,
                           message=f"{cell.label} stopped the Python kernel: {run.error_value}; "
                                   "the grader restarted it without this cell")
    restarted = ("; the grader restarted the kernel without this cell" if run.error_name == "MemoryError" else "")
    return CellProblem(cell_index=cell.index, kind=CellProblemKind.EXCEPTION, source=cell.source,
                       error_name=run.error_name,
                       message=f"{cell.label} raised {run.error_name}: {_one_line(run.error_value)}{restarted}"
                               f"{_space_hint(run, limits)}",
                       traceback=readable(run.traceback)[-TRACEBACK_LINES:])


_CELL_REFERENCE = re.compile(r"Cell In\[(\d+)\], line (\d+)")
_LIBRARY_ROOTS = (sys.prefix, sys.base_prefix)


def readable_traceback(blocks: list[str], cell_of_count: dict[int, str]) -> list[str]:
    kept = []
    for block in blocks:
        head = block.strip()
        if not head or set(head) <= {"-"} or head.endswith("Traceback (most recent call last)"):
            continue  # IPython's ruler and header: the message already names the error
        if head.startswith("File "):
            path = head[5:].split(":", 1)[0].split(",", 1)[0].strip('"')
            if path.startswith(_LIBRARY_ROOTS) or "site-packages" in path or "grader_child" in path:
                continue
        kept.append(_CELL_REFERENCE.sub(
            lambda m: f"{cell_of_count.get(int(m.group(1)), 'a grader cell')}, line {m.group(2)}", block))
    return kept


def _space_hint(run: CellRun, limits: Limits | None) -> str:
    """Why a write failed, when it hit the sandbox's space limits."""
    if limits is None or not any(text in run.error_value for text in ("No space left", "File too large",
                                                                     "Disk quota")):
        return ""
    return (f" (the grader's sandbox allows {limits.disk_mb} MB in the working directory, {limits.tmp_mb} MB "
            f"in /tmp and files of at most {limits.max_file_mb} MB)")


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def child_call(module: str, function: str, *args: object) -> str:
    """Source for a probe cell: call grader_child.<module>.<function>(globals(), *args)."""
    if not all(isinstance(a, (str, int, float)) for a in args):
        raise TypeError("probe arguments must be strings or numbers")
    rendered = ", ".join(repr(a) for a in args)
    return f'__import__("grader_child.{module}").{module}.{function}(globals(), {rendered})'
