"""HTML feedback and class summaries: what students may see, escaping, charts, and a real browser.

Most tests build GradeResult objects directly (no kernel). The result.json files
under fixtures/reports/ are real grader output for the gradient-descent
assignment. The Chromium test opens the rendered pages offline and saves
screenshots under its tmp_path.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from grader.errors import HarnessError
from grader.reports import html as reports_html
from grader.reports import plots
from grader.reports.html import (
    SummaryEntry,
    render_class_summary,
    render_feedback,
    templates_dir,
    write_class_summary,
    write_feedback,
)
from grader.results import CheckResult, GradeResult

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
SECRET_MESSAGE = "the secret expected gradient is 7.25 at x=0.5"
SECRET_NUMBER = 123.456789
DATA_URI = re.compile(r'src="(data:image/png;base64,[A-Za-z0-9+/=]+)"')
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --------------------------------------------------------------------------
# Results made here


def make_check(**fields) -> CheckResult:
    base = dict(id="a-check", name="A check", score=1.0, max_score=1.0, status="passed",
                message="all good", visibility="visible", details={}, hint="")
    return CheckResult(**{**base, **fields})


def make_result(checks: list[CheckResult], **fields) -> GradeResult:
    base = dict(
        assignment="deep-mlp", submission="alice.ipynb", submission_sha256="ab" * 32,
        score=sum(c.score for c in checks), max_score=sum(c.max_score for c in checks) or 10.0,
        status="graded", checks=checks,
        environment={"grader": "0.1.0", "python": "3.11.7", "torch": "2.14.1", "device": "cpu", "seed": 2024,
                     "sandbox": {"isolation": "bwrap", "network": "isolated", "user": "nobody",
                                 "memory": "2048 MB", "notes": ["no cgroup for cpu"]}},
        timings={"execute_s": 3.2, "train_s": 20.1, "total_s": 24.75},
        execution={"cells_run": 12, "demo_cells_skipped": [4], "kernel_restarts": 0,
                   "budget_exhausted": False, "problems": [], "warnings": []},
    )
    return GradeResult(**{**base, **fields})


def digit(seed: int) -> list[list[int]]:
    """A 28 x 28 blob that looks enough like a handwritten stroke for a thumbnail."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    cy, cx, r = rng.uniform(11, 17), rng.uniform(11, 17), rng.uniform(5, 9)
    ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < 1.6
    return (ring * 255).astype(int).tolist()


def hidden_failed_check() -> CheckResult:
    return make_check(
        id="gradient-at-hidden-points", name="gradient at points you never see", score=0.0, max_score=2.0,
        status="failed", visibility="hidden", message=SECRET_MESSAGE,
        details={"expected": [SECRET_NUMBER, 1.5], "found": [0.0, 1.5], "probe_points": {"x": [0.123987]},
                 "relative_error": {"a": 4.25, "b": 0.0}, "rtol": 1e-5},
        hint="Mind the factor 2 in the derivative of a square.")


def layer(name: str, expected: str, found: str) -> dict:
    return {"layer": name, "expected": expected, "found": found, "ok": expected == found}


def rich_result() -> GradeResult:
    """Every details key results.py documents, as a deep-mlp-like result would carry them."""
    labels = [str(i) for i in range(10)]
    matrix = (np.eye(10, dtype=int) * 95 + np.random.default_rng(0).integers(0, 4, (10, 10))).tolist()
    rng = np.random.default_rng(1)
    actual = rng.uniform(0.5, 5.0, 300)
    checks = [
        make_check(id="architecture", name="784 → 1500 → 10 fully connected", score=2.0, max_score=2.0,
                   message="build_model() has the expected layers (1,192,510 parameters)",
                   details={"n_params": 1192510, "input_shape": [64, 784],
                            "layers": [layer("0: Linear", "784 → 1500", "784 → 1500"),
                                       layer("1: ReLU", "ReLU", "ReLU"),
                                       layer("2: Linear", "1500 → 10", "1500 → 10")]}),
        make_check(id="test-accuracy", name="test accuracy above 93 %", score=2.5, max_score=5.0, status="failed",
                   message="test accuracy 91.2 % after 5 epochs; 93 % earns full marks",
                   details={"series": {"train_loss": [0.61, 0.32, 0.25, 0.21, 0.19],
                                       "test_accuracy": [0.86, 0.89, 0.90, 0.91, 0.912]},
                            "confusion_matrix": {"labels": labels, "matrix": matrix},
                            "misclassified": [{"image": digit(i), "predicted": str(i), "true": str(i + 3)}
                                              for i in range(6)],
                            "training": {"epochs": 5, "steps": 4690, "final_loss": 0.19, "test_accuracy": 0.912,
                                         "wall_s": 18.4, "device": "cpu"}}),
        make_check(id="regression-mse", name="beats linear regression", score=3.0, max_score=3.0,
                   message="test MSE 0.29 beats linear regression (0.53)",
                   details={"scatter": {"x": actual.tolist(), "y": (actual + rng.normal(0, 0.4, 300)).tolist(),
                                        "x_label": "actual (100k$)", "y_label": "predicted (100k$)",
                                        "diagonal": True},
                            "table": {"title": "Test set: your network and the baselines",
                                      "columns": ["model", "test MSE", "parameters"],
                                      "rows": [["your network", 0.29583, "4,801"],
                                               ["linear regression", 0.5370, "9 coefficients"]]},
                            "expected": [64, 1], "found": [64, 1]}),
    ]
    return make_result(checks, submission="rich.ipynb")


def failing_result() -> GradeResult:
    """Execution problems, a hidden failed check, warnings, and student text trying to be HTML."""
    checks = [
        hidden_failed_check(),
        make_check(id="hidden-no-hint", name="another hidden check", score=0.0, max_score=1.0, status="failed",
                   visibility="hidden", message="secret: 99.125", details={"expected": 99.125}),
        make_check(id="fit", name="fit_linear recovers a line", score=0.0, max_score=2.0, status="error",
                   message=f"fit_linear raised ValueError: {SCRIPT}",
                   details={"traceback": [f"cell 4, line 2, in fit_linear\n    raise ValueError('{SCRIPT}')\n"]}),
    ]
    problems = [
        {"cell_index": 2, "kind": "timeout", "message": "cell 3 (while True: pass) ran longer than 60 s",
         "source": "while True: pass", "error_name": "", "traceback": []},
        {"cell_index": 3, "kind": "exception", "message": f"cell 4 raised ValueError: {SCRIPT}",
         "source": f"def helper(v):\n    raise ValueError('{SCRIPT}')\nhelper(2)", "error_name": "ValueError",
         "traceback": ["\x1b[0;31mValueError\x1b[0m   Traceback (most recent call last)",
                       f"cell 4, line 2, in helper(v)\n----> 2     raise ValueError('{SCRIPT}')\n",
                       f"ValueError: {SCRIPT}"]},
    ]
    return make_result(checks, submission=f"bob{SCRIPT}.ipynb",
                       execution={"cells_run": 5, "problems": problems, "demo_cells_skipped": [],
                                  "warnings": [f"notebook format 3 converted {SCRIPT}"]})


def fixture(name: str) -> GradeResult:
    return GradeResult.read(FIXTURES / f"{name}.result.json")


def class_of_six() -> list[SummaryEntry]:
    """Real gradient-descent results under six students' names, one of them not a notebook."""
    solution = fixture("gradient-descent-full-marks")
    template = fixture("gradient-descent-unimplemented")
    mixed = fixture("gradient-descent-sign-error-timeout-script-in-message")
    broken = fixture("not-a-notebook")
    partial = dataclasses.replace(mixed, score=12.0, checks=[
        dataclasses.replace(c, status="passed", score=c.max_score) if c.id == "fit-linear" else c
        for c in mixed.checks], timings={"total_s": 95.5})
    people = [("alice", solution), ("bob", template), ("carol", mixed), ("dave", broken), ("erin", partial),
              ("frank", dataclasses.replace(solution, timings={"total_s": 120.25}))]
    return [SummaryEntry(result=dataclasses.replace(result, submission=f"{name}.ipynb"),
                         feedback_href=f"{name}/feedback.html") for name, result in people]


def png_uris(page: str) -> list[str]:
    return DATA_URI.findall(page)


def assert_valid_pngs(page: str) -> None:
    for uri in png_uris(page):
        assert base64.b64decode(uri.split(",", 1)[1]).startswith(PNG_SIGNATURE)


def assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(https?:)?//', page), "a page must load nothing from elsewhere"
    assert "<link rel=\"stylesheet\"" not in page


# --------------------------------------------------------------------------
# Hidden checks


def test_a_hidden_failed_check_shows_students_only_its_name_status_points_and_hint():
    page = render_feedback(failing_result(), audience="student")

    assert "gradient at points you never see" in page
    assert "0 / 2" in page
    assert "Mind the factor 2 in the derivative of a square." in page
    for secret in (SECRET_MESSAGE, "123.456789", "123.5", "0.123987", "probe_points", "4.25", "99.125", "secret"):
        assert secret not in page, secret


def test_staff_see_everything_a_hidden_check_holds_and_that_it_is_hidden():
    page = render_feedback(failing_result(), audience="staff")

    assert SECRET_MESSAGE in page
    assert "123.5" in page  # the expected value, as the table formats it
    assert "0.123987" in page  # the inputs, in the staff-only details
    assert "4.25" in page and "too large" in page
    assert "99.125" in page
    assert "hidden check" in page
    assert "Staff view" in page


def test_a_hidden_check_without_a_hint_gets_the_generic_one():
    page = render_feedback(failing_result(), audience="student")

    assert reports_html.HIDDEN_HINT_FALLBACK in page


def test_a_passed_hidden_check_needs_no_hint():
    check = make_check(visibility="hidden", hint="very specific hint", message="passed with 3.14159")
    page = render_feedback(make_result([check]), audience="student")

    assert "very specific hint" not in page
    assert "3.14159" not in page
    assert "passed" in page


def test_an_unknown_audience_is_refused():
    with pytest.raises(ValueError, match="audience"):
        render_feedback(failing_result(), audience="teacher")


# --------------------------------------------------------------------------
# Escaping


@pytest.mark.parametrize("audience", ["student", "staff"])
def test_student_text_is_shown_as_text_never_as_html(audience):
    page = render_feedback(failing_result(), audience=audience)

    assert "<script" not in page.lower()
    assert ESCAPED_SCRIPT in page
    assert f"bob{ESCAPED_SCRIPT}.ipynb" in page  # the submission's own name
    assert f"raise ValueError(&#39;{ESCAPED_SCRIPT}&#39;)" in page  # cell source and traceback
    assert f"notebook format 3 converted {ESCAPED_SCRIPT}" in page  # a warning
    assert "\x1b" not in page  # terminal colour codes are dropped from tracebacks


def test_every_text_field_of_a_check_is_escaped():
    evil = make_check(id=f"id{SCRIPT}", name=f"name{SCRIPT}", status="failed", score=0.0, message=f"msg{SCRIPT}",
                      details={f"key{SCRIPT}": f"value{SCRIPT}",
                               "layers": [{"layer": SCRIPT, "expected": SCRIPT, "found": SCRIPT, "ok": False}],
                               "misclassified": [{"image": digit(0), "predicted": SCRIPT, "true": SCRIPT}],
                               "relative_error": {SCRIPT: 1.0}, "expected": {SCRIPT: SCRIPT},
                               "training": {SCRIPT: SCRIPT}, "nested": {"deep": [SCRIPT]}})
    for audience in ("student", "staff"):
        page = render_feedback(make_result([evil], message=SCRIPT, assignment=SCRIPT), audience=audience)
        assert "<script" not in page.lower()
        assert page.count(ESCAPED_SCRIPT) >= 10


def test_the_class_summary_escapes_names_and_cannot_be_given_a_script_link():
    result = make_result([make_check()], submission=f"eve{SCRIPT}.ipynb", status="error", message=SCRIPT)
    page = render_class_summary([SummaryEntry(result, "javascript:alert(1)")], title=f"Class {SCRIPT}")

    assert "<script" not in page.lower()
    assert f"eve{ESCAPED_SCRIPT}.ipynb" in page
    assert 'href="javascript:' not in page
    assert 'href="javascript%3Aalert%281%29"' in page


def test_the_real_result_with_a_script_in_an_exception_message_renders_escaped():
    result = fixture("gradient-descent-sign-error-timeout-script-in-message")
    for audience in ("student", "staff"):
        page = render_feedback(result, audience=audience)
        assert "<script" not in page.lower()
        assert ESCAPED_SCRIPT in page
        assert "Cell 3 ran out of time" in page  # cell_index 2, counted from 1 as the message does
        assert "Cell 4 raised an exception: ValueError" in page


# --------------------------------------------------------------------------
# Unusual results


def test_a_file_that_was_not_a_notebook_renders_with_its_message():
    page = render_feedback(fixture("not-a-notebook"), audience="student")

    assert "This file could not be graded." in page
    assert "bad.ipynb is not a notebook: invalid JSON at line 1, column 1" in page
    assert "no sandbox was started" in page
    assert '0 <span class="of">/ 14 points' in page
    assert "Differentiate mean" not in page  # hints of hidden checks would mislead when nothing ran


def test_a_result_with_nothing_in_it_renders():
    bare = GradeResult(assignment="x", submission="y.ipynb", submission_sha256="", score=0.0, max_score=0.0,
                       status="error", checks=[])
    page = render_feedback(bare)
    assert "No checks were run." in page
    assert "y.ipynb" in page


MALFORMED_DETAILS = [
    {"series": {"train_loss": [math.nan, math.inf, -math.inf], "acc": "high", "empty": [], "none": None}},
    {"series": {"loss": [1e308, -1e308, 1.0, "2"]}},
    {"series": [1, 2, 3]},
    {"series": {"loss": [[1, 2], [3]]}},
    {"confusion_matrix": {"labels": ["a", "b"], "matrix": [[1, 2]]}},
    {"confusion_matrix": {"labels": "ab", "matrix": [[1, "x"], [3, 4]]}},
    {"confusion_matrix": {"labels": ["$x^$", "b"], "matrix": [[math.nan, 1], [math.inf, 2]]}},
    {"confusion_matrix": []},
    {"misclassified": [{"image": "not an image"}, {"image": [[1, 2], [3]]}, {"image": []}, 7, None]},
    {"misclassified": [{"image": [[math.nan] * 28] * 28, "predicted": None}]},
    {"misclassified": {"image": digit(0)}},
    {"scatter": {"x": [1, 2, 3], "y": [1, 2]}},
    {"scatter": {"x": [], "y": [], "diagonal": True}},
    {"scatter": {"x": [math.nan, 1e300], "y": [1e300, math.inf], "diagonal": True, "x_label": 5}},
    {"curve": {"data_x": [1.0], "data_y": [math.nan], "fit_x": "x", "fit_y": None}},
    {"curve": {"data_x": [0, 1], "data_y": [0, 1], "fit_x": [0, 1], "fit_y": [1e52, -1e52], "label": "$\\frac$"}},
    {"curve": {"fit_x": [0, 1, 2], "fit_y": [math.inf, math.inf, math.inf]}},
    {"layers": [{"layer": 1}, "Linear", None, {"ok": "maybe"}]},
    {"layers": "Linear"},
    {"training": {"epochs": "five", "final_loss": math.nan, "nested": {"a": 1}}},
    {"training": [1, 2]},
    {"traceback": "not a list"},
    {"traceback": [None, 3, {"frame": 1}]},
    {"relative_error": {"a": "inf", "b": math.nan, "c": None, "d": [1, 2]}, "rtol": "tight"},
    {"relative_error": "inf", "rtol": 1e-5},
    {"relative_error": math.nan},
    {"expected": None, "found": {"a": [1, 2]}},
    {"table": {"title": 7, "columns": "abc", "rows": [[1, 2], "row", None, [[1], {"a": 1}, math.nan]]}},
    {"table": {"columns": [None, {"x": 1}], "rows": [[math.inf] * 50] * 500}},
    {"table": [["a", "b"]]},
    {"huge": "x" * 200_000, "many": list(range(10_000)), "nan": math.nan, "inf": -math.inf, "none": None},
]


@pytest.mark.parametrize("details", MALFORMED_DETAILS, ids=lambda d: ",".join(d))
@pytest.mark.parametrize("audience", ["student", "staff"])
def test_malformed_details_never_break_a_page(details, audience):
    check = make_check(status="failed", score=0.0, details=details)
    page = render_feedback(make_result([check]), audience=audience)

    assert "A check" in page
    assert_valid_pngs(page)


def test_details_that_are_not_a_dict_and_execution_that_is_odd_still_render():
    check = make_check(details=["not", "a", "dict"])  # type: ignore[arg-type]
    odd = make_result([check], execution={"problems": [{"kind": "kernel-died"}, "text", None],
                                          "warnings": "not a list", "demo_cells_skipped": [1, "x"]},
                      timings={"total_s": math.nan}, environment={"sandbox": "none"})
    page = render_feedback(odd, audience="staff")
    assert "crashed the kernel" in page


@pytest.mark.parametrize("draw, data", [
    (plots.series_chart, {"loss": [math.nan] * 5}),
    (plots.series_chart, {}),
    (plots.confusion_matrix_chart, {"labels": [], "matrix": []}),
    (plots.scatter_chart, {"x": ["a"], "y": ["b"]}),
    (plots.curve_chart, {"data_x": [], "data_y": []}),
    (plots.thumbnail, [[1] * 1000] * 1000),
    (plots.thumbnail, [1, 2, 3]),
])
def test_unusable_chart_data_draws_nothing(draw, data):
    assert draw(data) is None


def test_a_chart_that_fails_to_draw_is_left_out_not_raised(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("matplotlib had a bad day")

    monkeypatch.setattr(plots, "_figure", explode)
    assert plots.series_chart({"loss": [1.0, 0.5]}) is None


# --------------------------------------------------------------------------
# Charts and tables


def test_every_documented_details_key_is_drawn_as_an_embedded_png():
    page = render_feedback(rich_result(), audience="student")

    uris = png_uris(page)
    # curve is absent here; series, scatter, confusion matrix, and six misclassified thumbnails
    assert len(uris) == 3 + 6
    assert_valid_pngs(page)
    assert "predicted 0, true 3" in page
    assert "Layer by layer" in page and "1500 → 10" in page
    assert "Training run" in page and "4690" in page
    assert "Expected and found" in page and "(64, 1)" in page
    assert "input_shape" in page and "(64, 784)" in page
    assert "Test set: your network and the baselines" in page and "9 coefficients" in page
    assert_self_contained(page)


def test_a_generic_table_shows_its_title_columns_and_cells_as_escaped_text():
    details = {"table": {"title": f"Models {SCRIPT}",
                         "columns": ["model", "test MSE", f"note {SCRIPT}"],
                         "rows": [["your network", 0.295834, f"{SCRIPT}"],
                                  ["linear regression", 0.53697, True, "an extra cell is dropped"],
                                  ["random forest", math.nan],
                                  ["a list cell", [1, 2], None]]}}
    page = render_feedback(make_result([make_check(details=details)]), audience="staff")

    assert "<script" not in page.lower()
    table = page[page.index(f"<caption>Models {ESCAPED_SCRIPT}</caption>"):]
    table = table[:table.index("</table>")]
    assert [h for h in re.findall(r"<th scope=\"col\">(.*?)</th>", table)] == \
        ["model", "test MSE", f"note {ESCAPED_SCRIPT}"]
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]
    assert rows == [["your network", "0.2958", ESCAPED_SCRIPT],
                    ["linear regression", "0.537", "yes"],
                    ["random forest", "NaN", ""],
                    ["a list cell", "…", ""]]
    assert "table" not in reports_html.unknown_details(details)  # drawn, so not repeated as raw JSON for staff


def test_the_fitted_curve_of_the_real_result_is_drawn_and_pages_stay_small():
    result = fixture("gradient-descent-full-marks")
    page = render_feedback(result)

    assert len(png_uris(page)) == 2  # fit-linear and fit-mlp
    assert len(page.encode()) < 500_000
    assert "2.98" in page  # fit_linear's a, as a fact


def test_charts_are_drawn_only_from_data_that_is_there():
    page = render_feedback(make_result([make_check(details={"a": 1.0})]))
    assert png_uris(page) == []


def test_relative_errors_per_parameter_are_marked_against_the_tolerance():
    check = make_check(status="failed", score=0.0,
                       details={"relative_error": {"a1": 1e-9, "b1": 0.5, "a2": "inf"}, "rtol": 1e-5})
    page = render_feedback(make_result([check]))
    table = page[page.index("Relative error"):]
    assert "allowed 1e-05" in table
    assert table.count("within tolerance") == 1
    assert table.count("too large") == 2


def test_the_footer_names_the_environment_and_the_sandbox():
    page = render_feedback(make_result([make_check()]))
    for text in ("0.1.0", "cpu", "2024", "2.14.1", "24.8 s", "bwrap", "isolated", "nobody", "no cgroup for cpu"):
        assert text in page, text


# --------------------------------------------------------------------------
# Files and templates


def test_feedback_files_are_written_next_to_the_result(tmp_path):
    result = failing_result()
    student = write_feedback(result, tmp_path / "bob")
    staff = write_feedback(result, tmp_path / "bob", audience="staff")

    assert student == tmp_path / "bob" / "feedback.html"
    assert staff == tmp_path / "bob" / "feedback-staff.html"
    assert SECRET_MESSAGE not in student.read_text(encoding="utf-8")
    assert SECRET_MESSAGE in staff.read_text(encoding="utf-8")


def test_templates_come_from_the_repository_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("GRADER_TEMPLATES", raising=False)
    assert templates_dir() == Path(__file__).resolve().parent.parent / "templates"
    assert (templates_dir() / "feedback.html.j2").is_file()

    (tmp_path / "feedback.html.j2").write_text("custom {{ page.submission }}")
    monkeypatch.setenv("GRADER_TEMPLATES", str(tmp_path))
    assert templates_dir() == tmp_path
    assert render_feedback(failing_result()) == f"custom bob{ESCAPED_SCRIPT}.ipynb"


def test_missing_templates_are_a_harness_error_that_names_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_TEMPLATES", str(tmp_path / "nowhere"))
    with pytest.raises(HarnessError, match="nowhere"):
        render_feedback(failing_result())


# --------------------------------------------------------------------------
# Class summary


def test_the_summary_links_every_submission_with_its_score_and_status():
    page = render_class_summary(class_of_six(), title="Gradient descent, autumn")

    for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
        assert f'href="{name}/feedback.html">{name}.ipynb</a>' in page
    assert "could not be graded" in page  # dave's file was not a notebook
    assert "bad.ipynb is not a notebook" in page
    assert "14 / 14" in page and "0 / 14" in page and "12 / 14" in page
    assert len(png_uris(page)) == 2  # the score histogram and the pass-rate bars
    assert_valid_pngs(page)
    assert_self_contained(page)


def test_the_summary_puts_the_most_failed_check_first():
    page = render_class_summary(class_of_six(), title="t")
    rates = reports_html.check_rates([e.result for e in class_of_six() if e.result.status != "error"])

    assert [r.percent for r in rates] == sorted(r.percent for r in rates)
    assert rates[0].id == "linear-grad"  # failed by bob, carol and erin: 2 of 5 pass
    assert (rates[0].passed, rates[0].total) == (2, 5)
    section = page[page.index("Checks, most failed first"):page.index("Slowest submissions")]
    positions = [section.index(f'<span class="check-id">{r.id}</span>') for r in rates]
    assert positions == sorted(positions)


def test_the_summary_shows_the_slowest_submissions_first():
    page = render_class_summary(class_of_six(), title="t")
    slowest = page[page.index("Slowest submissions"):page.index("Every submission")]

    assert slowest.index("frank.ipynb") < slowest.index("erin.ipynb") < slowest.index("carol.ipynb")
    assert "120.2 s" in slowest or "120.3 s" in slowest
    assert "dave.ipynb" not in slowest  # never ran, so never slow


def test_an_empty_class_renders(tmp_path):
    path = write_class_summary([], tmp_path / "summary.html", title="Nobody yet")
    text = path.read_text(encoding="utf-8")
    assert "Nobody yet" in text and "No submissions." in text


def test_classes_with_different_maxima_are_compared_in_percent():
    entries = [SummaryEntry(make_result([make_check(score=1.0, max_score=2.0)]), "a/feedback.html"),
               SummaryEntry(make_result([make_check(score=5.0, max_score=10.0)], submission="b.ipynb"),
                            "b/feedback.html")]
    page = reports_html.summary_page(entries, title="t")
    assert page.score_unit == "%"
    assert page.mean == "50"


# --------------------------------------------------------------------------
# A real browser


def _open_and_screenshot(driver, page: Path, screenshot: Path, *, width: int = 1280) -> dict:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.get_log("browser"), driver.get_log("performance")  # start each page with empty logs
    driver.get(page.as_uri())
    state = driver.execute_script(
        "return {height: document.documentElement.scrollHeight,"
        " scrollWidth: document.documentElement.scrollWidth,"
        " scripts: document.scripts.length,"
        " images: document.images.length,"
        " broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,"
        " narrowest_cell: Math.min(9999, ...Array.from(document.querySelectorAll('table.checks td'))"
        "   .filter(c => c.textContent.trim().length > 20).map(c => c.getBoundingClientRect().width))}")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": min(state["height"], 16000), "deviceScaleFactor": 1,
                            "mobile": False})
    driver.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
    state["console"] = driver.get_log("browser")
    state["requests"] = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                         for e in driver.get_log("performance")
                         if '"Network.requestWillBeSent"' in e["message"]]
    return state


def test_pages_load_in_chromium_without_errors_or_outside_resources(chrome, tmp_path):
    pages = {
        "full-marks": write_feedback(fixture("gradient-descent-full-marks"), tmp_path / "full-marks"),
        "failing-student": write_feedback(fixture("gradient-descent-sign-error-timeout-script-in-message"),
                                          tmp_path / "failing"),
        "failing-staff": write_feedback(failing_result(), tmp_path / "failing", audience="staff"),
        "rich-student": write_feedback(rich_result(), tmp_path / "rich"),
        "not-a-notebook": write_feedback(fixture("not-a-notebook"), tmp_path / "broken"),
        "class-summary": write_class_summary(class_of_six(), tmp_path / "summary.html", title="Gradient descent"),
    }
    # a laptop, and a phone (390 px), where most students open their feedback
    for width in (1280, 390):
        for name, page in pages.items():
            shot = tmp_path / f"{name}-{width}.png"
            state = _open_and_screenshot(chrome, page, shot, width=width)

            assert state["console"] == [], f"{name}: console messages {state['console']}"
            assert state["scripts"] == 0, name
            assert state["broken"] == 0, f"{name}: {state['broken']} of {state['images']} images did not load"
            outside = [url for url in state["requests"] if not url.startswith(("file:", "data:"))]
            assert outside == [], f"{name} asked for {outside}"
            assert state["scrollWidth"] <= width, f"{name} is {state['scrollWidth']} px wide at {width} px"
            assert state["narrowest_cell"] >= min(120, width // 4), \
                f"{name}: a column {state['narrowest_cell']} px wide"
            assert shot.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("labels", [
    ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven", "8 - eight",
     "9 - nine"],
    ["I: x1>0, x2>0", "II: x1<0, x2>0", "III: x1<0, x2<0", "IV: x1>0, x2<0"],
])
def test_confusion_matrix_tick_labels_neither_overlap_nor_leave_the_figure(labels, monkeypatch):
    from grader.reports import plots

    drawn = []
    monkeypatch.setattr(plots, "_data_uri", lambda figure: drawn.append(figure) or "data:")
    n = len(labels)
    assert plots.confusion_matrix_chart({"labels": labels, "matrix": [[1] * n for _ in range(n)]}) == "data:"
    figure = drawn[0]
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    bounds = figure.bbox
    for axis in ("x", "y"):
        ticks = getattr(figure.axes[0], f"get_{axis}ticklabels")()
        boxes = [t.get_window_extent(renderer) for t in ticks]
        assert [t.get_text() for t in ticks] == labels  # nothing cut off
        for box in boxes:
            assert bounds.x0 - 1 <= box.x0 and box.x1 <= bounds.x1 + 1 and bounds.y0 - 1 <= box.y0, axis
        for first, second in itertools.pairwise(boxes):
            assert not first.overlaps(second), (axis, labels)


@pytest.mark.parametrize("series", [
    {"train_loss": [0.55, 0.21, 0.13, 0.09], "train_accuracy": [0.84, 0.94, 0.96, 0.97],
     "test_accuracy": [0.9166, 0.929, 0.943, 0.9601]},
    {"loss": [-0.0025, -0.0013, 0.0007, 0.0031], "big": [3e10, 2e10, 1e10, 5e9], "offset": [1234567, 1234568, 1234570],
     "tiny": [1e-7, 3e-7, 2e-7]},
    {"hundreds": [-150.5, 210.2, 990.1, 1500.0], "steps": list(range(0, 40_000, 1000))},
])
def test_per_epoch_charts_side_by_side_keep_their_labels_inside_their_own_room(series, monkeypatch):
    """Fixed margins (not a layout that measures every label): each chart's tick labels and title stay inside
    the figure and clear of the chart beside it, whatever the numbers."""
    from grader.reports import plots

    drawn = []
    monkeypatch.setattr(plots, "_data_uri", lambda figure: drawn.append(figure) or "data:")
    assert plots.series_chart(series) == "data:"
    figure = drawn[0]
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    bounds = figure.bbox
    previous_right = bounds.x0
    for axes in figure.axes:
        drawn_box = axes.get_tightbbox(renderer)  # its ticks' labels, offset, title and axis labels as drawn
        assert previous_right - 1 <= drawn_box.x0 and drawn_box.x1 <= bounds.x1 + 1, axes.get_title()
        assert bounds.y0 - 1 <= drawn_box.y0 and drawn_box.y1 <= bounds.y1 + 1, axes.get_title()
        previous_right = axes.get_window_extent(renderer).x1


def test_a_template_s_one_traceback_is_shown_once_and_pointed_to_from_the_other_checks(tmp_path):
    traceback = ["Cell 3, line 2", "NotImplementedError: linear_grad"]
    checks = [make_check(id=f"c{i}", name=f"Check {i}", score=0.0, status="failed", message="not implemented",
                         details={"traceback": traceback}) for i in range(3)]
    page = write_feedback(make_result(checks), tmp_path).read_text()
    assert page.count("NotImplementedError: linear_grad") == 1
    assert page.count("Traceback: the same as at “Check 0” above") == 2
