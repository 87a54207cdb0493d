"""`grader prairielearn`: the entry point of a PrairieLearn external-grading image.

PrairieLearn's layout ("External Grading", The Grading Process), under the root (/grade;
`--root` moves it, which is how the tests run it in a temporary tree):

    student/             the student's files (the notebook a pl-file-upload took)
    data/data.json       the question's data; `params.assignment` may name the assignment
    tests/solutions/     the question's tests/ directory: the spec, <spec>.py (the course root)
    results/results.json what PrairieLearn shows; written last, always (the directory is ours to make)
    results/grader/      result.json and feedback.html, for staff

The data root and the sandbox user come from the image (GRADER_DATA, GRADER_SANDBOX_USER; see
grader/lms/prairielearn-image/Dockerfile). `gradable: false` when the grader could not work, or when the
upload holds no notebook it can grade (none, two, not a notebook, another assignment's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from grader.grading.options import GradeOptions
from grader.lms.grading import LmsGrade, close_tree, grade_upload, remove_stale, write_json
from grader.reports.prairielearn import not_gradable_json, results_json

DEFAULT_ROOT = Path("/grade")


@dataclass(frozen=True)
class PrairieLearnTree:
    root: Path

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def data_json(self) -> Path:
        return self.root / "data" / "data.json"

    @property
    def course(self) -> Path:
        return self.root / "tests"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def results_file(self) -> Path:
        return self.results / "results.json"

    @property
    def staff_dir(self) -> Path:
        return self.results / "grader"


def prepare(tree: PrairieLearnTree) -> bool:
    tree.results.mkdir(parents=True, exist_ok=True)
    remove_stale(tree.results_file)
    return close_tree(tree.root)


def assignment_in(data_json: Path) -> str | None:
    """`params.assignment` of the question's data.json, when it names one."""
    try:
        params = json.loads(data_json.read_text(encoding="utf-8")).get("params") or {}
        value = params.get("assignment")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def run(tree: PrairieLearnTree, *, assignment_id: str | None, options: GradeOptions, closed: bool,
        audience: str = "student") -> LmsGrade:
    lms = {"name": "prairielearn", "root": str(tree.root),
           "root_closed": "root only (0700), the sandbox user cannot enter it" if closed else "not changed"}
    graded = grade_upload(tree.student, assignment_id=assignment_id or assignment_in(tree.data_json),
                          options=options, out_dir=tree.staff_dir, lms=lms, audience=audience)
    if graded.result is None or graded.fault or graded.bad_upload:
        # the grader's failure, or an upload that holds no gradable notebook: PrairieLearn's external-grading
        # documentation asks for `gradable: false` for both, and then does not count the attempt
        write_json(tree.results_file, not_gradable_json(graded.fault or graded.bad_upload))
    else:
        write_json(tree.results_file, results_json(graded.result))
    return graded
