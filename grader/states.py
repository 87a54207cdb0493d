"""The states a kernel run, a check and a result can be in, in one place.

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
