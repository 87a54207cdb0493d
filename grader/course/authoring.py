"""Make the student template from a solution notebook (`grader assign`). Pure but for file I/O.

Markers, in code cells of the solution:

    ### BEGIN SOLUTION            the reference answer starts
    ### STUB <line>               (optional) what the template has instead
    ### END SOLUTION              the reference answer ends
    ### BEGIN HIDDEN TESTS        instructor-only checks, removed from the template
    ### END HIDDEN TESTS

Without a STUB line, a solution region becomes
`raise NotImplementedError("...")` at the region's indentation. Outputs and
execution counts are cleared. Templates are generated, never hand-edited; a
test holds assignments/ equal to what this makes from solutions/.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
from nbformat import NotebookNode

from grader.errors import UsageError

if TYPE_CHECKING:
    from grader.course.assignment import Assignment, ResourceRequest

CHECK_INTRO = ("## Check your work\n\n"
               "Run the cell below to check your notebook against the assignment's visible checks before you "
               "submit (it needs the `*.checks.json` file that came with this notebook, beside it). From a "
               "terminal, `grader check THIS_NOTEBOOK.ipynb` runs them as the grader does, with a preview of "
               "the training, and `grader check --submit` writes the copy to upload. Hidden checks are graded "
               "after you submit.")
CHECK_CELL = "from grader.student import check\ncheck()"

BEGIN_SOLUTION = re.compile(r"^(\s*)### BEGIN SOLUTION\b(.*)$")
END_SOLUTION = re.compile(r"^\s*### END SOLUTION\b")
STUB = re.compile(r"^\s*### STUB (.*)$")
BEGIN_HIDDEN = re.compile(r"^\s*### BEGIN HIDDEN TESTS\b")
END_HIDDEN = re.compile(r"^\s*### END HIDDEN TESTS\b")


def strip_cell_source(source: str, *, where: str) -> tuple[str, int]:
    """The template version of one cell's source, and how many solution regions it had."""
    out: list[str] = []
    regions = 0
    state = "code"
    indent, hint = "", ""
    stubs: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        if state == "code":
            begin = BEGIN_SOLUTION.match(line)
            if begin:
                state, indent, stubs = "solution", begin.group(1), []
                hint = begin.group(2).strip(" :-") or "replace this line with your code"
                regions += 1
            elif BEGIN_HIDDEN.match(line):
                state = "hidden"
            elif END_SOLUTION.match(line) or END_HIDDEN.match(line):
                raise UsageError(f"{where}, line {number}: an END marker without its BEGIN")
            else:
                out.append(line)
        elif state == "solution":
            stub = STUB.match(line)
            if stub:
                stubs.append(indent + stub.group(1))
            elif END_SOLUTION.match(line):
                out.extend(stubs or [f"{indent}# YOUR CODE HERE",
                                     f"{indent}raise NotImplementedError({hint!r})"])
                state = "code"
            elif BEGIN_SOLUTION.match(line) or BEGIN_HIDDEN.match(line):
                raise UsageError(f"{where}, line {number}: a BEGIN marker inside a solution region")
        elif state == "hidden" and END_HIDDEN.match(line):
            state = "code"
    if state != "code":
        raise UsageError(f"{where}: a {state} region is not closed (missing ### END marker)")
    return "\n".join(out), regions


def make_template(solution: NotebookNode, *, name: str) -> NotebookNode:
    template = copy.deepcopy(solution)
    total_regions = 0
    cells = []
    for index, cell in enumerate(template.cells):
        if cell.cell_type == "code":
            source, regions = strip_cell_source(cell.source, where=f"{name}, cell {index + 1}")
            total_regions += regions
            if not source.strip() and cell.source.strip():
                continue  # a cell that held only hidden tests
            cell.source = source
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    if total_regions == 0:
        raise UsageError(f"{name} has no '### BEGIN SOLUTION' markers: is it a solution notebook?")
    check_cell = nbformat.v4.new_code_cell(CHECK_CELL)
    check_cell.metadata["tags"] = ["demo"]
    check_cell.id = "grader-check"
    template.cells = [*cells, nbformat.v4.new_markdown_cell(CHECK_INTRO, id="grader-check-intro"), check_cell]
    return template


def write_template(solution_path: Path, out_dir: Path) -> Path:
    """The student's template for a solution notebook (bundle: see write_bundle)."""
    solution_path = Path(solution_path)
    if not solution_path.is_file():
        raise UsageError(f"{solution_path}: no such file")
    try:
        solution = nbformat.read(solution_path, as_version=4)
    except Exception as exc:
        raise UsageError(f"{solution_path} is not a readable notebook: {exc}") from None
    template = make_template(solution, name=solution_path.name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / solution_path.name
    target.write_text(render(template))
    return target


def render(notebook: NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def spec_for(solution_path: Path) -> Assignment | None:
    """The spec whose notebook is this solution, from the course the solution lives in."""
    from grader.course.assignment import load_assignments

    solution_path = Path(solution_path).resolve()
    problems: list[str] = []
    specs = load_assignments(solution_path.parent.parent, problems=problems)
    found = next((a for a in specs.values() if a.notebook == solution_path.name), None)
    if found is None and problems:
        raise UsageError("; ".join(problems))
    return found


def write_bundle(solution_path: Path, out_dir: Path, request: ResourceRequest) -> Path | None:
    """The student bundle beside the template (grader/course/bundle.py); None when no spec names the notebook."""
    from grader.course.bundle import build_bundle, bundle_path, render_bundle

    spec = spec_for(solution_path)
    if spec is None:
        return None
    target = bundle_path(out_dir, spec.notebook)
    target.write_text(render_bundle(build_bundle(spec, request)))
    return target
