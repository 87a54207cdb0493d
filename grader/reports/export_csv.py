"""A plain gradebook CSV: one row per student, the scores of every assignment side by side.

Columns: student (output folder), name, lms, user_id (Canvas), then for each
assignment A: `A` (the score), `A:max_score`, `A:status`, `A:late`,
`A:lms_submission` (Canvas attachment id or Moodle participant id),
`A:sha256`, `A:graded_at` (ISO 8601, UTC); with `checks`, `A/<check id>` for
each check's score. Scores are numbers; text that a spreadsheet could run as a
formula is neutralised.
"""

from __future__ import annotations

from grader.reports.gradebook import Export, ExportFormat, Gradebook, Record, csv_text

FIELDS = ("max_score", "status", "late", "lms_submission", "sha256", "graded_at")


def render(book: Gradebook, *, checks: bool = False) -> Export:
    check_ids = {a: _check_ids(book, a) if checks else [] for a in book.assignments}
    header = ["student", "name", "lms", "user_id"]
    for assignment in book.assignments:
        header += [assignment, *(f"{assignment}:{f}" for f in FIELDS),
                   *(f"{assignment}/{c}" for c in check_ids[assignment])]
    rows, warnings = book.rows()
    lines = []
    for row in rows:
        line: list[object] = [row.student, row.name, row.lms, row.user_id]
        for assignment in book.assignments:
            record = row.records.get(assignment)
            line += _cells(record, check_ids[assignment])
        lines.append(line)
    return Export(csv_text(header, lines), tuple(warnings))


def _check_ids(book: Gradebook, assignment: str) -> list[str]:
    ids: dict[str, None] = {}
    for record in book.records:
        if record.assignment == assignment:
            ids.update((c.id, None) for c in record.result.checks)
    return list(ids)


def _cells(record: Record | None, check_ids: list[str]) -> list[object]:
    if record is None:
        return [None] * (1 + len(FIELDS) + len(check_ids))
    result = record.result
    submission = record.lms_field("submission_id") or record.lms_field("participant_id")
    scores = {c.id: c.score for c in result.checks}
    return [result.score if result.has_grade else None, result.max_score, result.status, record.late, submission,
            result.submission_sha256, record.graded_at, *(scores.get(c) for c in check_ids)]


FORMAT = ExportFormat(name="csv", help="one row per student, a column per assignment (and per check with --checks)",
                      render=render)
