"""Which submission's grade counts, and a class's grades as the summary page and the exports read them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.reports.gradebook import Gradebook, Record
from grader.results import GradeResult
from grader.service.db import AssignmentSettings, Student, Submission
from grader.service.queue import GRADED

POLICIES = ("last", "best", "last-before-deadline")


def settings_of(session: Session, assignment: str) -> AssignmentSettings:
    found = session.get(AssignmentSettings, assignment)
    return found if found is not None else AssignmentSettings(assignment=assignment, deadline=None, policy="last")


def is_late(row: Submission, deadline: dt.datetime | None) -> bool:
    return deadline is not None and row.received_at > deadline


def counted(rows: list[Submission], policy: str, deadline: dt.datetime | None) -> Submission | None:
    """The submission whose grade counts under `policy`: the last graded one, the best, or the last one
    received by the deadline (none, when every graded one came late). A submission the grader could not
    grade never counts."""
    graded = [row for row in rows if row.status == GRADED and row.result_json is not None]
    if policy == "last-before-deadline" and deadline is not None:
        graded = [row for row in graded if not is_late(row, deadline)]
    if not graded:
        return None
    if policy == "best":
        return max(graded, key=lambda row: (row.score if row.score is not None else -math.inf, row.id))
    return max(graded, key=lambda row: row.id)


def class_grades(session: Session, assignment: str) -> list[tuple[Student, Submission]]:
    """Each student with a counted submission of `assignment`, by roster key."""
    settings = settings_of(session, assignment)
    by_student: dict[int, list[Submission]] = {}
    for row in session.scalars(select(Submission).where(Submission.assignment == assignment)):
        by_student.setdefault(row.student_id, []).append(row)
    grades = []
    for student in session.scalars(select(Student).order_by(Student.key)):
        chosen = counted(by_student.get(student.id, []), settings.policy, settings.deadline)
        if chosen is not None:
            grades.append((student, chosen))
    return grades


def gradebook(session: Session, assignment: str) -> Gradebook:
    """The counted results as the exports read a batch's: each student under their roster key, with the
    LMS identity the roster came with."""
    settings = settings_of(session, assignment)
    records = []
    for student, row in class_grades(session, assignment):
        result = GradeResult.from_json(row.result_json or "{}")
        identity = {"name": student.name, "late": is_late(row, settings.deadline)}
        if student.lms == "canvas":
            identity.update(lms="canvas", user_id=student.key)
        elif student.lms == "moodle":
            identity.update(lms="moodle")
        finished = row.finished_at or row.received_at
        records.append(Record(folder=student.key, result=dataclasses.replace(result, student=identity),
                              graded_at=finished.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return Gradebook((assignment,), tuple(records))
