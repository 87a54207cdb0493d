"""Inside an LMS's container: `grader gradescope run` (run_autograder calls it) and `grader prairielearn`
(the PrairieLearn image's entry point). See grader/lms/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from grader.cli.course import add_gradescope_build
from grader.cli.options import add_grading, grade_options, warm_report_imports
from grader.errors import GraderError, HarnessError

if TYPE_CHECKING:
    from grader.grading.options import GradeOptions


def add_commands(sub: argparse._SubParsersAction) -> None:
    gradescope = sub.add_parser("gradescope", help="Gradescope: build an autograder zip, or grade inside one")
    gs_sub = gradescope.add_subparsers(dest="gradescope_command", required=True, metavar="ACTION")
    add_gradescope_build(gs_sub)
    run = gs_sub.add_parser("run", help="grade the submission inside Gradescope's container (run_autograder "
                                        "runs this)")
    run.add_argument("--root", type=Path, default=Path("/autograder"),
                     help="Gradescope's tree: source/, submission/, results/ (default: /autograder)")
    run.add_argument("--assignment", default=None, help="assignment id (default: the only spec in source/)")
    run.add_argument("--no-leaderboard", action="store_true", help="leave test accuracy / MSE off the leaderboard")
    add_grading(run)
    run.set_defaults(run=gradescope_run_command)

    prairielearn = sub.add_parser("prairielearn", help="grade a submission inside a PrairieLearn external-grading "
                                                       "container (the image's entry point)")
    prairielearn.add_argument("--root", type=Path, default=Path("/grade"),
                              help="PrairieLearn's tree: student/, data/data.json, tests/solutions/, results/ "
                                   "(default: /grade)")
    prairielearn.add_argument("--assignment", default=None,
                              help="assignment id (default: data.json's params.assignment, else the only spec "
                                   "in tests/solutions/)")
    add_grading(prairielearn)
    prairielearn.set_defaults(run=prairielearn_command)


def _lms_options(args: argparse.Namespace, course: Path | None, data: Path | None, results: Path) -> GradeOptions:
    """GradeOptions inside an LMS tree: its course and data roots unless named; its results kept private."""
    args.course = args.course or course
    args.data_root = args.data_root or data
    return grade_options(args, private=(results,))


def gradescope_run_command(args: argparse.Namespace) -> int:
    from grader.lms import gradescope
    from grader.reports.terminal import print_summary

    tree = gradescope.GradescopeTree(args.root.resolve())
    closed = gradescope.prepare(tree)
    # Failures of the grader itself write no results.json (see grader.lms.gradescope.run): a harness error
    # here leaves none, and run_autograder passes the exit status on
    options = _lms_options(args, tree.course, tree.data, tree.results)
    warm_report_imports()
    graded = gradescope.run(tree, assignment_id=args.assignment, options=options, closed=closed,
                            audience=args.audience, leaderboard=not args.no_leaderboard)
    if graded.result is not None:
        print_summary(graded.result)  # run_autograder's stdout: instructors only
    if graded.fault:
        print(f"grader: {graded.fault}")  # staff read it in Gradescope's autograder output
        raise HarnessError(f"{graded.fault} No results.json was written, so Gradescope records no score.")
    print(f"results: {tree.results_file}\nstaff copy: {tree.staff_dir}")
    return 0


def prairielearn_command(args: argparse.Namespace) -> int:
    from grader.lms import prairielearn
    from grader.lms.grading import write_json
    from grader.reports.prairielearn import not_gradable_json

    tree = prairielearn.PrairieLearnTree(args.root.resolve())
    closed = prairielearn.prepare(tree)
    course = tree.course if (tree.course / "solutions").is_dir() else None
    try:
        options = _lms_options(args, course, None, tree.results)
    except GraderError as exc:
        write_json(tree.results_file, not_gradable_json(f"The autograder could not run: {exc.message}"))
        raise
    warm_report_imports()
    graded = prairielearn.run(tree, assignment_id=args.assignment, options=options, closed=closed,
                              audience=args.audience)
    if graded.result is not None:  # the job's log: only what a student may see
        print(f"{graded.result.assignment}: {graded.result.score:g} / {graded.result.max_score:g} "
              f"({graded.result.status})")
    if graded.fault:
        print(f"grader: {graded.fault}", file=sys.stderr)
    print(f"results: {tree.results_file}")
    return 0
