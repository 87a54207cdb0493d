"""Grade a class: many submissions, in parallel, resumably, one failure never stopping the rest.

Each student's result.json and feedback.html go to OUT/<student>/. A result
is written atomically the moment it exists, so a killed batch loses nothing:
run the same command again and it grades only what is missing or changed
(compared by the notebook's SHA-256). summary.html is rebuilt at the end.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from grader.assignment import Assignment, find_assignment
from grader.errors import GraderError
from grader.intake import BatchItem, Intake
from grader.notebook_io import sha256_of
from grader.pipeline import GradeOptions, grade_submission, zero_result
from grader.reports.html import SummaryEntry, write_class_summary, write_feedback
from grader.results import GradeResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    student: str
    result: GradeResult
    reused: bool  # an earlier run's result for the same notebook


def result_path(out_dir: Path, student: str) -> Path:
    return out_dir / student / "result.json"


def previous_result(out_dir: Path, item: BatchItem, assignment_id: str) -> GradeResult | None:
    """The result of an earlier run for exactly this notebook, if there is one."""
    path = result_path(out_dir, item.student)
    try:
        result = GradeResult.read(path)
        digest = sha256_of(item.notebook)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if result.assignment == assignment_id and result.submission_sha256 == digest:
        return result
    return None


def grade_and_write(item: BatchItem, assignment: Assignment, options: GradeOptions, out_dir: Path,
                    staff: bool = False) -> GradeResult:
    """Grade one student and write their files; anything unexpected becomes an error result."""
    try:
        result = grade_submission(item.notebook, assignment, options)
    except GraderError:
        raise  # the grader cannot work (no kernel, no data): stopping beats failing everyone
    except Exception as exc:  # noqa: BLE001 - one submission must not stop the batch
        log.error("grading %s crashed:\n%s", item.student, traceback.format_exc())
        result = crashed_result(item, assignment, options, f"the grader crashed on this submission "
                                                           f"({type(exc).__name__}: {exc}); tell the course staff")
    write_student(result, out_dir / item.student, staff=staff)
    return result


def write_student(result: GradeResult, student_dir: Path, *, staff: bool = False) -> None:
    """result.json and feedback.html; with `staff`, also feedback-staff.html (hidden checks in full)."""
    result.write(student_dir / "result.json")
    write_feedback(result, student_dir)
    if staff:
        write_feedback(result, student_dir, audience="staff")


def crashed_result(item: BatchItem, assignment: Assignment, options: GradeOptions, message: str) -> GradeResult:
    return zero_result(item.notebook, assignment, options, message=message, check_message=message,
                       check_status="error")


# A worker process keeps its assignments loaded (and their datasets cached) between submissions.
_WORKER_ASSIGNMENTS: dict[str, Assignment] = {}


def _worker_grade(item: BatchItem, assignment_id: str, options: GradeOptions, out_dir: Path,
                  staff: bool) -> GradeResult:
    if assignment_id not in _WORKER_ASSIGNMENTS:
        _WORKER_ASSIGNMENTS[assignment_id] = find_assignment(options.course_root, assignment_id)
    return grade_and_write(item, _WORKER_ASSIGNMENTS[assignment_id], options, out_dir, staff)


def grade_batch(intake: Intake, assignment: Assignment, options: GradeOptions, out_dir: Path, *, jobs: int = 1,
                staff: bool = False,
                on_done: Callable[[Outcome, int, int], None] = lambda *_: None) -> list[Outcome]:
    """Grade every item not already graded; return every item's outcome in input order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Outcome] = {}
    pending: list[BatchItem] = []
    for item in intake.items:
        previous = previous_result(out_dir, item, assignment.id)
        if previous is not None:
            outcomes[item.student] = Outcome(item.student, previous, reused=True)
        else:
            pending.append(item)
    total = len(intake.items)
    for count, outcome in enumerate(outcomes.values(), start=1):
        on_done(outcome, count, total)
    # Each child kernel gets its share of the cores, so parallel jobs do not fight over threads.
    options = replace(options, threads=max(1, (os.cpu_count() or 1) // max(1, jobs)))

    def record(item: BatchItem, result: GradeResult) -> None:
        outcomes[item.student] = Outcome(item.student, result, reused=False)
        on_done(outcomes[item.student], len(outcomes), total)

    if jobs <= 1:
        for item in pending:
            record(item, grade_and_write(item, assignment, options, out_dir, staff))
    else:
        _run_parallel(pending, assignment, options, out_dir, jobs, staff, record)
    ordered = [outcomes[item.student] for item in intake.items if item.student in outcomes]
    write_summary(ordered, out_dir, title=f"{assignment.title} ({assignment.id})")
    return ordered


def _run_parallel(pending: list[BatchItem], assignment: Assignment, options: GradeOptions, out_dir: Path,
                  jobs: int, staff: bool, record: Callable[[BatchItem, GradeResult], None]) -> None:
    # spawn, not fork: the parent holds ZMQ sockets and threads that must not be duplicated
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures: dict[Future, BatchItem] = {
            pool.submit(_worker_grade, item, assignment.id, options, out_dir, staff): item for item in pending}
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    item = futures.pop(future)
                    try:
                        result = future.result()
                    except GraderError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - a worker process died: record, go on
                        result = crashed_result(item, assignment, options,
                                                f"the grader's worker failed on this submission ({exc!r}); "
                                                "run the batch again to retry it")
                        write_student(result, out_dir / item.student, staff=staff)
                    record(item, result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def write_summary(outcomes: list[Outcome], out_dir: Path, *, title: str) -> Path:
    entries = [SummaryEntry(result=o.result, feedback_href=f"{o.student}/feedback.html") for o in outcomes]
    return write_class_summary(entries, out_dir / "summary.html", title=title)


def elapsed_text(start: float) -> str:
    seconds = time.monotonic() - start
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"
