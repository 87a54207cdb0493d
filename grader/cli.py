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

from grader.errors import GraderError, UsageError

DEVICES = ("auto", "cpu", "cuda")


def default_data_root() -> Path:
    env = os.environ.get("GRADER_DATA")
    return Path(env) if env else cache_dir() / "data"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grader"


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description="Grade Jupyter notebooks of a PyTorch course.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the grader does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grade = sub.add_parser("grade", help="grade one notebook and write result.json")
    grade.add_argument("notebook", type=Path)
    grade.add_argument("--assignment", help="assignment id (default: from the notebook's metadata or name)")
    grade.add_argument("--out", type=Path, default=None,
                       help="output directory for result.json (default: grader-out/<notebook name>)")
    grade.add_argument("--device", default="auto", choices=DEVICES,
                       help="where the grader trains models (default: auto: CUDA when available)")
    grade.add_argument("--sandbox", default=os.environ.get("GRADER_SANDBOX", "auto"),
                       choices=("auto", "bwrap", "unshare", "none"),
                       help="isolation for student code (default: the strongest this machine offers)")
    grade.add_argument("--json", action="store_true", help="print result.json instead of a summary")
    _common(grade)

    assign = sub.add_parser("assign", help="make the student template from a solution notebook")
    assign.add_argument("solution", type=Path)
    assign.add_argument("--out", type=Path, default=Path("assignments"),
                        help="directory for the template (default: assignments/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except GraderError as exc:
        print(f"grader: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "grade":
        return _grade(args)
    if args.command == "assign":
        return _assign(args)
    raise UsageError(f"unknown command {args.command}")


def _grade(args: argparse.Namespace) -> int:
    import json

    from grader.assignment import default_course_root, find_assignment, infer_assignment_id
    from grader.errors import NotebookError
    from grader.notebook_io import read_submission
    from grader.pipeline import GradeOptions, grade_submission
    from grader.reports.terminal import print_summary

    course = (args.course or default_course_root()).resolve()
    notebook: Path = args.notebook
    if not notebook.exists():
        raise UsageError(f"{notebook}: no such file")
    assignment_id = args.assignment
    if assignment_id is None:
        try:
            hint = read_submission(notebook).assignment_hint
        except NotebookError:
            hint = None
        assignment_id = infer_assignment_id(course, metadata_hint=hint, file_name=notebook.name)
    assignment = find_assignment(course, assignment_id)
    options = GradeOptions(course_root=course, data_root=(args.data_root or default_data_root()).resolve(),
                           cache_dir=cache_dir(), device=resolve_device(args.device), isolation=args.sandbox)
    result = grade_submission(notebook, assignment, options)
    out_dir = args.out or Path("grader-out") / notebook.stem
    result.write(out_dir / "result.json")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_summary(result)
        print(f"result: {out_dir / 'result.json'}")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from grader.authoring import write_template

    target = write_template(args.solution, args.out)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
