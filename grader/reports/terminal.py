"""The summary a person reads in the terminal after grading."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from grader.results import GradeResult

_STYLE = {"passed": "green", "failed": "red", "error": "yellow", "skipped": "dim"}


def print_summary(result: GradeResult, console: Console | None = None) -> None:
    console = console or Console(stderr=False, highlight=False)
    table = Table(title=f"{result.submission}: {result.assignment}", title_justify="left",
                  show_lines=False, expand=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("points", justify="right")
    table.add_column("message", overflow="fold")
    for check in result.checks:
        style = _STYLE.get(check.status, "")
        name = check.id + (" (hidden)" if check.visibility == "hidden" else "")
        table.add_row(name, f"[{style}]{check.status}[/]", f"{check.score:g}/{check.max_score:g}",
                      check.message)
    console.print(table)
    for problem in result.execution.get("problems", []):
        console.print(f"[yellow]notebook:[/] {problem['message']}")
    for warning in result.execution.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    if result.message:
        console.print(f"[red]{result.message}[/]")
    sandbox = result.environment.get("sandbox") or {}
    for note in sandbox.get("notes", []):
        console.print(f"[dim]sandbox: {note}[/]")
    total = result.timings.get("total_s")
    timing = f" in {total:.1f} s" if total else ""
    console.print(f"[bold]score: {result.score:g} / {result.max_score:g}[/]{timing}")
