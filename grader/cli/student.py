"""`grader check`: a student runs the visible checks on their own machine before submitting."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from grader.cli.options import (
    add_data_root,
    add_device,
    add_sandbox,
    contended_before,
    data_root,
    output_dir,
    resolve_device,
    warm_report_imports,
)
from grader.errors import UsageError
from grader.locations import cache_dir

if TYPE_CHECKING:
    from grader.results import GradeResult


def add_commands(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="students: run the visible checks on your notebook before submitting")
    check.add_argument("notebook", type=Path)
    check.add_argument("--bundle", type=Path, default=None,
                       help="the assignment's NAME.checks.json (default: the one beside the notebook)")
    check.add_argument("--train", action="store_true",
                       help="run the graded training on your copy of the dataset (default: a short preview)")
    check.add_argument("--out", type=Path, default=None,
                       help="where feedback.html goes (default: grader-check/<notebook name>)")
    check.add_argument("--submit", action="store_true",
                       help="also write the copy of the notebook to upload (outputs cleared)")
    check.add_argument("--submit-to", type=Path, default=None, metavar="FILE",
                       help="where --submit writes it (default: NAME-submit.ipynb beside the notebook)")
    add_device(check, text="where a training preview runs")
    add_sandbox(check, text="isolation for your notebook's code (default: the strongest available, else none: "
                            "it is your own code on your own machine)")
    add_data_root(check)
    check.set_defaults(run=check_command)


def check_command(args: argparse.Namespace) -> int:
    """A student's check: the bundle's visible checks, graded on their own machine as the grader would."""
    from grader.course.bundle import assignment_from_bundle
    from grader.grading.options import GradeOptions
    from grader.grading.pipeline import grade_safely
    from grader.grading.warm import Warm
    from grader.intake.submit import write_submission
    from grader.reports.outputs import write_outputs
    from grader.reports.terminal import print_summary

    notebook: Path = args.notebook
    bundle_file, bundle = _bundle_of(notebook, args.bundle)
    assignment = assignment_from_bundle(bundle, train=args.train)
    options = GradeOptions(course_root=bundle_file.resolve().parent, data_root=data_root(args), cache_dir=cache_dir(),
                           device=resolve_device(args.device), isolation=args.sandbox, own_code=True)
    warm_report_imports()
    with Warm(contended=contended_before(args)) as warm:
        result = grade_safely(notebook, assignment, options, warm)
    out_dir = output_dir(args.out or Path("grader-check") / notebook.stem)
    write_outputs(result, out_dir)
    print_summary(result, score_line=check_score_line(result))
    print("These are the visible checks, run on your machine: hidden checks and the graded training run "
          "after you submit, so your final grade can differ.")
    print(f"feedback: {out_dir / 'feedback.html'}")
    if args.submit:
        written = write_submission(notebook, bundle, args.submit_to)
        print(f"ready to upload: {written}")
    return 0


def _bundle_of(notebook: Path, named: Path | None) -> tuple[Path, dict]:
    """The check bundle for `notebook` (--bundle, else the one beside it), refused when it checks another
    assignment than the notebook's metadata names."""
    from grader.course.bundle import find_bundle, read_bundle
    from grader.errors import NotebookError
    from grader.intake.notebooks import read_submission

    if not notebook.is_file():
        raise UsageError(f"{notebook}: no such file" if not notebook.exists() else f"{notebook} is not a file")
    try:
        hint = read_submission(notebook).assignment_hint
    except NotebookError:
        hint = None
    bundle_file = named or find_bundle(notebook, hint)
    bundle = read_bundle(bundle_file)
    if hint and hint != bundle["assignment"]:
        raise UsageError(f"{notebook.name} is a notebook of {hint}, but {bundle_file.name} checks "
                         f"{bundle['assignment']}: pass the right --bundle")
    return bundle_file, bundle


def check_score_line(result: GradeResult) -> str:
    """What a student's check adds up to: the points it checked, and what is left for grading."""
    from grader.course.bundle import AFTER_SUBMITTING

    later = sum(c.max_score for c in result.checks if c.message.startswith(AFTER_SUBMITTING))
    previewed = sum(c.max_score for c in result.checks if c.message.startswith("preview"))
    checked = result.max_score - later - previewed
    line = f"visible checks: {result.score:g} / {checked:g} points"
    parts = [f"{previewed:g} previewed (the graded training runs after you submit)" if previewed else "",
             f"{later:g} graded after you submit" if later else ""]
    return line + "".join(f"; {part}" for part in parts if part)
