"""`grader grade` (one notebook) and `grader batch` (a class, on this machine or a Dask cluster)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from grader.cli.options import add_grading, contended_before, grade_options, output_dir, warm_report_imports
from grader.errors import GraderError, HarnessError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from grader.course.assignment import Assignment
    from grader.grading.batch import BatchProgress, StudentOutcome
    from grader.grading.options import GradeOptions
    from grader.grading.warm import Warm
    from grader.results import GradeResult


def add_commands(sub: argparse._SubParsersAction) -> None:
    grade = sub.add_parser("grade", help="grade one notebook and write result.json")
    grade.lists_assignments = True
    grade.add_argument("notebook", type=Path)
    grade.add_argument("--assignment", help="assignment id (default: from the notebook's metadata or name)")
    grade.add_argument("--out", type=Path, default=None,
                       help="output directory for result.json (default: grader-out/<notebook name>)")
    grade.add_argument("--json", action="store_true", help="print result.json instead of a summary")
    add_grading(grade)
    grade.set_defaults(run=grade_command)

    batch = sub.add_parser("batch", help="grade a class: a directory or an LMS zip of notebooks (resumable)")
    batch.lists_assignments = True
    batch.add_argument("submissions", type=Path, help="directory of notebooks (or of one folder per student), "
                                                      "or a zip file")
    batch.add_argument("--assignment", required=True, help="assignment id")
    batch.add_argument("-j", "--jobs", type=int, default=1,
                       help="submissions graded at once on this machine (default: 1)")
    batch.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="grade on the workers of this Dask scheduler instead of this machine (see "
                            "docs/scale.md); --device auto sends model training to workers started "
                            "with --resources GPU=1")
    batch.add_argument("--out", type=Path, default=None,
                       help="output directory (default: grader-out/<assignment>); one folder per student, "
                            "_students/ to hand back, and summary.html")
    add_grading(batch)
    batch.set_defaults(run=batch_command)


def grade_command(args: argparse.Namespace) -> int:
    from grader.grading.warm import Warm
    from grader.sandbox.reaping import sweep_what_dead_graders_left

    notebook = _readable_notebook(args.notebook)
    out_dir = output_dir(args.out or Path("grader-out") / notebook.stem)
    options = grade_options(args, private=(out_dir,))
    warm = Warm(contended=contended_before(args))
    try:
        warm.start_image_ahead(options)  # its imports run beside this process's from here on
        assignment = _assignment_of(notebook, args.assignment, options.course_root)
        warm.image_for(assignment, options)
        from grader.grading.pipeline import grade_safely, start_trainer

        start_trainer(assignment, options, warm)  # before this process's own remaining work, not after it
        sweep_what_dead_graders_left()
        warm_report_imports()
        result = grade_safely(notebook, assignment, options, warm)
    except BaseException:
        warm.close()
        raise
    closing = warm.close_in_background()  # its processes end while this one writes the feedback
    try:
        _write_and_show(result, out_dir, args)
    finally:
        closing.join()
    if not result.has_grade:  # a harness failure, whatever result.json holds: never exit 0 as if graded
        raise HarnessError(result.message)
    return 0


def _write_and_show(result: GradeResult, out_dir: Path, args: argparse.Namespace) -> None:
    from grader.reports.html import FEEDBACK_FILES
    from grader.reports.outputs import write_outputs
    from grader.reports.terminal import print_summary

    write_outputs(result, out_dir, audience=args.audience)
    if args.json:
        print(result.to_json(), end="")
    else:
        print_summary(result)
        print(f"result: {out_dir / 'result.json'}\nfeedback: {out_dir / FEEDBACK_FILES[args.audience]}")


def _readable_notebook(notebook: Path) -> Path:
    if not notebook.exists():
        raise UsageError(f"{notebook}: no such file")
    if notebook.is_dir():
        raise UsageError(f"{notebook} is a directory; grade one notebook, or a class with grader batch")
    if not os.access(notebook, os.R_OK):
        raise UsageError(f"{notebook}: cannot be read (permission denied)")
    return notebook


def _assignment_of(notebook: Path, assignment_id: str | None, course: Path) -> Assignment:
    """--assignment, else the one the notebook's metadata or file name names."""
    from grader.course.assignment import find_assignment, infer_assignment_id
    from grader.errors import NotebookError
    from grader.intake.notebooks import read_submission

    if assignment_id is None:
        try:
            hint = read_submission(notebook).assignment_hint
        except NotebookError:
            hint = None
        assignment_id = infer_assignment_id(course, metadata_hint=hint, file_name=notebook.name)
    return find_assignment(course, assignment_id)


def batch_command(args: argparse.Namespace) -> int:
    from grader.grading.warm import Warm

    with Warm() as warm:  # this command's: with -j 1 it grades here, with -j N its workers fork from it
        options, assignment = _batch_setup(args, warm)
        # imported once the kernel image has started: its imports and these run side by side
        from rich.console import Console

        from grader.grading.batch import elapsed_text, grade_batch

        out_dir = output_dir(args.out or Path("grader-out") / assignment.id)
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the grader's own: see grade_batch
        console = Console(stderr=True, highlight=False)
        intake = _intake(args.submissions, out_dir, console)
        runner = _batch_runner(args, warm)
        start = time.monotonic()
        console.print(f"grading {len(intake.items)} submission(s) of {assignment.id} {runner.describe()} "
                      f"into {out_dir}")
        report = grade_batch(intake, assignment, options, out_dir, runner=runner, staff=args.audience == "staff",
                             on_done=lambda outcome, where: console.print(_progress_line(outcome, where)))
    _print_totals(console, report, f"in {elapsed_text(start)}; class summary: {out_dir / 'summary.html'}")
    if report.write_failures:
        raise GraderError(f"the results of {len(report.write_failures)} student(s) could not be written "
                          "(listed above); the others are in place: fix the output directory and run the "
                          "same command again")
    return 0


def _batch_setup(args: argparse.Namespace, warm: Warm) -> tuple[GradeOptions, Assignment]:
    """The batch's options and assignment, every usage error raised before anything is written."""
    from grader.sandbox.detect import choose_isolation

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.scheduler and args.jobs > 1:
        raise UsageError("-j is for grading on this machine; with --scheduler the workers' threads say how many "
                         "submissions are graded at once")
    if args.scheduler:
        from grader.grading.distributed import require_dask

        require_dask()
    if not args.submissions.exists():
        raise UsageError(f"{args.submissions}: no such file or directory")
    # On a cluster each worker grades on its own device: the client resolves nothing here.
    options = grade_options(args, device="cpu" if args.scheduler else None)
    if args.jobs > 1 and choose_isolation(options.isolation, user=options.sandbox_user) == "user":
        raise UsageError("the 'user' sandbox grades one submission at a time (it cleans up after the sandbox "
                         "user, so parallel jobs would clean up each other): use -j 1, or a sandbox with namespaces")
    if not args.scheduler:
        warm.start_image_ahead(options)  # its imports run beside the grader's own (-j N: for every worker)
    from grader.course.assignment import find_assignment

    assignment = find_assignment(options.course_root, args.assignment)
    if not args.scheduler:
        from grader.sandbox.reaping import sweep_what_dead_graders_left

        warm.image_for(assignment, options)
        sweep_what_dead_graders_left()
    return options, assignment


def _intake(submissions: Path, out_dir: Path, console: Console):
    """The class's notebooks; what was refused is printed and kept in intake-problems.txt."""
    from rich.text import Text

    from grader.intake.collect import collect
    from grader.reports.plain import rich_text

    intake = collect(submissions, out_dir / ".intake")
    for problem in intake.problems:
        console.print(Text.assemble(("skipped: ", "yellow"), rich_text(problem)))
    if intake.problems:
        (out_dir / "intake-problems.txt").write_text("\n".join(intake.problems) + "\n")
    if not intake.items:
        raise UsageError(f"no notebooks found in {submissions}")
    return intake


def _batch_runner(args: argparse.Namespace, warm: Warm):
    """Where a batch grades: this machine (-j N), or the workers of a Dask cluster (--scheduler)."""
    if not args.scheduler:
        from grader.grading.batch import LocalRunner

        return LocalRunner(args.jobs, warm)
    from grader.grading.distributed import DaskRunner

    return DaskRunner(args.scheduler, device=args.device,
                      data_root=args.data_root.resolve() if args.data_root else None)


def _progress_line(outcome: StudentOutcome, where: BatchProgress):
    """'[3/20] alice: 12/14 (4.1 s) · 12.5/min · 1.4 min left · 2 worker(s)'."""
    from rich.text import Text

    from grader.reports.plain import rich_text
    from grader.states import ResultStatus

    result = outcome.result
    how = "already graded" if outcome.reused else f"{result.timings.get('total_s', 0):.1f} s"
    flag = ("", "") if result.status == ResultStatus.GRADED else (" (not gradable)", "red")
    score = f"{result.score:g}/{result.max_score:g}" if result.has_grade else "not graded"
    if not result.has_grade:
        flag = (" (the grader could not finish: the next run grades it again)", "yellow")
    return Text.assemble(f"[{where.done}/{where.total}] ", rich_text(outcome.student), f": {score} ({how})", flag,
                         ("" if outcome.reused else _pace(where), "dim"))


def _pace(where: BatchProgress) -> str:
    """' · 12.5/min · 3.2 min left · 4 workers': the rate so far, the time left at that rate, the workers busy."""
    if not where.rate_per_min:
        return ""
    eta = where.eta_s or 0.0
    left = f"{eta / 60:.1f} min" if eta >= 120 else f"{eta:.0f} s"
    return f" · {where.rate_per_min:.1f}/min · {left} left · {where.workers} worker(s)"


def _print_totals(console: Console, report, timing: str) -> None:
    from grader.reports.plain import rich_text

    graded = sum(1 for o in report.outcomes if not o.reused)
    unfinished = sum(1 for o in report.outcomes if not o.result.has_grade)
    console.print(f"done: {graded} graded, {len(report.outcomes) - graded} already graded, {timing}")
    if unfinished:
        console.print(rich_text(f"{unfinished} submission(s) could not be finished by the grader (not the "
                                "students' fault, and no grade): run the same command again to grade them", "yellow"))
    for failure in report.write_failures:
        console.print(rich_text(f"not written: {failure}", "red"))
