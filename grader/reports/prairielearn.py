"""PrairieLearn's external-grader results.json, translated from a GradeResult (pure).

The fields follow PrairieLearn's "External Grading" documentation (docs/externalGrading.md,
"Grading results"): `gradable`, `score` in [0, 1], `message`, `output`, `images` and `tests[]`
with `name`, `description`, `points`, `max_points`, `message`, `output` and `images`
(`{"label", "url"}` with a data URL), the file at most 1 MB.
tests/schemas/prairielearn-results.schema.json is that documentation as a JSON Schema.

`gradable: false` makes PrairieLearn not count the attempt; it is for the grader's own failures
only (see grader.lms.grading): a student's broken notebook is gradable and scores what it earns.
Hidden checks are redacted exactly as feedback.html redacts them for a student (the same
reports.html view): points, and the hint when failed; never the message or details.
`message` and `output` are plain text (PrairieLearn shows them escaped, `output` in a <pre>).
"""

from __future__ import annotations

import math
from typing import Any

from grader.reports.html import CheckView, FeedbackPage, Picture, Table, feedback_page
from grader.results import CheckResult, GradeResult

IMAGE_BUDGET = 700_000  # characters of data URLs; PrairieLearn refuses a results.json over 1 MB
MAX_TEXT = 20_000
MAX_TRACEBACK_LINES = 60
HIDDEN_DESCRIPTION = "A hidden test: its inputs and expected values are not shown."


def results_json(result: GradeResult) -> dict[str, Any]:
    """results.json for a submission the grader could grade (whatever its score)."""
    page = feedback_page(result, audience="student")
    budget = [IMAGE_BUDGET]
    tests = [test_entry(check, view, budget) for check, view in zip(result.checks, page.checks, strict=True)]
    return {
        "gradable": True,
        "score": fraction(result.score, result.max_score),
        "message": summary_text(page),
        "output": _cut(problems_text(page)),
        "tests": tests,
    }


def not_gradable_json(message: str) -> dict[str, Any]:
    """The grader could not work (not the student's fault): PrairieLearn does not count the attempt."""
    return {"gradable": False, "score": 0.0, "message": _cut(message), "output": "", "tests": []}


def test_entry(check: CheckResult, view: CheckView, budget: list[int]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": check.name,
        "description": HIDDEN_DESCRIPTION if view.hidden else "",
        "points": _number(check.score),
        "max_points": _number(check.max_score),
        "message": view.hint if view.withheld else _cut(view.message),
        "output": "" if view.withheld else _cut(details_text(view)),
    }
    images = [image for image in (_image(p, budget) for p in (*view.pictures, *view.thumbnails)) if image]
    if images and not view.withheld:
        entry["images"] = images
    return entry


def fraction(score: Any, max_score: Any) -> float:
    if not (_finite(score) and _finite(max_score)) or max_score <= 0:
        return 0.0
    return round(min(1.0, max(0.0, float(score) / float(max_score))), 6)


# --------------------------------------------------------------------------
# Plain text


def summary_text(page: FeedbackPage) -> str:
    line = f"Score: {page.score} / {page.max_score} points ({page.assignment}, {page.submission})."
    if page.status != "graded":
        return f"This submission could not be graded: {page.message} {line}"
    if page.problems:
        line += f" {len(page.problems)} cell(s) of the notebook had problems: see the output below."
    return line


def problems_text(page: FeedbackPage) -> str:
    parts = []
    for problem in page.problems:
        where = f"Cell {problem.cell_number}" if problem.cell_number else "A cell"
        error = f": {problem.error_name}" if problem.error_name else ""
        parts.append(f"{where} {problem.what}{error}\n{problem.message}")
        if problem.traceback:
            parts.append("\n".join(problem.traceback[-MAX_TRACEBACK_LINES:]))
    parts.extend(page.execution_notes)
    parts.extend(f"Warning (costs no points): {w}" for w in page.warnings)
    return "\n\n".join(parts)


def details_text(view: CheckView) -> str:
    parts = ["\n".join(f"{key}: {value}" for key, value in view.facts)] if view.facts else []
    parts.extend(_table_text(table) for table in view.tables)
    if view.traceback:
        parts.append("Traceback:\n" + "\n".join(view.traceback[-MAX_TRACEBACK_LINES:]))
    return "\n\n".join(parts)


def _table_text(table: Table) -> str:
    rows = [table.columns, *(row.cells for row in table.rows)]
    widths = [max(len(str(row[i])) if i < len(row) else 0 for row in rows) for i in range(len(table.columns))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
             for row in rows]
    return "\n".join(([table.title] if table.title else []) + [line for line in lines if line])


def _image(picture: Picture, budget: list[int]) -> dict[str, str] | None:
    if not picture.uri.startswith("data:image/png;base64,") or len(picture.uri) > budget[0]:
        return None
    budget[0] -= len(picture.uri)
    return {"label": picture.caption or picture.alt, "url": picture.uri}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " … (cut)"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float:
    return float(value) if _finite(value) else 0.0
