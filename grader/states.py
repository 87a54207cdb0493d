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
    ERROR = "error"  # not gradable (unreadable, or the grader could not run it): every check is an error
