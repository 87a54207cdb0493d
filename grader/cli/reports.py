"""`grader report` (feedback from a result.json) and `grader export` (gradebooks from batch outputs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grader.cli.options import add_audience
from grader.errors import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    from grader.reports.exports import FORMATS

    report = sub.add_parser("report", help="render feedback.html from a result.json")
    report.add_argument("result", type=Path, help="a result.json written by grade or batch")
    add_audience(report, text="staff also shows hidden checks' inputs and expected values")
    report.add_argument("--out", type=Path, default=None, help="directory (default: beside result.json)")
    report.set_defaults(run=report_command)

    export = sub.add_parser("export", help="gradebook exports for an LMS or CI from batch output directories")
    export.add_argument("outs", nargs="+", type=Path, metavar="OUT",
                        help="output directories of grader batch (one per assignment)")
    export.add_argument("--format", required=True, choices=list(FORMATS), metavar="FORMAT",
                        help="; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
    export.add_argument("--to", type=Path, default=None, metavar="FILE",
                        help="file to write (default: standard output); for moodle with several assignments, "
                             "a directory that gets one <assignment>-moodle.csv each")
    export.add_argument("--checks", action="store_true", help="csv: a column per check as well")
    export.set_defaults(run=export_command)


def report_command(args: argparse.Namespace) -> int:
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


def export_command(args: argparse.Namespace) -> int:
    """Read batch output directories, render one format, write it (stdout by default); warnings on stderr."""
    from grader.reports.exports import FORMATS
    from grader.reports.gradebook import read_batches

    chosen = FORMATS[args.format]  # argparse checked the choice
    book = read_batches(args.outs)
    for problem in book.problems:
        _warn(problem)
    if not book.records:
        raise UsageError(f"no readable result.json in {', '.join(map(str, args.outs))}")
    for path, part in _export_targets(args, chosen, book):
        export = chosen.render(part, checks=args.checks)
        for warning in export.warnings:
            _warn(warning)
        if path is None:
            sys.stdout.write(export.text)
            continue
        if not path.parent.is_dir():  # a directory nobody asked for is not made
            raise UsageError(f"--to {args.to}: the directory {path.parent} does not exist")
        with open(path, "w", encoding="utf-8", newline="") as stream:
            stream.write(export.text)
        print(f"wrote {path}")
    return 0


def _warn(text: str) -> None:
    from grader.reports.gradebook import printable

    print(f"grader: warning: {printable(text)}", file=sys.stderr)


def _export_targets(args: argparse.Namespace, chosen, book) -> list:
    """(file or None for stdout, the part of the gradebook it gets): one file, or one per assignment."""
    from grader.intake.collect import safe_name

    into_dir = args.to is not None and (args.to.is_dir() or str(args.to).endswith(("/", os.sep)))
    if chosen.one_assignment and (into_dir or len(book.assignments) > 1):
        if not into_dir:
            raise UsageError(f"--format {chosen.name} takes one assignment per file, and these hold "
                             f"{len(book.assignments)} ({', '.join(book.assignments)}): give one OUT directory, "
                             "or --to DIR/ for one file per assignment")
        return [(args.to / f"{safe_name(a)}-{chosen.name}{chosen.suffix}", book.only(a)) for a in book.assignments]
    if into_dir:
        raise UsageError(f"--to {args.to} is a directory; give a file name (a directory is for --format moodle)")
    return [(args.to, book)]
