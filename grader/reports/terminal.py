"""The summary a person reads in the terminal after grading.

Everything that comes from a submission is printed as plain text (see
reports.plain): no markup is parsed and no control sequence reaches the
terminal.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from grader.reports.plain import rich_text
from grader.results import GradeResult

_STYLE = {"passed": "green", "failed": "red", "error": "yellow", "skipped": "dim"}


def print_summary(result: GradeResult, console: Console | None = None, *, score_line: str = "") -> None:
    """The table of checks, the notebook's problems and warnings, and the score (or `score_line`)."""
    console = console or Console(stderr=False, highlight=False)
    table = Table(title=rich_text(f"{result.submission}: {result.assignment}"), title_justify="left",
                  show_lines=False, expand=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("points", justify="right")
    table.add_column("message", overflow="fold")
    for check in result.checks:
        name = check.id + (" (hidden)" if check.visibility == "hidden" else "")
        table.add_row(rich_text(name), rich_text(check.status, _STYLE.get(check.status, "")),
                      rich_text(f"{check.score:g}/{check.max_score:g}"), rich_text(check.message))
    console.print(table)
    for problem in result.execution.get("problems", []):
        console.print(Text.assemble(("notebook: ", "yellow"), rich_text(problem.get("message", ""))))
    for warning in result.execution.get("warnings", []):
        console.print(Text.assemble(("warning: ", "yellow"), rich_text(warning)))
    if result.message:
        console.print(rich_text(result.message, "red"))
    sandbox = result.environment.get("sandbox") or {}
    for note in sandbox.get("notes", []):
        style = "bold red" if sandbox.get("isolation") == "none" else "dim"
        console.print(rich_text(f"sandbox: {note}", style))
    total = result.timings.get("total_s")
    timing = f" in {total:.1f} s" if total else ""
    if not result.has_grade:
        score_line = f"not graded: the grader could not finish (out of {result.max_score:g})"
    console.print(Text(score_line or f"score: {result.score:g} / {result.max_score:g}", style="bold") + Text(timing))
