"""An assignment's spec: its checks and points, limits and data; and where specs are found.

An assignment is a Python module under the course's `solutions/` directory
(instructor-only, beside the reference notebook) that defines `ASSIGNMENT`.
Adding one means adding files there and a generated template under
`assignments/`; the grader's core does not change.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.errors import UsageError
from grader.locations import ResourceRequest
from grader.sandbox.limits import Limits

if TYPE_CHECKING:
    from grader.checks.context import CheckContext
    from grader.scoring import Outcome

VISIBILITIES = ("visible", "hidden")


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    points: float
    run: Callable[[CheckContext], Outcome]
    visibility: str = "visible"
    hint: str = ""  # what a student sees when a hidden check fails

    def __post_init__(self) -> None:
        if self.visibility not in VISIBILITIES:
            raise ValueError(f"check {self.id}: visibility must be one of {VISIBILITIES}")


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    notebook: str  # file name of the solution and of the generated template
    checks: tuple[Check, ...]
    required_names: tuple[str, ...] = ()
    blocked_modules: tuple[str, ...] = ()  # the child cannot import these (e.g. torch for NumPy work)
    limits: Limits = field(default_factory=Limits)
    seed: int = 0
    # Prepares per-submission inputs in the parent (datasets, baselines); its
    # result is available to checks as ctx.resources. Cached across a batch.
    resources: Callable[[ResourceRequest], Any] | None = None
    source: Path | None = None

    @property
    def child_helpers(self) -> tuple[str, ...]:
        """grader_child modules imported before the student's first cell. The model helper captures
        torch's classes and functions then, so a notebook cannot spoof them later; every assignment
        that may use torch gets it, so no spec can forget it."""
        return () if "torch" in self.blocked_modules else ("model",)

    @property
    def max_score(self) -> float:
        return float(sum(c.points for c in self.checks))

    def check(self, check_id: str) -> Check:
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)


# --------------------------------------------------------------------------
# Discovery


def load_assignments(course_root: Path, *, problems: list[str] | None = None) -> dict[str, Assignment]:
    """Every spec of the course. With `problems`, a spec that fails to load is noted there and skipped
    (one broken spec must not stop the grading of another assignment); without, it is an error."""
    solutions = Path(course_root) / "solutions"
    if not solutions.is_dir():
        raise UsageError(f"no solutions/ directory under {course_root}: set --course or GRADER_COURSE "
                         "to the course's root")
    found: dict[str, Assignment] = {}
    for module_path in sorted(solutions.glob("*.py")):
        try:
            assignment = _load_module(module_path)
        except UsageError as exc:
            if problems is None:
                raise
            problems.append(exc.message)
            continue
        if assignment is None:
            continue
        if assignment.id in found:
            raise UsageError(f"two assignment specs use the id {assignment.id!r}: "
                             f"{found[assignment.id].source} and {module_path}")
        found[assignment.id] = assignment
    return found


def _load_module(path: Path) -> Assignment | None:
    name = f"grader_course_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        module = sys.modules[name]
    else:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, f"{path} is a Python file"
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise UsageError(f"the assignment spec {path} failed to load: {type(exc).__name__}: {exc}") from exc
    assignment = getattr(module, "ASSIGNMENT", None)
    if assignment is None:
        return None
    if not isinstance(assignment, Assignment):
        raise UsageError(f"{path}: ASSIGNMENT is not a grader.course.assignment.Assignment")
    return Assignment(**{**assignment.__dict__, "source": path})


def assignment_ids(course_root: Path) -> list[str]:
    """The ids the course's specs declare (`Assignment(id="...")`), read without running them: what
    `--help` lists, so it costs no import of torch and no spec's side effects."""
    ids: set[str] = set()
    for spec in (course_root / "solutions").glob("*.py"):
        try:
            tree = ast.parse(spec.read_text())
        except (OSError, SyntaxError, ValueError):
            continue  # find_assignment names what is wrong with it, when one is asked for
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Assignment":
                ids.update(kw.value.value for kw in node.keywords if kw.arg == "id"
                           and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str))
    return sorted(ids)


def find_assignment(course_root: Path, assignment_id: str) -> Assignment:
    problems: list[str] = []
    assignments = load_assignments(course_root, problems=problems)
    if assignment_id not in assignments:
        known = ", ".join(sorted(assignments)) or "none"
        broken = f"; and {'; '.join(problems)}" if problems else ""
        close = difflib.get_close_matches(assignment_id.replace("_", "-").lower(), list(assignments), n=1)
        meant = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"unknown assignment {assignment_id!r}{meant} (known: {known}){broken}")
    return assignments[assignment_id]


def infer_assignment_id(course_root: Path, *, metadata_hint: str | None, file_name: str) -> str:
    """The assignment a notebook belongs to: its metadata, else its file name."""
    assignments = load_assignments(course_root, problems=[])
    if metadata_hint in assignments:
        return metadata_hint
    stem = Path(file_name).stem.lower()
    for assignment in assignments.values():
        template_stem = Path(assignment.notebook).stem.lower()
        if stem in (template_stem, assignment.id) or stem.startswith(template_stem):
            return assignment.id
    known = ", ".join(sorted(assignments)) or "none"
    raise UsageError(f"cannot tell which assignment {file_name} is for: its metadata names none; "
                     f"pass --assignment (one of: {known})")
