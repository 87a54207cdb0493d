"""The states a kernel run, a cell, a check and a result can be in, and the kinds of a student's
failure, in one place.

They are StrEnums: each member is its string, so result.json, the reports and
results read back from disk see the same text as before, while a misspelt
state in the grader's own code is an AttributeError instead of a state that
nothing handles.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """How one cell (or one of the grader's probes) ended in the kernel."""

    OK = "ok"
    ERROR = "error"  # the code raised; the kernel lives on
    TIMEOUT = "timeout"  # interrupted, or killed when it would not stop
    DIED = "died"  # the kernel is gone (os._exit, a crash, out of memory)


class CheckStatus(StrEnum):
    """A check's verdict in result.json."""

    PASSED = "passed"
    FAILED = "failed"  # some or none of its points
    ERROR = "error"  # it could not be evaluated (a timeout, a dead kernel, a broken notebook)
    SKIPPED = "skipped"  # it did not apply


class ResultStatus(StrEnum):
    """A submission's result in result.json."""

    GRADED = "graded"
    ERROR = "error"  # not gradable: the submission is unreadable, or not this assignment's (the student's problem)
    # the grader could not finish (its trainer died or stalled, it crashed, no kernel would start): not the
    # student's fault and never a grade; LMSs record no score, exports leave the cell empty, a batch grades
    # it again on its next run
    GRADER_ERROR = "grader-error"


class CellProblemKind(StrEnum):
    """What went wrong in one cell of the student's notebook (result.json's cell_problems[].kind)."""

    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    KERNEL_DIED = "kernel-died"
    SKIPPED = "skipped"  # a cell the grader does not run (a shell escape, a magic that reaches outside)


class StudentErrorKind(StrEnum):
    """Why the student's code gave no value for a check (grader.errors.StudentError's kind)."""

    MISSING = "missing"  # not defined, or not callable
    EXCEPTION = "exception"  # it raised
    NOT_IMPLEMENTED = "not-implemented"  # it still raises the template's NotImplementedError
    BROKEN = "broken"  # it answered, but not with anything the grader can read
    TIMEOUT = "timeout"  # it did not return in time
    DIED = "died"  # it stopped the kernel
    BUDGET = "budget"  # it ran past the notebook's total time


# the kinds that make a check's status "error" (it could not be evaluated) rather than "failed"
LIMIT_KINDS = frozenset({StudentErrorKind.TIMEOUT, StudentErrorKind.DIED, StudentErrorKind.BUDGET})
