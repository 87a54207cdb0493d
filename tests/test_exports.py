"""Gradebook exports (csv, canvas, moodle, junit) and the LMS identity they need, kept from intake.

Batch output directories are built from GradeResult records (no grading),
except one end-to-end `grader batch` run that proves the ids reach result.json.
Each format is read back the way its consumer reads it.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import SOLUTIONS
from grader.cli import main
from grader.intake.collect import StudentIdentity, canvas_identity, collect, moodle_identity
from grader.reports.gradebook import csv_text, read_batches, spreadsheet_cell, spreadsheet_text
from grader.results import CheckResult, GradeResult

SCHEMAS = Path(__file__).resolve().parent / "schemas"
CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_HEADER = ["Identifier", "Full name", "Grade", "Maximum grade", "Last modified (grade)", "Feedback comments"]
HOSTILE = 'bad ]]> <script>alert("x")</script> & \x00\x1b[31m\x0b\ud800 =1+1 \uffff end'

# Checks of the two assignments: (id, points)
CHECKS = {"gradient-descent": [("linear-grad", 4.0), ("fit-linear", 4.0), ("mlp-grad", 6.0)],
          "deep-mlp": [("architecture", 2.0), ("test-accuracy", 8.0)]}


def canvas(name: str, user_id: str, attachment: str = "7000001", late: bool = False) -> dict:
    return StudentIdentity(lms="canvas", name=name, user_id=user_id, submission_id=attachment, late=late).to_dict()


def moodle(name: str, participant_id: str) -> dict:
    return StudentIdentity(lms="moodle", name=name, participant_id=participant_id).to_dict()


def result(assignment: str, outcome: str, *, student: dict | None = None, message: str = "",
           statuses: list[str] | None = None) -> GradeResult:
    """A result.json as the grader writes it: `full`, `partial`, `error` (not gradable) or given statuses."""
    specs = CHECKS[assignment]
    if statuses is None:
        statuses = {"full": ["passed"] * len(specs), "error": ["error"] * len(specs),
                    "partial": ["passed"] + ["failed"] * (len(specs) - 1)}[outcome]
    checks = [CheckResult(id=cid, name=cid.replace("-", " ").title(), score=points if status == "passed" else 0.0,
                          max_score=points, status=status,
                          message=message or ("ok" if status == "passed" else f"{cid} is off by 0.5"),
                          visibility="visible")
              for (cid, points), status in zip(specs, statuses, strict=False)]
    return GradeResult(assignment=assignment, submission="hw.ipynb", submission_sha256="ab" * 32,
                       score=sum(c.score for c in checks), max_score=sum(p for _, p in specs),
                       status="error" if outcome == "error" else "graded", checks=checks,
                       timings={"total_s": 2.5}, message="not a notebook" if outcome == "error" else "",
                       student=student or {})


# folder -> (outcome, identity) for each assignment; None: the student did not submit that one.
CLASS = {
    "alice": ("full", None, "partial", None),
    "bob": ("partial", None, "full", None),
    "carol": ("error", None, None, None),
    "dave": ("skipped", None, "full", None),
    "smithjane_123456": ("full", canvas("smithjane", "123456"), "full", canvas("smithjane", "123456", "7100001")),
    "doejohn_234567": ("partial", canvas("doejohn", "234567", late=True), "partial", canvas("doejohn", "234567")),
    "leeann_345678": ("error", canvas("leeann", "345678"), "partial", canvas("leeann", "345678", late=True)),
    "Jane_Smith_4242": ("full", moodle("Jane Smith", "4242"), None, None),
    "Omer_Yilmaz_4243": ("partial", moodle("Ömer Yılmaz", "4243"), None, None),
    "HYPERLINK_4244": ("partial", moodle('=HYPERLINK("http://evil.example","x")', "4244"), None, None),
    "Plus_4245": ("full", moodle("+1 Plus", "4245"), None, None),
    "Minus_4246": ("partial", moodle("-Minus", "4246"), None, None),
    "At_4247": ("error", moodle("@At Sign", "4247"), None, None),
    "hostile": ("hostile", None, "hostile", None),
    **{f"student{c}_{900 + i}": (("full", "partial")[i % 2], canvas(f"student{c}", str(900 + i)),
                                 ("partial", "full", "error")[i % 3], canvas(f"student{c}", str(900 + i)))
       for i, c in enumerate("abcdefgh")},
}
# Moodle participant ids differ per assignment: Jane Smith is 5242 in deep-mlp, and is one row.
CLASS["Jane_Smith_5242"] = (None, None, "partial", moodle("Jane Smith", "5242"))


def write_class(root: Path) -> dict[str, Path]:
    """Two batch output directories (gradient-descent, deep-mlp) of the class above."""
    outs = {a: root / a for a in CHECKS}
    for folder, (gd, gd_id, dm, dm_id) in CLASS.items():
        for assignment, outcome, identity in (("gradient-descent", gd, gd_id), ("deep-mlp", dm, dm_id)):
            if outcome is None:
                continue
            if outcome == "skipped":
                record = result(assignment, "", student=identity,
                                statuses=["passed", "skipped"] + ["failed"] * (len(CHECKS[assignment]) - 2))
            elif outcome == "hostile":
                record = result(assignment, "partial", student=identity, message=HOSTILE)
            else:
                record = result(assignment, outcome, student=identity)
            record.write(outs[assignment] / folder / "result.json")
    return outs


@pytest.fixture
def outs(tmp_path) -> dict[str, Path]:
    return write_class(tmp_path / "grades")


def export(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["export", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- intake: LMS names --------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_name, expected", [
    ("smithjane_LATE_123456_7890123_hw3.ipynb", ("smithjane", "123456", "7890123", True)),
    ("smithjane_123456_7890123_hw3-1.ipynb", ("smithjane", "123456", "7890123", False)),
    ("late_42_43_my_notebook.ipynb", ("late", "42", "43", False)),
    # Canvas keeps every letter of any script, and hyphens and apostrophes
    ("müllerjosé_456789_1234567_hw3.ipynb", ("müllerjosé", "456789", "1234567", False)),
    ("o'brien-smithłucja_LATE_77_78_hw.ipynb", ("o'brien-smithłucja", "77", "78", True)),
])
def test_canvas_file_names_give_the_student(file_name, expected):
    identity = canvas_identity(file_name)
    assert identity is not None and identity.lms == "canvas"
    assert (identity.name, identity.user_id, identity.submission_id, identity.late) == expected


@pytest.mark.parametrize("file_name", [
    "smith_jane_123456_7890123_hw3.ipynb",  # a separator inside the name
    "SmithJane_123456_7890123_hw3.ipynb",  # capitals
    "MüllerJosé_123456_7890123_hw3.ipynb",  # capitals, in any script
    "smithjane_late_123456_7890123_hw3.ipynb",  # late, not LATE
    "smithjane_123456_hw3.ipynb",  # one id only
    "smithjane_123456_7890123.ipynb",  # no original file name
    "smithjane_123456_7890123_.ipynb",  # an empty one
    "smithjane_12a456_7890123_hw3.ipynb",  # not digits
    "smithjane_١٢٣_7890123_hw3.ipynb",  # digits, but not ASCII ones
    "hw3_123456_7890123_final.ipynb",  # a digit in the name
    "smithjane_123456_7890123_hw3.txt",  # not a notebook
    "alice.ipynb",
])
def test_names_that_only_look_like_canvas_are_plain(file_name):
    assert canvas_identity(file_name) is None


def test_moodle_folder_and_file_names_give_the_participant():
    assert moodle_identity("Jane Smith_4242_assignsubmission_file_", folder=True) == StudentIdentity(
        lms="moodle", name="Jane Smith", participant_id="4242")
    assert moodle_identity("Anne_Marie O'Neil_77_assignsubmission_file_", folder=True).name == "Anne_Marie O'Neil"
    assert moodle_identity("Jane Smith_4242_assignsubmission_file_hw3.ipynb", folder=False).participant_id == "4242"
    for folder in ("Jane Smith_4242_assignsubmission_onlinetext_", "Jane Smith_assignsubmission_file_",
                   "Jane Smith_42x_assignsubmission_file_", "_4242_assignsubmission_file_", "Eve Smith_123",
                   "Jane Smith_4242_assignsubmission_file_extra"):
        assert moodle_identity(folder, folder=True) is None, folder


def test_directory_intake_keeps_lms_ids_and_readable_unique_names(tmp_path):
    nb = "{}"
    for name in ("smithjane_123456_7890123_hw3.ipynb", "doejohn_LATE_234567_7890124_hw3-1.ipynb",
                 "smith_jane_1_2_hw.ipynb", "alice.ipynb"):
        (tmp_path / name).write_text(nb)
    for folder, notebooks in {"Jane Smith_4242_assignsubmission_file_": ["hw3.ipynb"],
                              "José García_4243_assignsubmission_file_": ["a.ipynb", "b.ipynb"],
                              "Jane Smith_4242_assignsubmission_onlinetext_": ["notes.ipynb"]}.items():
        (tmp_path / folder).mkdir()
        for notebook in notebooks:
            (tmp_path / folder / notebook).write_text(nb)
    items = {item.student: item.identity for item in collect(tmp_path, tmp_path / "staging").items}
    assert items == {
        "Jane_Smith_4242": StudentIdentity(lms="moodle", name="Jane Smith", participant_id="4242"),
        "Jane_Smith_4242_assignsubmission_onlinetext": StudentIdentity(),
        "Jos_Garc_a_4243_a": StudentIdentity(lms="moodle", name="José García", participant_id="4243"),
        "Jos_Garc_a_4243_b": StudentIdentity(lms="moodle", name="José García", participant_id="4243"),
        "alice": StudentIdentity(),
        "doejohn_234567": StudentIdentity(lms="canvas", name="doejohn", user_id="234567",
                                          submission_id="7890124", late=True),
        "smith_jane_1_2_hw": StudentIdentity(),
        "smithjane_123456": StudentIdentity(lms="canvas", name="smithjane", user_id="123456",
                                            submission_id="7890123"),
    }


def test_two_canvas_files_of_one_student_get_two_folders(tmp_path):
    (tmp_path / "smithjane_123456_7890123_hw3.ipynb").write_text("{}")
    (tmp_path / "smithjane_LATE_123456_7890125_hw3.ipynb").write_text("{}")
    items = collect(tmp_path, tmp_path / "staging").items
    assert [i.student for i in items] == ["smithjane_123456", "smithjane_123456-2"]
    assert [i.identity.late for i in items] == [False, True]


def test_result_json_round_trips_the_student():
    record = result("deep-mlp", "partial", student=canvas("smithjane", "123456", late=True))
    again = GradeResult.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record and again.student["user_id"] == "123456" and again.student["late"] is True
    old = record.to_dict()
    del old["student"]  # a result.json written before the field existed
    assert GradeResult.from_dict(old).student == {}


# --- csv ----------------------------------------------------------------------------------------------------

def test_csv_has_a_row_per_student_and_a_column_per_assignment(outs, capsys):
    status, out, err = export(capsys, str(outs["gradient-descent"]), str(outs["deep-mlp"]), "--format", "csv")
    assert status == 0
    reader = csv.DictReader(io.StringIO(out, newline=""))
    fields = ["max_score", "status", "late", "lms_submission", "sha256", "graded_at"]
    assert reader.fieldnames == ["student", "name", "lms", "user_id",
                                 "gradient-descent", *(f"gradient-descent:{f}" for f in fields),
                                 "deep-mlp", *(f"deep-mlp:{f}" for f in fields)]
    rows = {row["student"]: row for row in reader}
    assert len(rows) == len(CLASS) - 1  # Jane Smith's two Moodle folders are one student
    assert rows["alice"]["gradient-descent"] == "14" and rows["alice"]["deep-mlp"] == "2"
    assert rows["bob"]["gradient-descent"] == "4" and rows["bob"]["deep-mlp:status"] == "graded"
    assert rows["carol"]["gradient-descent"] == "0" and rows["carol"]["gradient-descent:status"] == "error"
    assert rows["carol"]["deep-mlp"] == "" and rows["carol"]["deep-mlp:status"] == ""  # did not submit
    jane = rows["Jane_Smith_4242"]
    assert (jane["lms"], jane["gradient-descent"], jane["deep-mlp"]) == ("moodle", "14", "2")
    assert (jane["gradient-descent:lms_submission"], jane["deep-mlp:lms_submission"]) == ("4242", "5242")
    doe = rows["doejohn_234567"]
    assert (doe["user_id"], doe["gradient-descent:late"], doe["deep-mlp:late"]) == ("234567", "yes", "no")
    assert doe["gradient-descent:sha256"] == "ab" * 32
    graded_at = datetime.fromisoformat(doe["gradient-descent:graded_at"])
    assert graded_at.tzinfo is not None and graded_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - graded_at).total_seconds()) < 600
    assert err == ""


def test_csv_with_checks_has_a_column_per_check(outs, capsys, tmp_path):
    target = tmp_path / "class.csv"
    status, out, _ = export(capsys, str(outs["gradient-descent"]), str(outs["deep-mlp"]), "--format", "csv",
                            "--checks", "--to", str(target))
    assert status == 0 and out == f"wrote {target}\n"
    with open(target, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        rows = {row["student"]: row for row in reader}
    assert {f"gradient-descent/{c}" for c, _ in CHECKS["gradient-descent"]} <= set(reader.fieldnames)
    assert {f"deep-mlp/{c}" for c, _ in CHECKS["deep-mlp"]} <= set(reader.fieldnames)
    assert [rows["bob"][f"gradient-descent/{c}"] for c, _ in CHECKS["gradient-descent"]] == ["4", "0", "0"]
    assert [rows["dave"][f"deep-mlp/{c}"] for c, _ in CHECKS["deep-mlp"]] == ["2", "8"]


def test_spreadsheet_formulas_in_student_text_are_neutralised_and_scores_stay_numbers(outs, capsys):
    assert [spreadsheet_text(t) for t in ("=SUM(A1)", "+1", "-2", "@x", "\tx", "plain", "")] == [
        "'=SUM(A1)", "'+1", "'-2", "'@x", "'\tx", "plain", ""]
    assert [spreadsheet_cell(v) for v in (14.0, 7.5, 0, -1.0, 1 / 3, None, True)] == [
        14, 7.5, 0, -1, 0.3333, "", "yes"]
    # past the first character too: a locale whose separator is ; would make a cell of "=1+1"
    assert [spreadsheet_text(t) for t in ("Eve;=1+1;", "a, +b", "x|@y", "line\n-z", "Smith-Jones", "a=b")] == [
        "Eve;'=1+1;", "a, '+b", "x|'@y", "line\n'-z", "Smith-Jones", "a=b"]
    assert csv_text(["name", "score"], [["Eve;=1+1;", 14.0], [None, 7.5]]) == (
        '"name","score"\r\n"Eve;\'=1+1;",14\r\n"",7.5\r\n')
    _, out, _ = export(capsys, str(outs["gradient-descent"]), "--format", "csv")
    rows = {row["student"]: row for row in csv.DictReader(io.StringIO(out, newline=""))}
    assert rows["HYPERLINK_4244"]["name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert (rows["Plus_4245"]["name"], rows["Minus_4246"]["name"], rows["At_4247"]["name"]) == (
        "'+1 Plus", "'-Minus", "'@At Sign")
    for row in rows.values():
        assert not row["name"].startswith(("=", "+", "-", "@"))
        float(row["gradient-descent"])  # a number, not text
    _, out, _ = export(capsys, str(outs["gradient-descent"]), "--format", "moodle")
    names = [row["Full name"] for row in csv.DictReader(io.StringIO(out, newline=""))]
    assert '\'=HYPERLINK("http://evil.example","x")' in names and "'-Minus" in names


# --- canvas -------------------------------------------------------------------------------------------------

def test_canvas_import_has_its_columns_and_ids_and_flags_students_without_one(outs, capsys):
    status, out, err = export(capsys, str(outs["gradient-descent"]), str(outs["deep-mlp"]), "--format", "canvas")
    assert status == 0
    reader = csv.DictReader(io.StringIO(out, newline=""))
    assert reader.fieldnames == [*CANVAS_HEADER, "gradient-descent", "deep-mlp"]
    rows = list(reader)
    by_id = {row["ID"]: row for row in rows if row["ID"]}
    assert by_id["123456"]["Student"] == "smithjane"
    assert (by_id["123456"]["gradient-descent"], by_id["123456"]["deep-mlp"]) == ("14", "10")
    assert (by_id["234567"]["gradient-descent"], by_id["234567"]["deep-mlp"]) == ("4", "2")
    assert by_id["345678"]["gradient-descent"] == "0"
    assert all(row[c] == "" for row in rows for c in ("SIS User ID", "SIS Login ID", "Section"))
    assert len(by_id) == 3 + 8
    without = {row["Student"] for row in rows if not row["ID"]}
    assert {"alice", "bob", "carol", "dave", "hostile", "Jane_Smith_4242", "HYPERLINK_4244"} <= without
    assert len(rows) == len(CLASS) - 1  # nobody dropped
    for student in without:
        assert f"grader: warning: {student}: no Canvas user id" in err
    assert "leeann_345678: gradient-descent could not be graded (status error); its score 0 is exported" in err


# --- moodle -------------------------------------------------------------------------------------------------

def test_moodle_worksheet_has_its_columns_and_participants(outs, capsys):
    status, out, err = export(capsys, str(outs["gradient-descent"]), "--format", "moodle")
    assert status == 0
    reader = csv.DictReader(io.StringIO(out, newline=""))
    assert reader.fieldnames == MOODLE_HEADER
    rows = list(reader)
    assert len(rows) == sum(1 for v in CLASS.values() if v[0] is not None)
    by_id = {row["Identifier"]: row for row in rows if row["Identifier"]}
    assert set(by_id) == {f"Participant {n}" for n in range(4242, 4248)}
    jane = by_id["Participant 4242"]
    assert (jane["Full name"], jane["Grade"], jane["Maximum grade"]) == ("Jane Smith", "14", "14")
    assert datetime.fromisoformat(jane["Last modified (grade)"]).utcoffset().total_seconds() == 0
    assert jane["Feedback comments"].startswith("Autograder: 14 / 14<br>Linear Grad: 4 / 4 (passed) ok")
    assert by_id["Participant 4243"]["Full name"] == "Ömer Yılmaz"
    hostile = next(row for row in rows if row["Full name"] == "hostile")
    assert hostile["Identifier"] == "" and "&lt;script&gt;" in hostile["Feedback comments"]
    assert "<script>" not in hostile["Feedback comments"] and "\x00" not in hostile["Feedback comments"]
    assert "grader: warning: smithjane_123456: no Moodle participant id" in err
    assert "grader: warning: alice: no Moodle participant id" in err


def test_moodle_takes_one_assignment_or_a_directory_for_several(outs, capsys, tmp_path):
    status, out, err = export(capsys, str(outs["gradient-descent"]), str(outs["deep-mlp"]), "--format", "moodle")
    assert status == 2 and out == ""
    assert err.startswith("grader: error: --format moodle takes one assignment per file") and err.count("\n") == 1
    target = tmp_path / "moodle"
    target.mkdir()
    status, out, _ = export(capsys, str(outs["gradient-descent"]), str(outs["deep-mlp"]), "--format", "moodle",
                            "--to", str(target))
    assert status == 0
    assert sorted(p.name for p in target.iterdir()) == ["deep-mlp-moodle.csv", "gradient-descent-moodle.csv"]
    with open(target / "deep-mlp-moodle.csv", newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert {row["Identifier"] for row in rows if row["Identifier"]} == {"Participant 5242"}
    assert len(rows) == sum(1 for v in CLASS.values() if v[2] is not None)


# --- junit --------------------------------------------------------------------------------------------------

def test_junit_is_valid_and_counts_every_check(outs, capsys):
    xmlschema = pytest.importorskip("xmlschema")
    status, out, _ = export(capsys, str(outs["gradient-descent"]), str(outs["deep-mlp"]), "--format", "junit")
    assert status == 0
    xmlschema.XMLSchema(SCHEMAS / "junit.xsd").validate(out)
    root = ET.fromstring(out.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert len(suites) == len(CLASS) - 1
    for suite in suites.values():
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) > 0
        assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
    for key in ("tests", "failures", "errors"):
        assert int(root.get(key)) == sum(int(s.get(key)) for s in suites.values())
    assert root.get("skipped") is None  # junit-10.xsd has it on each testsuite only
    bob = suites["bob"]
    assert [(c.get("classname"), c.get("name")) for c in bob.findall("testcase")] == [
        ("gradient-descent", "linear-grad"), ("gradient-descent", "fit-linear"), ("gradient-descent", "mlp-grad"),
        ("deep-mlp", "architecture"), ("deep-mlp", "test-accuracy")]
    failure = bob.find("testcase[@name='fit-linear']/failure")
    assert failure.get("message") == failure.text == "Fit Linear: 0/4. fit-linear is off by 0.5"
    assert suites["carol"].get("errors") == "3" and float(suites["carol"].get("time")) == 2.5
    assert suites["dave"].find("testcase[@name='fit-linear']/skipped") is not None
    props = {p.get("name"): p.get("value") for p in suites["smithjane_123456"].iter("property")}
    assert props == {"lms": "canvas", "name": "smithjane", "user_id": "123456",
                     "gradient-descent score": "14/14", "deep-mlp score": "10/10"}


def test_hostile_student_text_cannot_break_the_junit_document(outs, capsys):
    xmlschema = pytest.importorskip("xmlschema")
    _, out, _ = export(capsys, str(outs["gradient-descent"]), "--format", "junit")
    xmlschema.XMLSchema(SCHEMAS / "junit.xsd").validate(out)
    root = ET.fromstring(out.encode("utf-8"))
    failure = root.find("testsuite[@name='hostile']/testcase[@name='fit-linear']/failure")
    expected = 'Fit Linear: 0/4. bad ]]> <script>alert("x")</script> & [31m =1+1  end'
    assert failure.get("message") == expected and failure.text == expected
    assert "<script>" not in out and "\x00" not in out and "\x1b" not in out
    assert len(root.findall("testsuite/testcase/failure/script")) == 0


@pytest.mark.parametrize("breakage", [
    lambda root: root.find("testsuite/testcase").attrib.pop("classname"),
    lambda root: root.find("testsuite").set("tests", "many"),
    lambda root: root.find("testsuite/testcase").set("time", "-1"),
    lambda root: ET.SubElement(root.find("testsuite/testcase"), "verdict"),
    lambda root: root.find("testsuite").insert(0, ET.Element("testcase", name="x", classname="y")),
])
def test_the_junit_schema_rejects_what_readers_would_not_take(outs, capsys, breakage):
    xmlschema = pytest.importorskip("xmlschema")
    _, out, _ = export(capsys, str(outs["deep-mlp"]), "--format", "junit")
    root = ET.fromstring(out.encode("utf-8"))
    breakage(root)
    assert not xmlschema.XMLSchema(SCHEMAS / "junit.xsd").is_valid(ET.tostring(root, encoding="unicode"))


def test_a_result_without_checks_still_has_a_testcase():
    from grader.reports.export_junit import render
    from grader.reports.gradebook import Gradebook, Record

    empty = GradeResult(assignment="deep-mlp", submission="x.ipynb", submission_sha256="", score=0.0,
                        max_score=10.0, status="error", checks=[], message="the kernel <died>")
    text = render(Gradebook(("deep-mlp",), (Record("zed", empty, "2026-01-01T00:00:00Z"),))).text
    case = ET.fromstring(text.encode("utf-8")).find("testsuite[@name='zed']/testcase")
    assert (case.get("classname"), case.get("name"), case.find("error").get("message")) == (
        "deep-mlp", "grading", "the kernel <died>")


# --- what goes wrong ----------------------------------------------------------------------------------------

def test_unreadable_results_are_warnings_not_crashes(outs, capsys):
    directory = outs["gradient-descent"]
    (directory / "zoe").mkdir()
    (directory / "zoe" / "result.json").write_text("{ not json")
    (directory / "yan").mkdir()
    (directory / "yan" / "result.json").write_text("[1, 2]")
    broken = result("gradient-descent", "full").to_dict()
    broken["score"] = "full marks"
    (directory / "xia").mkdir()
    (directory / "xia" / "result.json").write_text(json.dumps(broken))
    (directory / "wes").mkdir()  # a folder without a result (still grading, say)
    for fmt in ("csv", "canvas", "moodle", "junit"):
        status, out, err = export(capsys, str(directory), "--format", fmt)
        assert status == 0 and "alice" in out and "zoe" not in out
        for student in ("zoe", "yan", "xia"):
            assert f"grader: warning: {directory / student / 'result.json'}: not readable, left out" in err
    assert len(read_batches([directory]).problems) == 3


@pytest.mark.parametrize("args, message", [
    (["--format", "nope"], "invalid choice: 'nope' (choose from 'csv', 'canvas', 'moodle', 'junit')"),
    (["--format", "csv", "--to", "{tmp}"], "is a directory; give a file name"),
    (["--format", "csv", "--to", "{tmp}/no/such/dir/grades.csv"], "the directory {tmp}/no/such/dir does not exist"),
])
def test_bad_format_or_target_is_a_usage_error(outs, capsys, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    status, out, err = export(capsys, str(outs["gradient-descent"]), *args)
    assert status == 2 and out == ""
    assert err.startswith("grader: error:") and message.replace("{tmp}", str(tmp_path)) in err
    assert err.count("\n") == 1 and not (tmp_path / "no").exists()


def test_a_directory_without_results_is_a_usage_error(outs, capsys, tmp_path):
    empty = tmp_path / "empty"
    (empty / "alice").mkdir(parents=True)
    for target in (empty, tmp_path / "missing"):
        status, out, err = export(capsys, str(outs["gradient-descent"]), str(target), "--format", "csv")
        assert status == 2 and out == ""
        assert err.startswith(f"grader: error: {target}:") and err.count("\n") == 1
    (empty / "alice" / "result.json").write_text("{ broken")
    status, _, err = export(capsys, str(empty), "--format", "csv")
    assert status == 2 and err.splitlines()[-1].startswith("grader: error: no readable result.json in")


# --- end to end ---------------------------------------------------------------------------------------------

def test_lms_ids_travel_from_a_batch_into_result_json_and_the_exports(tmp_path, capsys):
    submissions = tmp_path / "in"
    (submissions / "Jane Smith_4242_assignsubmission_file_").mkdir(parents=True)
    solution = SOLUTIONS / "gradient_descent.ipynb"
    shutil.copy(solution, submissions / "smithjane_LATE_123456_7890123_gradient_descent.ipynb")
    shutil.copy(solution, submissions / "Jane Smith_4242_assignsubmission_file_" / "gradient_descent.ipynb")
    out = tmp_path / "out"
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out)]) == 0
    canvas_result = json.loads((out / "smithjane_123456" / "result.json").read_text())
    assert canvas_result["score"] == 14
    assert canvas_result["student"] == {"lms": "canvas", "name": "smithjane", "user_id": "123456",
                                        "submission_id": "7890123", "participant_id": "", "late": True}
    moodle_result = json.loads((out / "Jane_Smith_4242" / "result.json").read_text())
    assert moodle_result["score"] == 14 and moodle_result["student"]["participant_id"] == "4242"
    capsys.readouterr()

    _status, text, err = export(capsys, str(out), "--format", "canvas")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [(r["Student"], r["ID"], r["gradient-descent"]) for r in rows] == [
        ("Jane_Smith_4242", "", "14"), ("smithjane", "123456", "14")]
    assert "Jane_Smith_4242: no Canvas user id" in err
    _status, text, _ = export(capsys, str(out), "--format", "moodle")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [(r["Identifier"], r["Full name"], r["Grade"]) for r in rows] == [
        ("Participant 4242", "Jane Smith", "14"), ("", "smithjane_123456", "14")]
