"""Batch output directories read back as a gradebook: the records every export is made from.

`read_batches` reads OUT/<student>/result.json of one or more `grader batch`
output directories (one per assignment). A result that cannot be read is a
problem to report, never a crash. Exports are pure functions from a
`Gradebook` to text (`Export`); only the command line writes files. The list
of formats by name is in grader/reports/exports.py.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from grader.errors import UsageError
from grader.results import GradeResult

# What XML 1.0 allows (tab, newline, carriage return and the printable planes); everything
# else, lone surrogates included, is removed from student text before any format sees it.
_NOT_XML_CHAR = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_AFTER_SEPARATOR = re.compile(r"([,;|\t\r\n]\s*)([=+\-@])")


def printable(text: object) -> str:
    """Text safe in any export: characters XML 1.0 forbids (control characters, surrogates) removed."""
    return _NOT_XML_CHAR.sub("", str(text))


def spreadsheet_text(text: object) -> str:
    """Text that a spreadsheet will not run as a formula: a leading = + - @ gets a quote before it, and so
    does one after a separator (a spreadsheet in a locale that splits on ; would start a cell there)."""
    cleaned = _AFTER_SEPARATOR.sub(r"\1'\2", printable(text))
    return "'" + cleaned if cleaned.startswith(_FORMULA_START) else cleaned


def spreadsheet_cell(value: object) -> object:
    """A CSV cell: numbers stay numbers (14, not 14.0), text is neutralised, None is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() else round(float(value), 4)
    return spreadsheet_text(value)


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A CSV document (RFC 4180: comma, double quotes, CRLF) with every cell passed through spreadsheet_cell;
    every text cell is quoted, so that no separator inside one splits it, whatever the reader's locale."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow([spreadsheet_cell(h) for h in header])
    writer.writerows([spreadsheet_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue()


@dataclass(frozen=True)
class Record:
    """One student's result for one assignment, read from OUT/<folder>/result.json."""

    folder: str  # the student's output folder name
    result: GradeResult
    graded_at: str  # ISO 8601, UTC

    @property
    def assignment(self) -> str:
        return self.result.assignment

    def lms_field(self, key: str) -> str:
        value = self.result.student.get(key, "") if isinstance(self.result.student, dict) else ""
        return value if isinstance(value, str) else ""

    @property
    def lms(self) -> str:
        return self.lms_field("lms")

    @property
    def name(self) -> str:
        """The name the LMS gave, else the folder name."""
        return self.lms_field("name") or self.folder

    @property
    def late(self) -> bool:
        return isinstance(self.result.student, dict) and self.result.student.get("late") is True


@dataclass(frozen=True)
class StudentRow:
    """One student across assignments (a row of a gradebook)."""

    student: str  # an output folder name, what the TA sees on disk
    name: str
    lms: str
    user_id: str  # Canvas user id, else empty
    records: dict[str, Record]  # by assignment id


@dataclass(frozen=True)
class Gradebook:
    assignments: tuple[str, ...]  # in the order the directories were given
    records: tuple[Record, ...]
    problems: tuple[str, ...] = ()  # results that could not be read, each naming the file and why

    def only(self, assignment: str) -> Gradebook:
        return Gradebook((assignment,), tuple(r for r in self.records if r.assignment == assignment), self.problems)

    def rows(self) -> tuple[list[StudentRow], list[str]]:
        """One row per student, joined across assignments; and warnings about ambiguous students.

        Canvas students are joined by user id, Moodle students by name (a
        participant id differs per assignment), others by folder name. Two
        results of one assignment with the same key are not merged: each keeps
        its own row, and a warning says so.
        """
        keyed: dict[str, list[Record]] = {}
        warnings = []
        for assignment in self.assignments:
            by_key: dict[str, list[Record]] = {}
            for record in (r for r in self.records if r.assignment == assignment):
                by_key.setdefault(_join_key(record), []).append(record)
            for key, records in by_key.items():
                if len(records) > 1:
                    folders = ", ".join(r.folder for r in records)
                    warnings.append(f"{folders}: the same student ({key}) more than once in {assignment}; "
                                    "each gets its own row, keep one")
                    for record in records:
                        keyed.setdefault(f"folder:{assignment}:{record.folder}", []).append(record)
                else:
                    keyed.setdefault(key, []).append(records[0])
        rows = [_row(records) for records in keyed.values()]
        return sorted(rows, key=lambda row: (row.student.casefold(), row.student)), warnings


def exported_score(record: Record) -> float | None:
    """The score an LMS import gets: none (an empty cell) when the grader could not finish, so that a
    grader's failure never lands in a gradebook as a zero."""
    return record.result.score if record.result.has_grade else None


def not_graded_warning(record: Record) -> list[str]:
    """What a TA should hear about a record that is not a plain grade."""
    result = record.result
    if not result.has_grade:
        return [f"{record.folder}: {record.assignment} was not graded: the grader could not finish; its cell is "
                "left empty (run the batch again to grade it)"]
    if result.status != "graded":
        return [f"{record.folder}: {record.assignment} could not be graded (status {result.status}); its score "
                f"{result.score:g} is exported"]
    return []


def _join_key(record: Record) -> str:
    if record.lms == "canvas" and record.lms_field("user_id"):
        return f"canvas user {record.lms_field('user_id')}"
    if record.lms == "moodle" and record.lms_field("name"):
        return f"moodle name {record.lms_field('name')!r}"
    return f"folder {record.folder}"


def _row(records: list[Record]) -> StudentRow:
    first = records[0]
    user_id = first.lms_field("user_id") if first.lms == "canvas" else ""
    return StudentRow(student=first.folder, name=first.name, lms=first.lms, user_id=user_id,
                      records={r.assignment: r for r in records})


@dataclass(frozen=True)
class Export:
    """What a format made: the text to write, and warnings for the TA (stderr)."""

    text: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportFormat:
    name: str
    help: str
    render: Callable[..., Export]  # render(gradebook, *, checks: bool) -> Export
    suffix: str = ".csv"
    one_assignment: bool = False  # the LMS takes one assignment per file


def read_batches(directories: Sequence[Path]) -> Gradebook:
    """Every OUT/<student>/result.json of these batch output directories; unreadable ones become problems."""
    records: list[Record] = []
    problems: list[str] = []
    assignments: dict[str, None] = {}
    for directory in directories:
        directory = Path(directory)
        if not directory.is_dir():
            raise UsageError(f"{directory}: not a directory; give the output directory of grader batch")
        paths = sorted(p for p in directory.glob("*/result.json") if not p.parent.name.startswith("."))
        if not paths:
            raise UsageError(f"{directory}: no OUT/<student>/result.json in it; is it an output directory "
                             "of grader batch?")
        for path in paths:
            try:
                record = read_record(path)
            except (OSError, ValueError, TypeError, KeyError) as exc:
                problems.append(f"{path}: not readable, left out ({printable(exc)})")
                continue
            records.append(record)
            assignments.setdefault(record.assignment, None)
    return Gradebook(tuple(assignments), tuple(records), tuple(problems))


def read_record(path: Path) -> Record:
    result = GradeResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    if not isinstance(result.assignment, str) or not result.assignment:
        raise ValueError("no assignment id")
    for value in (result.score, result.max_score, *(c.score for c in result.checks)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"a score that is not a finite number: {value!r}")
    if not isinstance(result.student, dict):
        raise ValueError("'student' is not an object")
    return Record(folder=path.parent.name, result=result, graded_at=_graded_at(result, path))


def _graded_at(result: GradeResult, path: Path) -> str:
    """The result's own timestamp if it has one, else when result.json was written (UTC, ISO 8601)."""
    stamp = result.environment.get("graded_at") if isinstance(result.environment, dict) else None
    if isinstance(stamp, str) and stamp:
        return printable(stamp)
    moment = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class CheckLine:
    """A check as a student may see it: a hidden check shows its hint, never its message."""

    id: str
    name: str
    score: float
    max_score: float
    status: str
    text: str  # the message, or for a hidden check its hint


def student_checks(result: GradeResult) -> list[CheckLine]:
    return [CheckLine(id=printable(c.id), name=printable(c.name), score=c.score, max_score=c.max_score,
                      status=printable(c.status),
                      text=printable(c.hint if c.visibility == "hidden" else c.message))
            for c in result.checks]
