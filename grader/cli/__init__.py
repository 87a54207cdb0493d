"""The `grader` command: a thin layer over the pipeline, one module per group of commands.

    options.py   the options several commands share, declared once, and the GradeOptions they make
    grading.py   grade, batch
    student.py   check
    course.py    assign, data, gradescope build
    reports.py   report, export
    lms.py       gradescope run, prairielearn (inside an LMS's container)
    service.py   serve (the grading service), submit (a notebook to it)

Each command module adds its parsers with `add_commands` and sets `run` to the function that carries
the command out. Exit status: 0 whenever a submission was graded, whatever its score; 2 for a usage
error; 1 when an output cannot be written; 3 when the grader itself cannot work or finish.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from grader.cli import course, grading, lms, reports, service, student
from grader.errors import GraderError
from grader.sandbox.limits import pressure_mark


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error told in one line that names the command it belongs to (argparse's own
    prints the whole usage, and for a subcommand's flag the top-level one), and the course's assignment
    ids listed by the help of the commands that take one."""

    lists_assignments = False  # set on the commands that take an assignment id

    def error(self, message: str):  # argparse hook
        self.exit(2, f"grader: error: {message} (see: {self.prog} --help)\n")

    def format_help(self) -> str:
        if self.lists_assignments:
            self.epilog = _assignments_epilog()
        return super().format_help()


def _assignments_epilog() -> str:
    from grader.course.assignment import assignment_ids
    from grader.locations import default_course_root

    course_root = default_course_root()
    ids = assignment_ids(course_root)
    if not ids:
        return f"no assignments found in {course_root}/solutions (name the course with --course DIR)"
    return f"assignments in {course_root}: {', '.join(ids)} (another course: --course DIR)"


def _version() -> str:
    import grader

    return grader.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grader", description="Grade Jupyter notebooks of a PyTorch course.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the grader does")
    parser.add_argument("--version", action="version", version=f"grader {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for commands in (grading, reports, course, student, lms, service):
        commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = pressure_mark()  # see contended_before: judged before a command starts any process
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already told
        return int(exc.code or 0)
    args.started = started
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError:  # `grader data where | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
    except GraderError as exc:
        print(f"grader: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # an output directory that cannot be written, a path that is a directory
        where = f": {exc.filename}" if exc.filename else ""
        print(f"grader: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        from grader.grading.batch import quiet_interrupted_tasks

        quiet_interrupted_tasks()
        print("grader: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The `grader` command: main(), then the process's end."""
    code = main()
    # Nothing is left to free: the collector need not walk everything the grade imported and made while the
    # interpreter tears down (a fifth of a second of a 1.5-second grade). Files were closed by their writers.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
