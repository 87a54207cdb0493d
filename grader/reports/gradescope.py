"""Gradescope's results.json, translated from a GradeResult (pure: no files, no processes).

The fields follow Gradescope's "Autograder Specifications" (gradescope-autograders.readthedocs.io,
/specs/): a top-level `score`, `execution_time` (seconds), `output` with its `output_format`,
`stdout_visibility`, `tests[]` (`name`, `number`, `score`, `max_score`, `status`, `output`,
`output_format`, `visibility`, `tags`) and an optional `leaderboard[]` (`name`, `value`, `order`).
tests/schemas/gradescope-results.schema.json is that specification as a JSON Schema.

What a student sees is what feedback.html shows a student, because both are made from the same
redacted view (reports.html.check_view with audience "student"): a hidden check carries its
points and, when it failed, its hint; never its message or details, which may hold the inputs
and expected values. Such a test is still `"visibility": "visible"`: Gradescope's "hidden" would
hide the points the student earned and, by Gradescope's rule, the total score too, while it
would protect nothing, since the redaction already happened here and the file never holds the
secret. It is tagged "hidden" instead.

Outputs are HTML ("html" format, which Gradescope renders after sanitising): every string that
comes from a result is escaped here, and plots travel as PNG data URIs within a size budget.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, TypeGuard

from grader.reports.html import CheckView, FeedbackPage, Picture, Table, feedback_page
from grader.results import CheckResult, GradeResult

STDOUT_VISIBILITY = "hidden"  # run_autograder's stdout is the staff summary, hidden checks in full
HIDDEN_TAG = "hidden"
IMAGE_BUDGET = 700_000  # characters of data URIs in one results.json; the rest is left out, and said so
MAX_TRACEBACK_LINES = 60
LEADERBOARD_KEYS = (("test_accuracy", "Test accuracy", "desc"), ("test_mse", "Test MSE", "asc"))


def results_json(result: GradeResult, *, leaderboard: bool = True) -> dict[str, Any]:
    """The whole results.json for one graded (or ungradable) submission."""
    page = feedback_page(result, audience="student")
    budget = _Budget(IMAGE_BUDGET)
    tests = [test_entry(i, check, view, budget) for i, (check, view) in
             enumerate(zip(result.checks, page.checks, strict=True), start=1)]
    document: dict[str, Any] = {
        "score": _number(result.score),
        "execution_time": round(_number(result.timings.get("total_s", 0.0))),
        "output": summary_html(page),
        "output_format": "html",
        "stdout_visibility": STDOUT_VISIBILITY,
        "tests": tests,
        "extra_data": {"assignment": result.assignment, "submission_sha256": result.submission_sha256,
                       "status": result.status,
                       "sandbox": str((result.environment.get("sandbox") or {}).get("isolation", ""))},
    }
    board = leaderboard_entries(result) if leaderboard else []
    if board:
        document["leaderboard"] = board
    return document


def test_entry(number: int, check: CheckResult, view: CheckView, budget: _Budget) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": check.name,
        "number": str(number),
        "score": _number(check.score),
        "max_score": _number(check.max_score),
        "status": "passed" if check.status == "passed" else "failed",
        "output": check_html(view, budget),
        "output_format": "html",
        "visibility": "visible",
    }
    if view.hidden:
        entry["tags"] = [HIDDEN_TAG]
    return entry


# --------------------------------------------------------------------------
# HTML fragments: escaped text only, pictures as data URIs made by reports.plots


def summary_html(page: FeedbackPage) -> str:
    parts = [f"<p><strong>Score: {escape(page.score)} / {escape(page.max_score)}</strong> "
             f"({escape(page.assignment)}, {escape(page.submission)})</p>"]
    if page.status != "graded":
        parts.append(f"<p><strong>This submission could not be graded.</strong> {escape(page.message)}</p>")
    elif page.message:
        parts.append(f"<p>{escape(page.message)}</p>")
    if page.problems:
        parts.append("<h3>Problems while running the notebook</h3><p>Checks that need a value from one of these "
                     "cells may fail because of it. Cells are counted from 1, markdown cells included.</p>")
        for problem in page.problems:
            where = f"Cell {problem.cell_number}" if problem.cell_number else "A cell"
            error = f": {problem.error_name}" if problem.error_name else ""
            parts.append(f"<p><strong>{escape(where)} {escape(problem.what)}{escape(error)}</strong><br>"
                         f"{escape(problem.message)}</p>")
            if problem.traceback:
                parts.append(_pre(problem.traceback))
    for note in page.execution_notes:
        parts.append(f"<p>{escape(note)}</p>")
    if page.warnings:
        parts.append("<p>Warnings (they cost no points):</p><ul>"
                     + "".join(f"<li>{escape(w)}</li>" for w in page.warnings) + "</ul>")
    return "\n".join(parts)


def check_html(view: CheckView, budget: _Budget) -> str:
    parts = []
    if view.withheld:
        parts.append("<p><em>A hidden test: its inputs and expected values are not shown.</em></p>")
        if view.hint:
            parts.append(f"<p><strong>Hint:</strong> {escape(view.hint)}</p>")
        return "\n".join(parts)
    if view.message:
        parts.append(f"<p>{escape(view.message)}</p>")
    if view.facts:
        parts.append("<ul>" + "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in view.facts) + "</ul>")
    parts.extend(_table(table) for table in view.tables)
    parts.extend(_picture(picture, budget) for picture in (*view.pictures, *view.thumbnails))
    if view.traceback:
        parts.append(_pre(view.traceback))
    return "\n".join(p for p in parts if p)


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row.cells) + "</tr>" for row in table.rows)
    title = f"<p><strong>{escape(table.title)}</strong></p>" if table.title else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _picture(picture: Picture, budget: _Budget) -> str:
    if not picture.uri.startswith("data:image/png;base64,"):
        return ""  # only the grader's own charts are embedded
    if not budget.take(len(picture.uri)):
        return f"<p><em>(a plot was left out to keep these results small: {escape(picture.alt)})</em></p>"
    caption = f"<br><small>{escape(picture.caption)}</small>" if picture.caption else ""
    return f'<p><img src="{escape(picture.uri)}" alt="{escape(picture.alt)}">{caption}</p>'


def _pre(lines: tuple[str, ...]) -> str:
    shown = list(lines[-MAX_TRACEBACK_LINES:])
    return "<pre>" + escape("\n".join(shown)) + "</pre>"


class _Budget:
    """How many characters of images one results.json may still carry."""

    def __init__(self, limit: int):
        self.left = limit

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


# --------------------------------------------------------------------------
# Leaderboard


def leaderboard_entries(result: GradeResult) -> list[dict[str, Any]]:
    """Test accuracy or test MSE of the model the grader trained, from visible checks only."""
    entries: dict[str, dict[str, Any]] = {}
    for check in result.checks:
        training = check.details.get("training") if isinstance(check.details, dict) else None
        if check.visibility != "visible" or not isinstance(training, dict):
            continue
        for key, name, order in LEADERBOARD_KEYS:
            value = training.get(key)
            if name not in entries and _finite(value):
                entries[name] = {"name": name, "value": round(float(value), 6), "order": order}
    return list(entries.values())


def _finite(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any) -> float:
    return float(value) if _finite(value) else 0.0

