"""The grader's own errors: each carries the one line a user should read."""

from __future__ import annotations

from grader.states import StudentErrorKind


class GraderError(Exception):
    """A failure the command line reports as one clear line and an exit code."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(GraderError):
    """The command was called wrongly (bad flag, unknown assignment, missing file)."""

    exit_code = 2


class HarnessError(GraderError):
    """The grader itself could not work (no kernel, broken install)."""

    exit_code = 3


class NotebookError(Exception):
    """A submission is not a gradable notebook; the message names the file and why.

    Not a GraderError: a bad submission is graded (zero, with this message),
    it does not stop the grader.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class GraderFailure(Exception):
    """The grader could not finish grading one submission (its trainer died, stalled or ran out of
    memory): not the student's fault, so never a score. The submission's result says so, and a batch
    grades it again on its next run; unlike a HarnessError, the next submission may well succeed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class StudentError(Exception):
    """The student's code could not give a value: missing, raising, hanging, crashing."""

    def __init__(self, message: str, *, kind: StudentErrorKind, traceback: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.traceback = traceback or []
