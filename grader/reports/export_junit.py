"""JUnit XML, for CI dashboards and test-report viewers.

<testsuites> holds a <testsuite> per student (name: the output folder; tests,
failures, errors and skipped counted; time: the grading time), with the
student's LMS ids and scores as <properties>, and a <testcase> per check
(classname: the assignment id, name: the check id, time 0). A failed check
has a <failure>, an error an <error>, a skipped check <skipped/>, each with
the message a student may see (a hidden check's hint). A result with no
checks at all gets one `grading` testcase carrying its status.

Everything goes through ElementTree, which escapes markup, after characters
that XML 1.0 forbids are removed: student text cannot break the document.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from grader.reports.gradebook import Export, ExportFormat, Gradebook, StudentRow, printable, student_checks

OUTCOME_ELEMENT = {"failed": "failure", "error": "error", "skipped": "skipped"}
COUNTED = ("tests", "failures", "errors", "skipped")


def render(book: Gradebook, *, checks: bool = False) -> Export:
    rows, warnings = book.rows()
    root = ET.Element("testsuites", name="grader")
    for row in rows:
        root.append(_suite(row, book.assignments))
    _sum_into(root, root.findall("testsuite"))
    ET.indent(root)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    return Export(text, tuple(warnings))


def _suite(row: StudentRow, assignments: tuple[str, ...]) -> ET.Element:
    suite = ET.Element("testsuite", name=printable(row.student))
    properties = ET.SubElement(suite, "properties")
    for key, value in (("lms", row.lms), ("name", row.name if row.lms else ""), ("user_id", row.user_id)):
        if value:
            ET.SubElement(properties, "property", name=key, value=printable(value))
    counts = dict.fromkeys(COUNTED, 0)
    seconds = 0.0
    for assignment in (a for a in assignments if a in row.records):
        record = row.records[assignment]
        result = record.result
        ET.SubElement(properties, "property", name=f"{printable(assignment)} score",
                      value=f"{result.score:g}/{result.max_score:g}")
        seconds += _seconds(result.timings)
        lines = student_checks(result)
        if not lines:
            status = "passed" if result.status == "graded" else "error"
            message = printable(result.message) or f"status {printable(result.status)}"
            _case(suite, assignment, "grading", status, message)
            _count(counts, status)
        for line in lines:
            _case(suite, assignment, line.id, line.status, f"{line.name}: {line.score:g}/{line.max_score:g}. "
                                                           f"{line.text}".strip())
            _count(counts, line.status)
    if len(properties) == 0:
        suite.remove(properties)
    suite.set("time", f"{seconds:.3f}")
    for key, count in counts.items():
        suite.set(key, str(count))
    return suite


def _case(suite: ET.Element, assignment: str, check_id: str, status: str, message: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=printable(assignment) or "(no assignment id)",
                         name=check_id or "(no check id)", time="0")
    tag = OUTCOME_ELEMENT.get(status)
    if status not in ("passed", *OUTCOME_ELEMENT):
        tag = "error"  # an unknown status is not a pass
        message = f"unknown status {status!r}: {message}"
    if tag is None:
        return
    outcome = ET.SubElement(case, tag, message=message)
    if tag != "skipped":
        outcome.set("type", status)
        outcome.text = message


def _count(counts: dict[str, int], status: str) -> None:
    counts["tests"] += 1
    key = {"failed": "failures", "skipped": "skipped", "passed": ""}.get(status, "errors")
    if key:
        counts[key] += 1


def _seconds(timings: object) -> float:
    value = timings.get("total_s", 0.0) if isinstance(timings, dict) else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return 0.0
    return float(value)


def _sum_into(root: ET.Element, suites: list[ET.Element]) -> None:
    # junit-10.xsd, which most readers follow, allows tests, failures, errors (and disabled) on <testsuites>,
    # not skipped: that count stays on each <testsuite>
    for key in (k for k in COUNTED if k != "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    root.set("time", f"{sum(float(s.get('time', '0')) for s in suites):.3f}")


FORMAT = ExportFormat(name="junit", help="JUnit XML: a testsuite per student, a testcase per check",
                      render=render, suffix=".xml")
