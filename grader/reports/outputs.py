"""The files written for one graded submission, as an ordered list of formats.

Each format is one small function from a result and an audience to the files
it makes, as {file name: bytes} (nothing where it does not apply). Rendering
and writing are apart, so that a batch worker can render in parallel and
the batch's one writer can write and sign what it gets. `grader grade` and
`grader batch` both go through here. Adding a format (Gradescope's
results.json, say) means one function here and one line in OUTPUTS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from grader.files import write_atomically
from grader.reports.html import AUDIENCES, FEEDBACK_FILES, render_feedback
from grader.results import GradeResult

Rendered = dict[str, bytes]
Output = Callable[[GradeResult, str], Rendered]


def result_json(result: GradeResult, audience: str) -> Rendered:
    """result.json: the record every other format is made from (see grader/schemas/result.schema.json)."""
    return {"result.json": result.to_json().encode()}


def student_feedback(result: GradeResult, audience: str) -> Rendered:
    """feedback.html, the student's view, whatever the audience: it is what gets handed back."""
    return {FEEDBACK_FILES["student"]: render_feedback(result).encode()}


def staff_feedback(result: GradeResult, audience: str) -> Rendered:
    """feedback-staff.html, hidden checks in full, only when staff asked for it."""
    if audience != "staff":
        return {}
    return {FEEDBACK_FILES["staff"]: render_feedback(result, audience="staff").encode()}


OUTPUTS: tuple[Output, ...] = (
    result_json,
    student_feedback,
    staff_feedback,
)


def render_outputs(result: GradeResult, *, audience: str = "student") -> Rendered:
    """Every format for one submission, in OUTPUTS order."""
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}, not {audience!r}")
    rendered: Rendered = {}
    for output in OUTPUTS:
        rendered.update(output(result, audience))
    return rendered


def write_rendered(rendered: Rendered, out_dir: Path) -> list[Path]:
    """Write each file atomically (a reader sees the old file or the new one); return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a kernel of any user must not read results
    return [write_atomically(out_dir / name, content) for name, content in rendered.items()]


def write_outputs(result: GradeResult, out_dir: Path, *, audience: str = "student") -> list[Path]:
    """Render and write every format for one submission into out_dir; return the paths written."""
    return write_rendered(render_outputs(result, audience=audience), out_dir)
