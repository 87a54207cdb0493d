"""HTML feedback for one submission, and a summary page for a class, from GradeResults.

The pages are rendered from a GradeResult only (result.json is its dict), by
jinja2 templates in the top-level templates/ directory (a wheel ships them as
grader/templates/; see templates_dir). Python turns a result into the small
view records below and the templates lay them out.

Two rules are kept here rather than in the templates, so that no template
edit can break them:

- hidden checks are redacted for students before a template sees them: the
  view of a hidden check carries no message and no details at all;
- every string goes to the templates as plain text and is escaped there
  (autoescape); nothing built from student data is ever marked safe. Charts
  are data-URI PNGs made by reports.plots, so a page needs nothing but itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import quote

import jinja2

import grader
from grader.errors import HarnessError
from grader.reports import plots
from grader.results import CHECK_STATUSES, CheckResult, GradeResult

AUDIENCES = ("student", "staff")
FEEDBACK_FILES = {"student": "feedback.html", "staff": "feedback-staff.html"}
HIDDEN_HINT_FALLBACK = ("This hidden check did not pass. Re-read what the task asks of this function "
                        "and test it on inputs of your own, including unusual ones.")
PROBLEM_KINDS = {"exception": "raised an exception", "timeout": "ran out of time",
                 "kernel-died": "crashed the kernel", "skipped": "was not run"}
ENVIRONMENT_FIELDS = (("grader", "grader"), ("device", "device"), ("seed", "seed"), ("torch", "torch"),
                      ("python", "Python"))
# details keys drawn or tabulated on their own; every other key is listed as a plain fact
DRAWN_KEYS = frozenset({"series", "series_x", "confusion_matrix", "misclassified", "scatter", "curve", "layers",
                        "training", "traceback", "relative_error", "expected", "found", "table", "field"})
MAX_THUMBNAILS = 8
MAX_TABLE_ROWS, MAX_TABLE_COLUMNS = 100, 12
MAX_TEXT = 10_000  # a text longer than this is cut: a student may return a megabyte string
MAX_FACT = 300
SLOWEST_SHOWN = 5
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --------------------------------------------------------------------------
# Public API


def templates_dir() -> Path:
    """GRADER_TEMPLATES, else the templates installed inside the package, else the checkout's templates/.

    A wheel (or `pip install .`) ships the top-level templates/ as grader/templates/;
    an editable install or a checkout on PYTHONPATH reads templates/ beside the package.
    """
    override = os.environ.get("GRADER_TEMPLATES")
    if override:
        return Path(override)
    installed = resources.files("grader") / "templates"
    if installed.is_dir():
        return Path(str(installed))
    return Path(grader.__file__).resolve().parent.parent / "templates"


def render_feedback(result: GradeResult, *, audience: str = "student") -> str:
    """The feedback page for one submission; "staff" also shows hidden checks in full."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, not {audience!r}")
    return template("feedback.html.j2").render(page=feedback_page(result, audience=audience))


def write_feedback(result: GradeResult, out_dir: Path, *, audience: str = "student") -> Path:
    """Write feedback.html (staff: feedback-staff.html) into out_dir; return its path."""
    html = render_feedback(result, audience=audience)
    return _write(Path(out_dir) / FEEDBACK_FILES[audience], html)


@dataclass(frozen=True)
class SummaryEntry:
    """One submission on the class summary; feedback_href is a plain path relative to the summary
    page (not URL-encoded: the page encodes it)."""

    result: GradeResult
    feedback_href: str
    label: str = ""  # shown beside the submission's name (default: the folder of feedback_href)


def render_class_summary(entries: list[SummaryEntry], *, title: str) -> str:
    return template("summary.html.j2").render(page=summary_page(entries, title=title))


def write_class_summary(entries: list[SummaryEntry], path: Path, *, title: str) -> Path:
    return _write(Path(path), render_class_summary(entries, title=title))


# --------------------------------------------------------------------------
# Templates


def template(name: str) -> jinja2.Template:
    directory = templates_dir()
    if not (directory / name).is_file():
        # a wheel ships them, so this is a broken install or a GRADER_TEMPLATES that points elsewhere
        raise HarnessError(f"HTML template {name} not found in {directory}; reinstall the grader, "
                           "or set GRADER_TEMPLATES to a directory holding the templates")
    return _environment(str(directory)).get_template(name)


@functools.lru_cache(maxsize=4)
def _environment(directory: str) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=True,  # every template, whatever its file name: all of them show student text
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the tests instead of vanishing
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _write(path: Path, html: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # a reader never opens half a page
    return path


# --------------------------------------------------------------------------
# Views: what a template may show


@dataclass(frozen=True)
class Picture:
    uri: str  # a data:image/png URI made by reports.plots, never student text
    alt: str
    caption: str = ""


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    status: str = ""  # "passed" / "failed" marks the row; "" leaves it plain


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


@dataclass(frozen=True)
class CheckView:
    id: str
    name: str
    status: str
    points: str
    hidden: bool
    withheld: bool  # a hidden check seen by a student: message and details are not in this view
    message: str = ""
    hint: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    tables: tuple[Table, ...] = ()
    pictures: tuple[Picture, ...] = ()
    thumbnails: tuple[Picture, ...] = ()
    traceback: tuple[str, ...] = ()
    traceback_as_in: str = ""  # the check above that shows this same traceback (shown once per page)
    other_details: str = ""  # staff only: details no view knows, as JSON


@dataclass(frozen=True)
class ProblemView:
    cell_number: int  # 1-based, as the messages count cells; 0 when unknown
    kind: str
    what: str
    message: str
    source: str
    error_name: str
    traceback: tuple[str, ...]


@dataclass(frozen=True)
class FeedbackPage:
    audience: str
    assignment: str
    submission: str
    submission_sha256: str
    status: str
    score: str
    max_score: str
    percent: float
    message: str
    checks: tuple[CheckView, ...]
    problems: tuple[ProblemView, ...]
    warnings: tuple[str, ...]
    execution_notes: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    sandbox: tuple[tuple[str, str], ...]
    sandbox_notes: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)


def shown_once(checks: tuple[CheckView, ...]) -> tuple[CheckView, ...]:
    """A template's every check fails with one traceback (the stub raising NotImplementedError): the page
    shows it at the first check and points there from the others."""
    first: dict[tuple[str, ...], str] = {}
    views = []
    for view in checks:
        if view.traceback and view.traceback in first:
            view = dataclasses.replace(view, traceback=(), traceback_as_in=first[view.traceback])
        elif view.traceback:
            first[view.traceback] = view.name
        views.append(view)
    return tuple(views)


def feedback_page(result: GradeResult, *, audience: str) -> FeedbackPage:
    sandbox = result.environment.get("sandbox")
    sandbox = sandbox if isinstance(sandbox, dict) else {}
    graded = result.status == "graded"
    checks = shown_once(tuple(check_view(check, audience=audience, graded=graded) for check in result.checks))
    return FeedbackPage(
        audience=audience,
        assignment=result.assignment,
        submission=result.submission,
        submission_sha256=result.submission_sha256,
        status=result.status,
        score=format_points(result.score),
        max_score=format_points(result.max_score),
        percent=percent(result.score, result.max_score),
        message=result.message,
        checks=checks,
        problems=tuple(problem_view(p) for p in _list(result.execution.get("problems")) if isinstance(p, dict)),
        warnings=tuple(_text(w) for w in _list(result.execution.get("warnings"))),
        execution_notes=execution_notes(result.execution),
        environment=environment_facts(result),
        sandbox=tuple((str(k), _text(v)) for k, v in sandbox.items() if k != "notes"),
        sandbox_notes=tuple(_text(n) for n in _list(sandbox.get("notes"))),
        counts={status: sum(c.status == status for c in checks) for status in CHECK_STATUSES},
    )


def check_view(check: CheckResult, *, audience: str, graded: bool = True) -> CheckView:
    """What `audience` may see of one check; hints only where the notebook could be run at all."""
    hidden = check.visibility == "hidden"
    common: dict[str, Any] = dict(id=check.id, name=check.name, status=check.status,
                  points=f"{format_points(check.score)} / {format_points(check.max_score)}", hidden=hidden)
    if hidden and audience == "student":
        # only what is safe to tell: never the message or details, which may hold inputs and expected values
        hint = "" if check.status == "passed" or not graded else (check.hint.strip() or HIDDEN_HINT_FALLBACK)
        return CheckView(**common, withheld=True, hint=hint)
    details = check.details if isinstance(check.details, dict) else {}
    return CheckView(
        **common,
        withheld=False,
        message=check.message,
        hint=check.hint if hidden else "",
        facts=facts(details),
        tables=tuple(t for t in (generic_table(details.get("table")), layers_table(details.get("layers")),
                                 training_table(details.get("training")),
                                 relative_error_table(details.get("relative_error"), details.get("rtol")),
                                 expected_found_table(details)) if t is not None),
        pictures=pictures(details),
        thumbnails=thumbnails(details.get("misclassified")),
        traceback=tuple(_clean(line) for line in _list(details.get("traceback"))),
        other_details=unknown_details(details) if audience == "staff" else "",
    )


def problem_view(problem: dict[str, Any]) -> ProblemView:
    index = problem.get("cell_index")
    kind = str(problem.get("kind", ""))
    return ProblemView(
        cell_number=index + 1 if isinstance(index, int) and not isinstance(index, bool) else 0,
        kind=kind,
        what=PROBLEM_KINDS.get(kind, kind or "had a problem"),
        message=_text(problem.get("message", "")),
        source=_text(problem.get("source", "")),
        error_name=_text(problem.get("error_name", "")),
        traceback=tuple(_clean(line) for line in _list(problem.get("traceback"))),
    )


def execution_notes(execution: dict[str, Any]) -> tuple[str, ...]:
    notes = []
    if isinstance(execution.get("cells_run"), int):
        notes.append(f"{execution['cells_run']} code cells were run.")
    skipped = [i for i in _list(execution.get("demo_cells_skipped")) if isinstance(i, int)]  # 1-based already
    if skipped:
        notes.append("Cells tagged as demos were not run: " + ", ".join(map(str, skipped)) + ".")
    restarts = execution.get("kernel_restarts")
    if isinstance(restarts, int) and restarts:
        notes.append(f"The kernel stopped and was restarted {restarts} time{'s' if restarts != 1 else ''}.")
    fresh = execution.get("fresh_kernels")
    if isinstance(fresh, int) and fresh:
        notes.append("As its checks require, the grader ran the notebook again in a fresh kernel (not a problem).")
    if execution.get("budget_exhausted"):
        notes.append("The notebook used up its total time budget; later cells were not run.")
    return tuple(notes)


def environment_facts(result: GradeResult) -> tuple[tuple[str, str], ...]:
    env = result.environment
    rows = [(label, _text(env[key])) for key, label in ENVIRONMENT_FIELDS if key in env]
    total = result.timings.get("total_s")
    if _is_number(total):
        rows.append(("time taken", f"{total:.1f} s"))
    return tuple(rows)


# --------------------------------------------------------------------------
# Details → facts, tables, pictures


def facts(details: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Short values (numbers, words, small lists) under their own key, in the check's order."""
    rows = []
    for key, value in details.items():
        shown_elsewhere = key in DRAWN_KEYS and not (key == "relative_error" and _is_scalar(value))
        if shown_elsewhere or (key == "rtol" and isinstance(details.get("relative_error"), dict)):
            continue
        if _is_scalar(value) or _is_short_list(value):
            rows.append((str(key), _cut(format_value(value, shape="shape" in str(key)), MAX_FACT)))
    return tuple(rows)


def unknown_details(details: dict[str, Any]) -> str:
    """For staff: whatever no fact, table or picture shows, as JSON."""
    rest = {k: v for k, v in details.items()
            if k not in DRAWN_KEYS and not (_is_scalar(v) or _is_short_list(v))}
    if not rest:
        return ""
    text = json.dumps(rest, indent=1, default=str, allow_nan=True)
    return _cut(text)


def generic_table(table: Any) -> Table | None:
    """details["table"]: a title, column names and rows of cells, each cell a string or a number."""
    if not isinstance(table, dict):
        return None
    columns = tuple(_text(c) for c in _list(table.get("columns"))[:MAX_TABLE_COLUMNS])
    width = len(columns) or MAX_TABLE_COLUMNS
    rows = []
    for row in _list(table.get("rows"))[:MAX_TABLE_ROWS]:
        if isinstance(row, list):
            cells = ["" if cell is None else _cut(format_value(cell), MAX_FACT) if _is_scalar(cell) else "…"
                     for cell in row[:width]]
            rows.append(Row(tuple(cells + [""] * (len(columns) - len(cells)))))
    title = table.get("title")
    return Table(_cut(title, MAX_FACT) if isinstance(title, str) else "", columns, tuple(rows)) if rows else None


def layers_table(layers: Any) -> Table | None:
    rows = []
    for layer in _list(layers):
        if not isinstance(layer, dict):
            continue
        ok = layer.get("ok")
        status = "passed" if ok is True else "failed" if ok is False else ""
        rows.append(Row((_text(layer.get("layer", "")), _text(layer.get("expected", "")),
                         _text(layer.get("found", "")), {"passed": "yes", "failed": "no"}.get(status, "")), status))
    return Table("Layer by layer", ("layer", "expected", "found", "matches"), tuple(rows)) if rows else None


def training_table(training: Any) -> Table | None:
    if not isinstance(training, dict) or not training:
        return None
    rows = tuple(Row((str(k).replace("_", " "), format_value(v))) for k, v in training.items()
                 if v is not None and (_is_scalar(v) or _is_short_list(v)))
    return Table("Training run", ("", ""), rows) if rows else None


def relative_error_table(errors: Any, rtol: Any) -> Table | None:
    """One row per parameter, marked against the tolerance when there is one (a single number is a fact)."""
    if not isinstance(errors, dict) or not errors:
        return None
    limit = float(rtol) if _is_number(rtol) else None
    rows = []
    for name, error in errors.items():
        status = ""
        if limit is not None:
            value = _as_float(error)
            status = "passed" if value is not None and value <= limit else "failed"
        verdict = {"passed": "within tolerance", "failed": "too large"}.get(status, "")
        rows.append(Row((str(name), format_value(error), verdict), status))
    title = "Relative error" + (f" (allowed {format_value(limit)})" if limit is not None else "")
    return Table(title, ("parameter", "relative error", ""), tuple(rows))


def expected_found_table(details: dict[str, Any]) -> Table | None:
    if "expected" not in details and "found" not in details:
        return None
    expected, found = details.get("expected"), details.get("found")
    if isinstance(expected, dict) and isinstance(found, dict):
        rows = tuple(Row((str(k), format_value(expected.get(k, "—")), format_value(found.get(k, "—"))))
                     for k in dict.fromkeys([*expected, *found]))
        return Table("Expected and found", ("", "expected", "found"), rows)
    return Table("Expected and found", ("expected", "found"),
                 (Row((format_value(expected, shape=True), format_value(found, shape=True))),))


def pictures(details: dict[str, Any]) -> tuple[Picture, ...]:
    drawn = [
        (plots.curve_chart(details.get("curve")), _curve_alt(details.get("curve"))),
        (plots.field_chart(details.get("field")), _field_alt(details.get("field"))),
        (plots.series_chart(details.get("series"), details.get("series_x")),
         _series_alt(details.get("series"), details.get("series_x"))),
        (plots.scatter_chart(details.get("scatter")), "Scatter plot of predicted against actual values"),
        (plots.confusion_matrix_chart(details.get("confusion_matrix")),
         "Confusion matrix: rows are the true classes, columns the predicted ones"),
    ]
    return tuple(Picture(uri, alt) for uri, alt in drawn if uri)


def thumbnails(items: Any) -> tuple[Picture, ...]:
    shown = []
    for item in _list(items):
        if not isinstance(item, dict):
            continue
        uri = plots.thumbnail(item.get("image"))
        if uri:
            caption = f"predicted {_text(item.get('predicted', '?'))}, true {_text(item.get('true', '?'))}"
            shown.append(Picture(uri, f"Misclassified image: {caption}", caption))
        if len(shown) == MAX_THUMBNAILS:
            break
    return tuple(shown)


def _field_alt(field: Any) -> str:
    label = field.get("label") if isinstance(field, dict) else None
    shown = _text(label) if isinstance(label, str) and label else "the model's estimate"
    return f"Map of the plane: {shown} over a grid, with the data points on top"


def _curve_alt(curve: Any) -> str:
    label = curve.get("label") if isinstance(curve, dict) else None
    fit = f" and the fitted curve ({_text(label)})" if isinstance(label, str) and label else " and the fitted curve"
    return "Plot of the data points" + fit


def _series_alt(series: Any, axis: Any = None) -> str:
    names = ", ".join(str(k) for k in series) if isinstance(series, dict) else ""
    if isinstance(axis, dict):
        return f"Line chart against {_text(axis.get('label') or 'x')}: {names}"
    return f"Line charts per epoch: {names}"


# --------------------------------------------------------------------------
# Class summary


@dataclass(frozen=True)
class StudentRow:
    submission: str
    href: str
    folder: str
    status: str
    score: str
    max_score: str
    percent: float
    problems: int
    seconds: float  # 0 when the result has no timing
    total_s: str
    message: str


@dataclass(frozen=True)
class CheckRate:
    id: str
    name: str
    passed: int
    total: int
    percent: float
    mean_points: str
    max_points: str


@dataclass(frozen=True)
class SummaryPage:
    title: str
    total: int
    graded: int
    errors: int
    mean: str
    median: str
    max_score: str
    score_unit: str
    histogram: Picture | None
    rates: tuple[CheckRate, ...]
    rates_chart: Picture | None
    slowest: tuple[StudentRow, ...]
    students: tuple[StudentRow, ...]


def summary_page(entries: list[SummaryEntry], *, title: str) -> SummaryPage:
    rows = [student_row(e) for e in entries]
    graded = [e.result for e in entries if e.result.status == "graded"]
    scores, max_score, unit = comparable_scores([e.result for e in entries if e.result.has_grade])
    rates = check_rates(graded)
    histogram = plots.score_histogram(scores, max_score=max_score, unit=unit) if scores else None
    chart = plots.pass_rate_chart([(r.id, r.passed / r.total) for r in rates]) if rates else None
    timed = sorted((row for row in rows if row.seconds), key=lambda row: -row.seconds)
    return SummaryPage(
        title=title,
        total=len(entries),
        graded=len(graded),
        errors=len(entries) - len(graded),
        mean=format_points(statistics.fmean(scores)) if scores else "—",
        median=format_points(statistics.median(scores)) if scores else "—",
        max_score=format_points(max_score),
        score_unit=unit,
        histogram=Picture(histogram, "Histogram of the scores") if histogram else None,
        rates=tuple(rates),
        rates_chart=Picture(chart, "Bars: the pass rate of each check, most failed first") if chart else None,
        slowest=tuple(timed[:SLOWEST_SHOWN]),
        students=tuple(sorted(rows, key=lambda row: (row.submission.lower(), row.href))),
    )


def student_row(entry: SummaryEntry) -> StudentRow:
    result = entry.result
    total = result.timings.get("total_s")
    folder = entry.label or str(Path(entry.feedback_href).parent)
    return StudentRow(
        submission=result.submission,
        href=quote(entry.feedback_href, safe="/#"),  # "a:b" can never become a javascript: link
        folder="" if folder == "." else folder,
        status=result.status,
        score=format_points(result.score),
        max_score=format_points(result.max_score),
        percent=percent(result.score, result.max_score),
        problems=len(_list(result.execution.get("problems"))),
        seconds=float(total) if _is_number(total) and total > 0 else 0.0,
        total_s=f"{total:.1f} s" if _is_number(total) and total > 0 else "",
        message=result.message,
    )


def comparable_scores(results: list[GradeResult]) -> tuple[list[float], float, str]:
    """Scores in points when every result has the same maximum, else in percent."""
    maxima = {r.max_score for r in results}
    if len(maxima) == 1 and _is_number(next(iter(maxima))) and next(iter(maxima)) > 0:
        return [r.score for r in results if _is_number(r.score)], next(iter(maxima)), "points"
    return [percent(r.score, r.max_score) for r in results], 100.0, "%"


def check_rates(results: list[GradeResult]) -> list[CheckRate]:
    """Per check over graded submissions, the most failed first (ties keep the assignment's order)."""
    by_id: dict[str, list[CheckResult]] = {}
    for result in results:
        for check in result.checks:
            by_id.setdefault(check.id, []).append(check)
    rates = []
    for check_id, checks in by_id.items():
        passed = sum(c.status == "passed" for c in checks)
        scores = [c.score for c in checks if _is_number(c.score)]
        mean = statistics.fmean(scores) if scores else 0.0
        rates.append(CheckRate(id=check_id, name=checks[0].name, passed=passed, total=len(checks),
                               percent=100.0 * passed / len(checks), mean_points=format_points(mean),
                               max_points=format_points(max(c.max_score for c in checks))))
    return sorted(rates, key=lambda r: r.percent)  # sorted() is stable: ties stay in order


# --------------------------------------------------------------------------
# Formatting


def format_points(value: Any) -> str:
    if not _is_number(value):
        return _text(value)
    return f"{round(float(value), 2):g}"


def format_value(value: Any, *, shape: bool = False) -> str:
    """A details value as a person reads it: 4 significant digits, NaN and inf by name."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        inner = ", ".join(format_value(v) for v in value)
        return _cut(f"({inner})" if shape else f"[{inner}]")
    return _cut(value if isinstance(value, str) else str(value))


def percent(score: Any, max_score: Any) -> float:
    if not (_is_number(score) and _is_number(max_score)) or max_score <= 0:
        return 0.0
    return max(0.0, min(100.0, 100.0 * score / max_score))


def _text(value: Any) -> str:
    return format_value(value)


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + " … (cut)"


def _clean(line: Any) -> str:
    """A traceback line without terminal colour codes."""
    return ANSI_ESCAPE.sub("", _text(line)).rstrip("\n")


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _is_short_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 10 and all(
        isinstance(v, (int, float, str, bool)) for v in value)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
