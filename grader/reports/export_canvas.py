"""A Canvas Gradebook import CSV (Grades > Import).

Canvas reads the first five columns as the student: Student, ID, SIS User ID,
SIS Login ID, Section (the header must have them in this order; Section ends
the student columns). It finds the student by ID, the Canvas user id that the
intake kept from the download's file names (`smithjane_123456_...`); the SIS
columns and Section are left empty, Canvas does not need them when ID is set.

Every further column is an assignment, matched by its title. The grader's
column is titled with its assignment id (`gradient-descent`): rename the
header to the Canvas assignment's title (or `Title (canvas assignment id)`)
before importing, or let Canvas create a new assignment from it. Scores are
raw points out of the grader's maximum.

A student without a Canvas user id (not from a Canvas download) keeps a row
with an empty ID and their folder name as Student, and a warning says so:
Canvas lists such a row as a student it does not know, for the TA to settle.
"""

from __future__ import annotations

from grader.reports.gradebook import Export, ExportFormat, Gradebook, csv_text, exported_score, not_graded_warning

STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


def render(book: Gradebook, *, checks: bool = False) -> Export:
    rows, warnings = book.rows()
    lines = []
    for row in rows:
        if not row.user_id:
            warnings.append(f"{row.student}: no Canvas user id (not from a Canvas download); "
                            "its row has an empty ID and the folder name as Student")
        for record in row.records.values():
            warnings.extend(not_graded_warning(record))
        student = row.name if row.user_id else row.student
        scores = [exported_score(row.records[a]) if a in row.records else None for a in book.assignments]
        lines.append([student, row.user_id, "", "", "", *scores])
    return Export(csv_text([*STUDENT_COLUMNS, *book.assignments], lines), tuple(warnings))


FORMAT = ExportFormat(name="canvas", help="Canvas Gradebook import CSV (Student, ID, SIS User ID, SIS Login ID, "
                                          "Section, one column per assignment)", render=render)
