"""The `grader` command: a thin layer over the pipeline.

Exit status: 0 whenever a submission was graded, whatever its score;
2 for a usage error; 3 when the grader itself cannot work.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import GraderError, HarnessError, UsageError
from grader.locations import cache_dir, default_data_root
from grader.ml.datasets import ALL_DATASETS

if TYPE_CHECKING:
    from grader.course.assignment import Assignment
    from grader.grading.pipeline import GradeOptions
    from grader.results import GradeResult

DEVICES = ("auto", "cpu", "cuda")
SANDBOX_MODES = ("auto", "bwrap", "unshare", "user", "none")
AUDIENCE_HELP = ("feedback.html is always the student's view; staff also writes feedback-staff.html, "
                 "with hidden checks' inputs and expected values (not for students)")


def resolve_device(requested: str) -> str:
    if requested not in DEVICES:
        raise UsageError(f"unknown device {requested!r}; choose auto, cpu or cuda")
    if requested == "cpu":
        return "cpu"
    if requested == "auto" and not any(Path("/dev").glob("nvidia*")):
        return "cpu"  # no NVIDIA device node: skip importing torch just to learn that
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device on this machine")
    return "cpu"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--course", type=Path, default=None,
                        help="course root holding solutions/ (default: GRADER_COURSE, else the nearest "
                             "directory with solutions/, else this checkout)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset root (default: GRADER_DATA, else ~/.cache/grader/data)")


def _grading(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs student code shares, spelled the same everywhere."""
    _common(parser)
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the grader trains models (default: auto: CUDA when available)")
    parser.add_argument("--sandbox", default=os.environ.get("GRADER_SANDBOX", "auto"), choices=SANDBOX_MODES,
                        help="isolation for student code (default GRADER_SANDBOX, else auto: the strongest "
                             "this machine offers, and an error rather than none); 'user' runs it as an "
                             "unprivileged user without namespaces (inside an LMS container); 'none' only "
                             "when asked for")
    parser.add_argument("--sandbox-user", default=None, metavar="NAME",
                        help="the unprivileged user a root grader runs student code as "
                             "(default: GRADER_SANDBOX_USER, else nobody)")
    parser.add_argument("--cold-kernels", action="store_true",
                        help="start every submission's kernel from scratch instead of forking it from a "
                             "pre-started image (slower; for comparing, or if the image misbehaves)")
    parser.add_argument("--audience", default="student", choices=("student", "staff"), help=AUDIENCE_HELP)


def grade_options(args: argparse.Namespace, *, private: tuple[Path, ...] = (),
                  device: str | None = None) -> GradeOptions:
    """GradeOptions from the shared options; `private` paths (the outputs) are kept from the child.
    `device`, where given, is used as it is instead of resolving --device on this machine."""
    from grader.course.assignment import default_course_root
    from grader.grading.pipeline import GradeOptions

    return GradeOptions(course_root=(args.course or default_course_root()).resolve(),
                        data_root=(args.data_root or default_data_root()).resolve(), cache_dir=cache_dir(),
                        device=device or resolve_device(args.device), isolation=args.sandbox,
                        sandbox_user=args.sandbox_user, private_paths=private,
                        kernel_image=not getattr(args, "cold_kernels", False))


def _version() -> str:
    import grader

    return grader.__version__


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error told in one line that names the command it belongs to (argparse's own
    prints the whole usage, and for a subcommand's flag the top-level one)."""

    def error(self, message: str):  # argparse hook
        self.exit(2, f"grader: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grader", description="Grade Jupyter notebooks of a PyTorch course.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the grader does")
    parser.add_argument("--version", action="version", version=f"grader {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grade = sub.add_parser("grade", help="grade one notebook and write result.json")
    grade.add_argument("notebook", type=Path)
    grade.add_argument("--assignment", help="assignment id (default: from the notebook's metadata or name)")
    grade.add_argument("--out", type=Path, default=None,
                       help="output directory for result.json (default: grader-out/<notebook name>)")
    grade.add_argument("--json", action="store_true", help="print result.json instead of a summary")
    _grading(grade)

    batch = sub.add_parser("batch", help="grade a class: a directory or an LMS zip of notebooks (resumable)")
    batch.add_argument("submissions", type=Path, help="directory of notebooks (or of one folder per student), "
                                                      "or a zip file")
    batch.add_argument("--assignment", required=True, help="assignment id")
    batch.add_argument("-j", "--jobs", type=int, default=1,
                       help="submissions graded at once on this machine (default: 1)")
    batch.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="grade on the workers of this Dask scheduler instead of this machine (see the "
                            "docs/scale.md); --device auto sends model training to workers started "
                            "with --resources GPU=1")
    batch.add_argument("--out", type=Path, default=None,
                       help="output directory (default: grader-out/<assignment>); one folder per student "
                            "and summary.html")
    _grading(batch)

    report = sub.add_parser("report", help="render feedback.html from a result.json")
    report.add_argument("result", type=Path, help="a result.json written by grade or batch")
    report.add_argument("--audience", default="student", choices=("student", "staff"),
                        help="staff also shows hidden checks' inputs and expected values")
    report.add_argument("--out", type=Path, default=None, help="directory (default: beside result.json)")

    from grader.reports.exports import FORMATS

    export = sub.add_parser("export", help="gradebook exports for an LMS or CI from batch output directories")
    export.add_argument("outs", nargs="+", type=Path, metavar="OUT",
                        help="output directories of grader batch (one per assignment)")
    export.add_argument("--format", required=True, choices=list(FORMATS), metavar="FORMAT",
                        help="; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
    export.add_argument("--to", type=Path, default=None, metavar="FILE",
                        help="file to write (default: standard output); for moodle with several assignments, "
                             "a directory that gets one <assignment>-moodle.csv each")
    export.add_argument("--checks", action="store_true", help="csv: a column per check as well")

    data = sub.add_parser("data", help="datasets: where they are, and fetching them")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    where = data_sub.add_parser("where", help="say which datasets are present under the data root")
    fetch = data_sub.add_parser("fetch", help="download datasets into the data root (needs the network)")
    fetch.add_argument("datasets", nargs="*", metavar="DATASET",
                       help=f"one or more of {', '.join(ALL_DATASETS)} (default: all)")
    for action in (where, fetch):
        action.add_argument("--data-root", type=Path, default=None,
                            help="dataset root (default: GRADER_DATA, else ~/.cache/grader/data)")

    assign = sub.add_parser("assign", help="make the student template and student bundle from a solution notebook")
    assign.add_argument("solution", type=Path)
    assign.add_argument("--out", type=Path, default=Path("assignments"),
                        help="directory for the template and its NAME.checks.json (default: assignments/)")
    assign.add_argument("--data-root", type=Path, default=None,
                        help="dataset root, for a model assignment's bundle (default: GRADER_DATA, else "
                             "~/.cache/grader/data)")

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
    check.add_argument("--device", default="auto", choices=DEVICES, help="where a training preview runs")
    check.add_argument("--sandbox", default=os.environ.get("GRADER_SANDBOX", "auto"), choices=SANDBOX_MODES,
                       help="isolation for your notebook's code (default: the strongest available, else none: "
                            "it is your own code on your own machine)")
    check.add_argument("--data-root", type=Path, default=None,
                       help="dataset root (default: GRADER_DATA, else ~/.cache/grader/data)")
    _lms_parsers(sub)
    return parser


def _lms_parsers(sub: argparse._SubParsersAction) -> None:
    """grader gradescope build|run, grader prairielearn (see grader/lms/)."""
    gradescope = sub.add_parser("gradescope", help="Gradescope: build an autograder zip, or grade inside one")
    gs_sub = gradescope.add_subparsers(dest="gradescope_command", required=True, metavar="ACTION")
    build = gs_sub.add_parser("build", help="write the autograder zip for one assignment (upload it as it is)")
    build.add_argument("assignment", help="assignment id")
    build.add_argument("--out", type=Path, default=Path("autograder.zip"), help="zip to write (default: "
                                                                               "autograder.zip)")
    build.add_argument("--data", default="ship", choices=("ship", "fetch"),
                       help="ship: put the datasets the assignment needs into the zip, from the data root "
                            "(default: the image never depends on a download mirror); fetch: setup.sh runs "
                            "`grader data fetch` instead (a smaller zip)")
    build.add_argument("--dataset", action="append", default=None, metavar="DATASET",
                       help=f"a dataset the assignment needs, when its spec does not say ({', '.join(ALL_DATASETS)})")
    build.add_argument("--wheel", type=Path, default=None,
                       help="the grader's wheel to ship (default: built from this checkout)")
    _common(build)
    run = gs_sub.add_parser("run", help="grade the submission inside Gradescope's container (run_autograder "
                                        "runs this)")
    run.add_argument("--root", type=Path, default=Path("/autograder"),
                     help="Gradescope's tree: source/, submission/, results/ (default: /autograder)")
    run.add_argument("--assignment", default=None, help="assignment id (default: the only spec in source/)")
    run.add_argument("--no-leaderboard", action="store_true", help="leave test accuracy / MSE off the leaderboard")
    _grading(run)

    prairielearn = sub.add_parser("prairielearn", help="grade a submission inside a PrairieLearn external-grading "
                                                       "container (the image's entry point)")
    prairielearn.add_argument("--root", type=Path, default=Path("/grade"),
                              help="PrairieLearn's tree: student/, data/data.json, tests/solutions/, results/ "
                                   "(default: /grade)")
    prairielearn.add_argument("--assignment", default=None,
                              help="assignment id (default: data.json's params.assignment, else the only spec "
                                   "in tests/solutions/)")
    _grading(prairielearn)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already told
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except GraderError as exc:
        print(f"grader: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # an output directory that cannot be written, a path that is a directory
        where = f": {exc.filename}" if exc.filename else ""
        print(f"grader: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "grade":
        return _grade(args)
    if args.command == "assign":
        return _assign(args)
    if args.command == "report":
        return _report(args)
    if args.command == "batch":
        return _batch(args)
    if args.command == "data":
        return _data(args)
    if args.command == "export":
        return _export(args)
    if args.command == "check":
        return _check(args)
    if args.command == "gradescope":
        return _gradescope_build(args) if args.gradescope_command == "build" else _gradescope_run(args)
    if args.command == "prairielearn":
        return _prairielearn(args)
    raise UsageError(f"unknown command {args.command}")


def _warm_report_imports() -> None:
    """The report modules (matplotlib takes half a second), imported while the kernel runs."""
    from grader.grading.pipeline import import_in_background

    import_in_background("grader.reports.html")


def _grade(args: argparse.Namespace) -> int:
    from grader.grading.pipeline import grade_safely, image_for
    from grader.sandbox.reaping import sweep_what_dead_graders_left

    notebook: Path = args.notebook
    if not notebook.exists():
        raise UsageError(f"{notebook}: no such file")
    if notebook.is_dir():
        raise UsageError(f"{notebook} is a directory; grade one notebook, or a class with grader batch")
    out_dir = _output_dir(args.out or Path("grader-out") / notebook.stem)
    options = grade_options(args, private=(out_dir,))
    assignment = _assignment_of(notebook, args.assignment, options.course_root)
    image_for(assignment, options)  # the kernel image imports beside this process from here on
    sweep_what_dead_graders_left()
    _warm_report_imports()
    result = grade_safely(notebook, assignment, options)
    from grader.reports.html import FEEDBACK_FILES
    from grader.reports.outputs import write_outputs
    from grader.reports.terminal import print_summary

    write_outputs(result, out_dir, audience=args.audience)
    if args.json:
        print(result.to_json(), end="")
    else:
        print_summary(result)
        print(f"result: {out_dir / 'result.json'}\nfeedback: {out_dir / FEEDBACK_FILES[args.audience]}")
    if not result.has_grade:  # a harness failure, whatever result.json holds: never exit 0 as if graded
        raise HarnessError(result.message)
    return 0


def _output_dir(path: Path) -> Path:
    """--out, checked before any grading: a directory, or a path where one can be made."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a directory: give a directory for the results")
    return path.resolve()


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


def _batch(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.text import Text

    from grader.course.assignment import find_assignment
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
    assignment = find_assignment(options.course_root, args.assignment)
    if not args.scheduler:
        from grader.grading.pipeline import image_for

        image_for(assignment, options)  # its imports run beside the grader's own (-j N: for every worker)
    from grader.grading.batch import elapsed_text, grade_batch
    from grader.intake.collect import collect
    from grader.reports.plain import rich_text
    from grader.sandbox.reaping import sweep_what_dead_graders_left
    from grader.states import ResultStatus

    if not args.scheduler:
        sweep_what_dead_graders_left()
    out_dir = _output_dir(args.out or Path("grader-out") / assignment.id)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the grader's own: see grade_batch
    intake = collect(args.submissions, out_dir / ".intake")
    console = Console(stderr=True, highlight=False)
    for problem in intake.problems:
        console.print(Text.assemble(("skipped: ", "yellow"), rich_text(problem)))
    if intake.problems:
        (out_dir / "intake-problems.txt").write_text("\n".join(intake.problems) + "\n")
    if not intake.items:
        raise UsageError(f"no notebooks found in {args.submissions}")
    runner = _batch_runner(args)
    start = time.monotonic()
    console.print(f"grading {len(intake.items)} submission(s) of {assignment.id} {runner.describe()} "
                  f"into {out_dir}")

    def progress(outcome, where) -> None:
        result = outcome.result
        how = "already graded" if outcome.reused else f"{result.timings.get('total_s', 0):.1f} s"
        flag = ("", "") if result.status == ResultStatus.GRADED else (" (not gradable)", "red")
        score = f"{result.score:g}/{result.max_score:g}" if result.has_grade else "not graded"
        if not result.has_grade:
            flag = (" (the grader could not finish: the next run grades it again)", "yellow")
        console.print(Text.assemble(f"[{where.done}/{where.total}] ", rich_text(outcome.student),
                                    f": {score} ({how})", flag,
                                    ("" if outcome.reused else _pace(where), "dim")))

    report = grade_batch(intake, assignment, options, out_dir, runner=runner, staff=args.audience == "staff",
                         on_done=progress)
    graded = sum(1 for o in report.outcomes if not o.reused)
    unfinished = sum(1 for o in report.outcomes if not o.result.has_grade)
    console.print(f"done: {graded} graded, {len(report.outcomes) - graded} already graded, in "
                  f"{elapsed_text(start)}; class summary: {out_dir / 'summary.html'}")
    if unfinished:
        console.print(rich_text(f"{unfinished} submission(s) could not be finished by the grader (not the "
                                "students' fault, and no grade): run the same command again to grade them", "yellow"))
    if report.write_failures:
        for failure in report.write_failures:
            console.print(rich_text(f"not written: {failure}", "red"))
        raise GraderError(f"the results of {len(report.write_failures)} student(s) could not be written "
                          "(listed above); the others are in place: fix the output directory and run the "
                          "same command again")
    return 0


def _batch_runner(args: argparse.Namespace):
    """Where a batch grades: this machine (-j N), or the workers of a Dask cluster (--scheduler)."""
    if not args.scheduler:
        from grader.grading.batch import LocalRunner

        return LocalRunner(args.jobs)
    from grader.grading.distributed import DaskRunner

    return DaskRunner(args.scheduler, device=args.device,
                      data_root=args.data_root.resolve() if args.data_root else None)


def _pace(where) -> str:
    """' · 12.5/min · 3.2 min left · 4 workers': the rate so far, the time left at that rate, the workers busy."""
    if not where.rate_per_min:
        return ""
    eta = where.eta_s or 0.0
    left = f"{eta / 60:.1f} min" if eta >= 120 else f"{eta:.0f} s"
    return f" · {where.rate_per_min:.1f}/min · {left} left · {where.workers} worker(s)"


def _report(args: argparse.Namespace) -> int:
    from grader.reports.html import write_feedback
    from grader.results import GradeResult

    try:
        result = GradeResult.read(args.result)
    except FileNotFoundError:
        raise UsageError(f"{args.result}: no such file") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{args.result} is not a result.json written by grader ({exc})") from None
    print(f"wrote {write_feedback(result, args.out or args.result.parent, audience=args.audience)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """Read batch output directories, render one format, write it (stdout by default); warnings on stderr."""
    from grader.intake.collect import safe_name
    from grader.reports.exports import FORMATS
    from grader.reports.gradebook import printable, read_batches

    chosen = FORMATS.get(args.format)
    if chosen is None:
        raise UsageError(f"unknown export format {args.format!r}; choose {', '.join(FORMATS)}")
    book = read_batches(args.outs)

    def warn(text: str) -> None:
        print(f"grader: warning: {printable(text)}", file=sys.stderr)

    for problem in book.problems:
        warn(problem)
    if not book.records:
        raise UsageError(f"no readable result.json in {', '.join(map(str, args.outs))}")
    into_dir = args.to is not None and (args.to.is_dir() or str(args.to).endswith(("/", os.sep)))
    if chosen.one_assignment and (into_dir or len(book.assignments) > 1):
        if not into_dir:
            raise UsageError(f"--format {chosen.name} takes one assignment per file, and these hold "
                             f"{len(book.assignments)} ({', '.join(book.assignments)}): give one OUT directory, "
                             "or --to DIR/ for one file per assignment")
        targets = [(args.to / f"{safe_name(a)}-{chosen.name}{chosen.suffix}", book.only(a)) for a in book.assignments]
    elif into_dir:
        raise UsageError(f"--to {args.to} is a directory; give a file name (a directory is for --format moodle)")
    else:
        targets = [(args.to, book)]
    for path, part in targets:
        export = chosen.render(part, checks=args.checks)
        for warning in export.warnings:
            warn(warning)
        if path is None:
            sys.stdout.write(export.text)
            continue
        if not path.parent.is_dir():  # a directory nobody asked for is not made
            raise UsageError(f"--to {args.to}: the directory {path.parent} does not exist")
        with open(path, "w", encoding="utf-8", newline="") as stream:
            stream.write(export.text)
        print(f"wrote {path}")
    return 0


def _data(args: argparse.Namespace) -> int:
    from grader.ml.datasets import describe, fetch

    root = (args.data_root or default_data_root()).resolve()
    if args.data_command == "where":
        print(f"data root: {root}")
        for dataset in ALL_DATASETS:
            print(f"  {describe(dataset, root)}")
        return 0
    unknown = [d for d in args.datasets if d not in ALL_DATASETS]
    if unknown:
        raise UsageError(f"unknown dataset {unknown[0]!r}; known: {', '.join(ALL_DATASETS)}")
    for dataset in args.datasets or ALL_DATASETS:
        print(f"fetching {dataset} into {root} ...", flush=True)
        try:
            print(f"  {fetch(dataset, root)}")
        except (OSError, RuntimeError) as exc:  # urllib raises OSErrors; torchvision wraps them
            reason = " ".join(str(exc).split())[:300]
            raise GraderError(f"could not download {dataset} (is this machine online?): {reason}") from None
    return 0


def _gradescope_build(args: argparse.Namespace) -> int:
    from grader.course.assignment import default_course_root, find_assignment
    from grader.lms.bundle import build_bundle

    course = (args.course or default_course_root()).resolve()
    assignment = find_assignment(course, args.assignment)
    bundle = build_bundle(assignment, args.out, data_mode=args.data,
                          data_root=(args.data_root or default_data_root()).resolve(), wheel=args.wheel,
                          datasets=tuple(args.dataset) if args.dataset else None)
    data = {"ship": f"shipped: {', '.join(bundle.datasets)}", "fetch": f"fetched by setup.sh: "
            f"{', '.join(bundle.datasets)}"}[bundle.data_mode] if bundle.datasets else "none needed"
    print(f"wrote {bundle.path} ({len(bundle.members)} files; datasets {data})")
    print("upload it as it is: Gradescope › the assignment › Configure Autograder › Zip file upload")
    return 0


def _lms_options(args: argparse.Namespace, course: Path | None, data: Path | None, results: Path) -> GradeOptions:
    """GradeOptions inside an LMS tree: its course and data roots unless named; its results kept private."""
    args.course = args.course or course
    args.data_root = args.data_root or data
    return grade_options(args, private=(results,))


def _gradescope_run(args: argparse.Namespace) -> int:
    from grader.lms import gradescope
    from grader.reports.terminal import print_summary

    tree = gradescope.GradescopeTree(args.root.resolve())
    closed = gradescope.prepare(tree)
    # Failures of the grader itself write no results.json (see grader.lms.gradescope.run): a harness error
    # here leaves none, and run_autograder passes the exit status on
    options = _lms_options(args, tree.course, tree.data, tree.results)
    _warm_report_imports()
    graded = gradescope.run(tree, assignment_id=args.assignment, options=options, closed=closed,
                            audience=args.audience, leaderboard=not args.no_leaderboard)
    if graded.result is not None:
        print_summary(graded.result)  # run_autograder's stdout: instructors only
    if graded.fault:
        print(f"grader: {graded.fault}")  # staff read it in Gradescope's autograder output
        raise HarnessError(f"{graded.fault} No results.json was written, so Gradescope records no score.")
    print(f"results: {tree.results_file}\nstaff copy: {tree.staff_dir}")
    return 0


def _prairielearn(args: argparse.Namespace) -> int:
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
    _warm_report_imports()
    graded = prairielearn.run(tree, assignment_id=args.assignment, options=options, closed=closed,
                              audience=args.audience)
    if graded.result is not None:  # the job's log: only what a student may see
        print(f"{graded.result.assignment}: {graded.result.score:g} / {graded.result.max_score:g} "
              f"({graded.result.status})")
    if graded.fault:
        print(f"grader: {graded.fault}", file=sys.stderr)
    print(f"results: {tree.results_file}")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from grader.course.assignment import ResourceRequest
    from grader.course.authoring import write_bundle, write_template
    from grader.ml.datasets import DatasetMissing

    target = write_template(args.solution, args.out)
    print(f"wrote {target}")
    request = ResourceRequest(data_root=(args.data_root or default_data_root()).resolve(), cache_dir=cache_dir(),
                              device="cpu")
    try:
        bundle = write_bundle(args.solution, args.out, request)
    except DatasetMissing as exc:
        raise UsageError(f"the student bundle needs the assignment's data: {exc}") from None
    print(f"wrote {bundle}" if bundle else f"no spec names {args.solution.name}: no student bundle written")
    return 0


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


def _check(args: argparse.Namespace) -> int:
    """A student's check: the bundle's visible checks, graded on their own machine as the grader would."""
    from grader.course.bundle import assignment_from_bundle, find_bundle, read_bundle
    from grader.errors import NotebookError
    from grader.grading.pipeline import GradeOptions, grade_safely
    from grader.intake.notebooks import read_submission
    from grader.intake.submit import write_submission
    from grader.reports.outputs import write_outputs
    from grader.reports.terminal import print_summary

    notebook: Path = args.notebook
    if not notebook.is_file():
        raise UsageError(f"{notebook}: no such file" if not notebook.exists() else f"{notebook} is not a file")
    try:
        hint = read_submission(notebook).assignment_hint
    except NotebookError:
        hint = None
    bundle_file = args.bundle or find_bundle(notebook, hint)
    bundle = read_bundle(bundle_file)
    if hint and hint != bundle["assignment"]:
        raise UsageError(f"{notebook.name} is a notebook of {hint}, but {bundle_file.name} checks "
                         f"{bundle['assignment']}: pass the right --bundle")
    assignment = assignment_from_bundle(bundle, train=args.train)
    options = GradeOptions(course_root=bundle_file.resolve().parent,
                           data_root=(args.data_root or default_data_root()).resolve(), cache_dir=cache_dir(),
                           device=resolve_device(args.device), isolation=args.sandbox, own_code=True)
    _warm_report_imports()
    result = grade_safely(notebook, assignment, options)
    out_dir = _output_dir(args.out or Path("grader-check") / notebook.stem)
    write_outputs(result, out_dir)
    print_summary(result, score_line=check_score_line(result))
    print("These are the visible checks, run on your machine: hidden checks and the graded training run "
          "after you submit, so your final grade can differ.")
    print(f"feedback: {out_dir / 'feedback.html'}")
    if args.submit:
        written = write_submission(notebook, bundle, args.submit_to)
        print(f"ready to upload: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
