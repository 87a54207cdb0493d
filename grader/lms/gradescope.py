"""`grader gradescope run`: grade one submission inside a Gradescope container.

The bundle's run_autograder runs it, as root, for every submission. Gradescope's layout
("Autograder Specifications", File hierarchy), under the root (/autograder; `--root` moves it,
which is how the tests run the real run_autograder in a temporary tree):

    source/                    the bundle as uploaded: solutions/<spec>.py (the course root),
                               data/ (the data root), the grader's wheel, setup.sh
    submission/                the student's upload
    submission_metadata.json   who submitted (names and ids kept in result.json's `student`)
    results/results.json       what Gradescope shows; written last, always
    results/grader/            result.json and feedback.html, for staff (Gradescope does not show them)

run_autograder's stdout is shown to instructors only (`stdout_visibility` "hidden"): the CLI
prints the staff summary there, hidden checks in full.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.grading.options import GradeOptions
from grader.lms.grading import LmsGrade, close_tree, grade_upload, remove_stale, write_json
from grader.reports.gradescope import results_json

DEFAULT_ROOT = Path("/autograder")


@dataclass(frozen=True)
class GradescopeTree:
    root: Path

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def course(self) -> Path:
        return self.source

    @property
    def data(self) -> Path:
        return self.source / "data"

    @property
    def submission(self) -> Path:
        return self.root / "submission"

    @property
    def metadata(self) -> Path:
        return self.root / "submission_metadata.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def results_file(self) -> Path:
        return self.results / "results.json"

    @property
    def staff_dir(self) -> Path:
        return self.results / "grader"


def prepare(tree: GradescopeTree) -> bool:
    """Before anything can fail: no stale results.json, and the tree closed to other users."""
    tree.results.mkdir(parents=True, exist_ok=True)
    remove_stale(tree.results_file)
    return close_tree(tree.root)


def run(tree: GradescopeTree, *, assignment_id: str | None, options: GradeOptions, closed: bool,
        audience: str = "student", leaderboard: bool = True) -> LmsGrade:
    """Grade the upload and write results/results.json, whatever happens to the submission; but when the
    grader itself failed, write none. Gradescope's specification has no "not graded" result: without a
    results.json it records no score, shows the student that the autograder failed, and shows staff
    run_autograder's output, which says why (and they can regrade)."""
    lms = {"name": "gradescope", "root": str(tree.root),
           "root_closed": "root only (0700), the sandbox user cannot enter it" if closed else "not changed"}
    graded = grade_upload(tree.submission, assignment_id=assignment_id, options=options, out_dir=tree.staff_dir,
                          lms=lms, audience=audience, student=student_of(tree.metadata))
    if graded.result is not None and not graded.fault:
        write_results(tree, results_json(graded.result, leaderboard=leaderboard))
    return graded


def write_results(tree: GradescopeTree, document: dict[str, Any]) -> None:
    write_json(tree.results_file, document)


def student_of(metadata: Path) -> dict[str, Any]:
    """Who submitted, from Gradescope's submission_metadata.json (empty when absent or unreadable)."""
    try:
        data = json.loads(metadata.read_text(encoding="utf-8"))
        users = data.get("users") or [{}]
        names = ", ".join(str(u.get("name", "")) for u in users if isinstance(u, dict))
        return {"lms": "gradescope", "name": names, "user_id": str(users[0].get("id", "")),
                "submission_id": str(data.get("id", "")), "participant_id": "", "late": False}
    except (OSError, ValueError, AttributeError, TypeError, IndexError):
        return {}
