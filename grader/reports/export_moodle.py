"""A Moodle assignment grading worksheet, for "Upload grading worksheet" (offline grading).

One assignment per file. Moodle's importer finds its columns by their English
headers: Identifier ("Participant NNNN", the participant id the intake kept
from the download's folder names `Full Name_NNNN_assignsubmission_file_`),
Grade, and Last modified (grade), without which it refuses the file. Moodle
skips a row whose grade was changed in Moodle after that time, unless "Allow
updating records that have been modified more recently in Moodle" is ticked.
Full name and Maximum grade are for the reader; Feedback comments (HTML, as
Moodle stores them) fill the comments feedback when that plugin is enabled.
Grades are raw points: set the Moodle assignment's maximum grade to the
grader's, since Moodle skips a grade above its maximum.

A student without a participant id keeps a row with an empty Identifier and
their folder name as Full name, and a warning says so (Moodle would skip it).
"""

from __future__ import annotations

import html

from grader.reports.gradebook import (
    Export,
    ExportFormat,
    Gradebook,
    Record,
    csv_text,
    exported_score,
    not_graded_warning,
    printable,
    student_checks,
)

HEADER = ("Identifier", "Full name", "Grade", "Maximum grade", "Last modified (grade)", "Feedback comments")


def render(book: Gradebook, *, checks: bool = False) -> Export:
    if len(book.assignments) > 1:
        raise ValueError("a Moodle grading worksheet holds one assignment")
    warnings: list[str] = []
    records = sorted(book.records, key=lambda r: (r.name.casefold(), r.folder))
    lines = []
    for record in records:
        participant = record.lms_field("participant_id") if record.lms == "moodle" else ""
        if not participant:
            warnings.append(f"{record.folder}: no Moodle participant id (not from a Moodle download); "
                            "its row has an empty Identifier and the folder name as Full name")
        warnings.extend(not_graded_warning(record))
        result = record.result
        lines.append([f"Participant {participant}" if participant else "",
                      record.name if participant else record.folder,
                      exported_score(record), result.max_score, record.graded_at, feedback(record)])
    return Export(csv_text(HEADER, lines), tuple(warnings))


def feedback(record: Record) -> str:
    """The score, then one line per check (a hidden check shows its hint), escaped for Moodle's HTML."""
    result = record.result
    lines = [f"Autograder: {result.score:g} / {result.max_score:g}"]
    if result.message:
        lines.append(printable(result.message))
    lines += [f"{c.name}: {c.score:g} / {c.max_score:g} ({c.status})" + (f" {c.text}" if c.text else "")
              for c in student_checks(result)]
    return "<br>".join(html.escape(line) for line in lines)


FORMAT = ExportFormat(name="moodle", help="Moodle grading worksheet (one assignment: Identifier, Full name, Grade, "
                                          "Maximum grade, Last modified (grade), Feedback comments)",
                      render=render, one_assignment=True)
