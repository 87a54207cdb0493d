"""Grading a class: intake from directories and zips, parallel jobs, resuming."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import pytest

from conftest import SOLUTIONS, TEMPLATES
from grader.cli import main
from grader.intake.collect import collect, extract_zip


def _zip(path, members: dict[str, bytes], links: dict[str, str] = {}):  # noqa: B006 - read only
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_zip_members_that_escape_or_link_are_refused(tmp_path):
    notebook = (SOLUTIONS / "gradient_descent.ipynb").read_bytes()
    archive = _zip(tmp_path / "export.zip",
                   {"alice/hw.ipynb": notebook, "../evil.ipynb": notebook, "/etc/cron.d/evil.ipynb": notebook,
                    "bob/../../escape.ipynb": notebook, "notes.txt": b"ignored"},
                   links={"carol/hw.ipynb": "/etc/passwd"})
    staging = tmp_path / "staging"
    problems = extract_zip(archive, staging)
    assert sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()) == ["alice/hw.ipynb"]
    assert not (tmp_path / "evil.ipynb").exists() and not (tmp_path / "escape.ipynb").exists()
    reasons = "\n".join(problems)
    assert "'../evil.ipynb' refused: a path that leaves the archive" in reasons
    assert "'/etc/cron.d/evil.ipynb' refused: an absolute path" in reasons
    assert "'bob/../../escape.ipynb' refused" in reasons
    assert "'carol/hw.ipynb' refused: a symbolic link" in reasons


def test_one_member_the_disk_will_not_take_loses_no_one_else(tmp_path):
    # a folder name of 300 bytes (100 CJK characters), a notebook where another member needs a folder
    notebook = (SOLUTIONS / "gradient_descent.ipynb").read_bytes()
    long_folder = "学" * 100
    archive = _zip(tmp_path / "export.zip",
                   {f"{long_folder}/hw.ipynb": notebook, "x.ipynb": notebook, "x.ipynb/y.ipynb": notebook,
                    "alice/hw.ipynb": notebook})
    out = tmp_path / "out"
    assert main(["batch", str(archive), "--assignment", "gradient-descent", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o700  # no kernel, whoever it runs as, reads other results
    graded = {p.parent.name for p in out.glob("*/result.json")}
    assert "alice" in graded and "x" in graded and len(graded) == 3  # the shortened folder's student too
    problems = (out / "intake-problems.txt").read_text()
    assert "'x.ipynb/y.ipynb' refused: a file or folder of the same name is already there" in problems
    assert "a name longer than the file system allows, shortened to" in problems


def test_the_hand_back_tree_holds_each_student_s_page_and_nothing_hidden(tmp_path, capsys):
    submissions = tmp_path / "in"
    submissions.mkdir()
    for name, source in (("alice", SOLUTIONS), ("bob", TEMPLATES), ("_students", SOLUTIONS)):
        (submissions / f"{name}.ipynb").write_bytes((source / "gradient_descent.ipynb").read_bytes())
    out = tmp_path / "out"
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out),
                 "--audience", "staff"]) == 0
    staff = {p.parent.name for p in out.glob("*/result.json")}
    assert staff == {"alice", "bob", "students"}  # a student called "_students" is not the tree
    tree = out / "_students"
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == [
        "alice", "alice/feedback.html", "bob", "bob/feedback.html", "students", "students/feedback.html"]
    for student in staff:
        assert (tree / student / "feedback.html").read_bytes() == (out / student / "feedback.html").read_bytes()
        # the student's view, not the staff's (which shows hidden checks' inputs and expected values)
        assert (tree / student / "feedback.html").read_bytes() != (out / student / "feedback-staff.html").read_bytes()
    # a batch graded before the tree existed gets it on its next run, without grading again
    for page in tree.rglob("feedback.html"):
        page.unlink()
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out)]) == 0
    assert "already graded" in capsys.readouterr().err
    assert {p.parent.name for p in tree.rglob("feedback.html")} == staff


def test_directory_intake_skips_links_and_names_students(tmp_path):
    (tmp_path / "alice.ipynb").write_text("{}")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "homework.ipynb").write_text("{}")
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "a.ipynb").write_text("{}")
    (tmp_path / "carol" / "b.ipynb").write_text("{}")
    (tmp_path / "dave.ipynb").symlink_to(tmp_path / "alice.ipynb")
    (tmp_path / "bob" / "stolen.ipynb").symlink_to(tmp_path / "alice.ipynb")
    (tmp_path / "Eve Smith_123").mkdir()
    (tmp_path / "Eve Smith_123" / "hw.ipynb").write_text("{}")
    intake = collect(tmp_path, tmp_path / "staging")
    assert [item.student for item in intake.items] == ["Eve_Smith_123", "alice", "bob", "carol_a", "carol_b"]
    assert "dave.ipynb: a symbolic link, not followed" in intake.problems
    assert "bob/stolen.ipynb: a symbolic link, not followed" in intake.problems


def test_batch_grades_resumes_and_regrades_only_changes(tmp_path, capsys):
    submissions = tmp_path / "in"
    submissions.mkdir()
    (submissions / "alice.ipynb").write_bytes((SOLUTIONS / "gradient_descent.ipynb").read_bytes())
    (submissions / "bob.ipynb").write_bytes((TEMPLATES / "gradient_descent.ipynb").read_bytes())
    (submissions / "dave.ipynb").write_text("{ not json")
    out = tmp_path / "out"
    args = ["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out), "--device", "cpu"]
    assert main([*args, "-j", "2"]) == 0
    scores = {s: json.loads((out / s / "result.json").read_text())["score"] for s in ("alice", "bob", "dave")}
    assert scores == {"alice": 14, "bob": 0, "dave": 0}
    assert all((out / s / "feedback.html").exists() for s in scores)
    summary = (out / "summary.html").read_text()
    assert all(f'href="{s}/feedback.html"' in summary for s in scores)
    capsys.readouterr()

    # a second run reuses everything; a changed notebook and a lost result are graded again
    (out / "bob" / "result.json").unlink()
    (submissions / "alice.ipynb").write_bytes((TEMPLATES / "gradient_descent.ipynb").read_bytes())
    before = os.stat(out / "dave" / "result.json").st_mtime_ns
    assert main(args) == 0
    log = capsys.readouterr().err
    assert "dave: 0/14 (already graded)" in log
    assert "done: 2 graded, 1 already graded" in log
    assert os.stat(out / "dave" / "result.json").st_mtime_ns == before
    assert json.loads((out / "alice" / "result.json").read_text())["score"] == 0


def test_batch_of_nothing_is_a_usage_error(tmp_path, capsys):
    assert main(["batch", str(tmp_path), "--assignment", "gradient-descent", "--out", str(tmp_path / "o")]) == 2
    assert "no notebooks found" in capsys.readouterr().err


def test_batch_needs_jobs_of_at_least_one(tmp_path, capsys):
    assert main(["batch", str(tmp_path), "--assignment", "gradient-descent", "-j", "0"]) == 2


@pytest.mark.parametrize("command", [["report", "missing.json"], ["data", "fetch", "nope"]])
def test_other_commands_fail_with_one_line(command, capsys):
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("grader: error:") and err.count("\n") == 1


def test_a_grader_crash_on_one_submission_does_not_stop_the_batch(tmp_path, monkeypatch, capsys):
    from grader.grading import pipeline

    submissions = tmp_path / "in"
    submissions.mkdir()
    for name in ("alice", "bob"):
        (submissions / f"{name}.ipynb").write_bytes((SOLUTIONS / "gradient_descent.ipynb").read_bytes())
    real = pipeline.grade_submission

    def crash_on_alice(path, assignment, options, warm):
        if path.stem == "alice":
            raise ValueError("unexpected")
        return real(path, assignment, options, warm)

    monkeypatch.setattr(pipeline, "grade_submission", crash_on_alice)
    out = tmp_path / "out"
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out)]) == 0
    alice = json.loads((out / "alice" / "result.json").read_text())
    assert alice["status"] == "grader-error" and alice["score"] == 0 and alice["submission_sha256"] == ""
    assert "the grader crashed on this submission (ValueError: unexpected)" in alice["message"]
    assert json.loads((out / "bob" / "result.json").read_text())["score"] == 14


def test_resume_trusts_only_results_the_grader_wrote(tmp_path, capsys):
    """A planted result.json claiming full marks for an untouched template is graded again."""
    from grader.intake.notebooks import sha256_of

    submissions = tmp_path / "in"
    submissions.mkdir()
    (submissions / "bob.ipynb").write_bytes((TEMPLATES / "gradient_descent.ipynb").read_bytes())
    out = tmp_path / "out"
    (out / "bob").mkdir(parents=True)
    forged = {"assignment": "gradient-descent", "submission": "bob.ipynb",
              "submission_sha256": sha256_of(submissions / "bob.ipynb"), "score": 14.0, "max_score": 14.0,
              "status": "graded", "checks": []}
    (out / "bob" / "result.json").write_text(json.dumps(forged))
    (out / "bob" / "result.json.sig").write_text("0" * 64 + "\n")
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out)]) == 0
    assert json.loads((out / "bob" / "result.json").read_text())["score"] == 0
    assert "done: 1 graded, 0 already graded" in capsys.readouterr().err


def test_a_student_whose_files_cannot_be_written_does_not_stop_the_batch(tmp_path, capsys):
    submissions = tmp_path / "in"
    submissions.mkdir()
    for name in ("alice", "bob"):
        (submissions / f"{name}.ipynb").write_bytes((SOLUTIONS / "gradient_descent.ipynb").read_bytes())
    out = tmp_path / "out"
    (out / "alice" / "result.json").mkdir(parents=True)  # a directory where the result should go
    (out / "alice" / "result.json" / "keep").write_text("x")
    assert main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not written: alice:" in err and "the results of 1 student(s) could not be written" in err
    assert json.loads((out / "bob" / "result.json").read_text())["score"] == 14
    assert (out / "summary.html").exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_on_a_batch_says_one_line_and_the_next_run_finishes_it(tmp_path, jobs):
    import signal
    import subprocess
    import sys
    import time

    from conftest import load, save, with_cell

    submissions = tmp_path / "in"
    submissions.mkdir()
    slow = with_cell(load(SOLUTIONS / "gradient_descent.ipynb"), "import time\ntime.sleep(300)", after=0)
    for name in ("alice", "bob", "carol"):
        save(slow, submissions / f"{name}.ipynb")
    command = [sys.executable, "-m", "grader", "batch", str(submissions), "--assignment", "gradient-descent",
               "--out", str(tmp_path / "out"), "-j", jobs]
    # a terminal's Ctrl-C reaches the whole foreground process group: the batch, its workers, its kernels
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    # interrupt once the batch is grading (not while it is still importing, on a busy machine), with the
    # slow cells most likely running
    started = ""
    for line in batch.stderr:  # a warning on what a killed grader left may come first
        started += line
        if line.startswith("grading 3 submission(s)"):
            break
    assert "grading 3 submission(s)" in started, started
    time.sleep(4)
    os.killpg(batch.pid, signal.SIGINT)
    _, rest = batch.communicate(timeout=120)  # not waiting for the slow cells: they would take 300 s
    err = started + rest
    assert batch.returncode == 130, err
    assert err.rstrip().splitlines()[-1] == "grader: interrupted", err
    assert "Traceback" not in err and "Task was destroyed" not in err and "Exception ignored" not in err, err
    for name in ("alice", "bob", "carol"):  # the next run need not wait for the slow cells again
        (submissions / f"{name}.ipynb").write_bytes((SOLUTIONS / "gradient_descent.ipynb").read_bytes())
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sum("warning" in line.lower() for line in done.stderr.splitlines()) <= 1, done.stderr
    assert {p.parent.name for p in (tmp_path / "out").glob("*/result.json")} == {"alice", "bob", "carol"}
