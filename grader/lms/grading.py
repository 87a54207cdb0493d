"""What grading inside an LMS container takes, whichever the LMS: close its tree, grade, keep records.

1. The LMS's tree (/autograder, /grade) is made root-only (0700, owned by root) when the
   grader is root: without namespaces, file permissions are the only thing between the kernel
   (the unprivileged sandbox user) and the spec, the data, the student's upload and the results.
   The sandbox then checks that it holds before it starts anything.
2. The upload's one notebook is found; a missing or second notebook becomes a zero result that says
   so, and so does a notebook of another assignment (the pipeline tells that from its metadata).
3. The notebook goes through `grader.grading.pipeline.grade_safely`. A failure of the grader itself
   (HarnessError: no sandbox, missing data; a grader-error result: a crash, a trainer that died)
   says it is not the student's fault, and `fault` says the LMS should not count it.
4. result.json and feedback.html are written for staff (`grader.reports.outputs`), with what the
   entry point did recorded as `environment.lms`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.course.assignment import Assignment, find_assignment, load_assignments
from grader.errors import GraderError, UsageError
from grader.files import write_atomically
from grader.grading.options import GradeOptions
from grader.grading.pipeline import grade_safely, grader_failure, unreadable_result
from grader.grading.warm import Warm
from grader.lms.submission import find_notebook
from grader.reports.outputs import write_outputs
from grader.results import GradeResult
from grader.states import ResultStatus

NOT_YOUR_FAULT = ("The autograder could not grade this submission. This is not your fault and says nothing "
                  "about your work: tell your course staff, who can see why.")


@dataclass(frozen=True)
class LmsGrade:
    """One upload, graded (or not) inside an LMS container."""

    result: GradeResult | None  # None: not even the assignment could be loaded
    fault: str = ""  # the grader's own failure ("" when the grading stands, whatever its score)
    # what is wrong with the upload itself (no notebook, two, not a notebook, another assignment's), in the
    # student's words: graded 0 on Gradescope, not gradable on PrairieLearn ("" for a notebook graded)
    bad_upload: str = ""


def close_tree(root: Path) -> bool:
    """Make the LMS's tree root-only when the grader is root; whether it did."""
    if os.geteuid() != 0:
        return False
    os.chown(root, 0, 0)
    os.chmod(root, 0o700)
    return True


def pick_assignment(course_root: Path, assignment_id: str | None) -> Assignment:
    """The named assignment, else the only one the course holds (an LMS bundle ships one spec)."""
    if assignment_id:
        return find_assignment(course_root, assignment_id)
    found = load_assignments(course_root)
    if len(found) != 1:
        raise UsageError(f"the course at {course_root} holds {len(found)} assignment specs "
                         f"({', '.join(sorted(found)) or 'none'}); name one with --assignment")
    return next(iter(found.values()))


def grade_upload(upload_dir: Path, *, assignment_id: str | None, options: GradeOptions, out_dir: Path,
                 lms: dict[str, Any], audience: str = "student",
                 student: dict[str, Any] | None = None) -> LmsGrade:
    """Grade the one notebook under `upload_dir`; write result.json and feedback into `out_dir`."""
    try:
        assignment = pick_assignment(options.course_root, assignment_id)
    except GraderError as exc:
        return LmsGrade(None, fault=f"{NOT_YOUR_FAULT} (The grader's configuration: {exc.message})")
    with tempfile.TemporaryDirectory(prefix="grader-cache-") as cache:  # 0700, root's: the kernel cannot read it
        options = dataclasses.replace(options, cache_dir=Path(cache))
        graded = _grade(upload_dir, assignment, options)
    assert graded.result is not None, "an upload graded against an assignment always has a result"
    result = dataclasses.replace(graded.result, environment={**graded.result.environment, "lms": lms},
                                 student=student or graded.result.student)
    try:
        write_outputs(result, out_dir, audience=audience)
    except OSError as exc:  # staff's copy only: the LMS's own results file must still be written
        print(f"grader: warning: result.json and feedback not written to {out_dir}: {exc}", file=sys.stderr)
    return dataclasses.replace(graded, result=result)


def _grade(upload_dir: Path, assignment: Assignment, options: GradeOptions) -> LmsGrade:
    upload = find_notebook(upload_dir, expected=assignment.notebook)
    if upload.notebook is None:
        return LmsGrade(unreadable_result(upload_dir / assignment.notebook, assignment, upload.problem, options),
                        bad_upload=upload.problem)
    notebook = upload.notebook
    try:
        with Warm() as warm:  # one submission per run: nothing outlives it
            result = grade_safely(notebook, assignment, options, warm)
    except GraderError as exc:  # the grader cannot work here: every submission would fail the same way
        result = grader_failure(notebook, assignment, options, exc.message)
    if result.status == ResultStatus.GRADER_ERROR:  # its message says it is not the student's fault
        return LmsGrade(result, fault=result.message)
    if result.status == ResultStatus.ERROR:  # not a notebook the grader can read, or another assignment's
        return LmsGrade(result, bad_upload=result.message)
    return LmsGrade(result)


def remove_stale(path: Path) -> None:
    """Remove a results file left from before, so that a run that dies shows as such (a file or a tree)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write an LMS's results file atomically (the LMS reads the old file or the new one, never half)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(document, indent=1, allow_nan=False) + "\n").encode())
