"""The options several commands share, each declared once, and what they turn into (GradeOptions)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import UsageError
from grader.locations import cache_dir, default_data_root

if TYPE_CHECKING:
    from grader.grading.options import GradeOptions

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


def add_data_root(parser: argparse.ArgumentParser, *, purpose: str = "") -> None:
    parser.add_argument("--data-root", type=Path, default=None,
                        help=f"dataset root{purpose} (default: GRADER_DATA, else ~/.cache/grader/data)")


def data_root(args: argparse.Namespace) -> Path:
    return (args.data_root or default_data_root()).resolve()


def add_course(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--course", type=Path, default=None,
                        help="course root holding solutions/ (default: GRADER_COURSE, else the nearest "
                             "directory with solutions/, else this checkout)")
    add_data_root(parser)


def course_root(args: argparse.Namespace) -> Path:
    from grader.locations import default_course_root

    return (args.course or default_course_root()).resolve()


def add_device(parser: argparse.ArgumentParser, *, text: str) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES, help=text)


def add_sandbox(parser: argparse.ArgumentParser, *, text: str) -> None:
    parser.add_argument("--sandbox", default=os.environ.get("GRADER_SANDBOX", "auto"), choices=SANDBOX_MODES,
                        help=text)


def add_grading(parser: argparse.ArgumentParser) -> None:
    """The options every command that grades student code shares, spelled the same everywhere."""
    add_course(parser)
    add_device(parser, text="where the grader trains models (default: auto: CUDA when available)")
    add_sandbox(parser, text="isolation for student code (default GRADER_SANDBOX, else auto: the strongest "
                             "this machine offers, and an error rather than none); 'user' runs it as an "
                             "unprivileged user without namespaces (inside an LMS container); 'none' only "
                             "when asked for")
    parser.add_argument("--sandbox-user", default=None, metavar="NAME",
                        help="the unprivileged user a root grader runs student code as "
                             "(default: GRADER_SANDBOX_USER, else nobody)")
    parser.add_argument("--cold-kernels", action="store_true",
                        help="start every submission's kernel from scratch instead of forking it from a "
                             "pre-started image (slower; for comparing, or if the image misbehaves)")
    add_audience(parser)


def add_audience(parser: argparse.ArgumentParser, *, text: str = AUDIENCE_HELP) -> None:
    parser.add_argument("--audience", default="student", choices=("student", "staff"), help=text)


def grade_options(args: argparse.Namespace, *, private: tuple[Path, ...] = (),
                  device: str | None = None) -> GradeOptions:
    """GradeOptions from the shared options; `private` paths (the outputs) are kept from the child.
    `device`, where given, is used as it is instead of resolving --device on this machine."""
    from grader.grading.options import GradeOptions

    return GradeOptions(course_root=course_root(args), data_root=data_root(args), cache_dir=cache_dir(),
                        device=device or resolve_device(args.device), isolation=args.sandbox,
                        sandbox_user=args.sandbox_user, private_paths=private,
                        kernel_image=not getattr(args, "cold_kernels", False))


def output_dir(path: Path) -> Path:
    """--out, checked before any grading: a directory, or a path where one can be made."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file, not a directory: give a directory for the results")
    return path.resolve()


def contended_before(args: argparse.Namespace) -> bool | None:
    """How busy others kept the machine from the command's start until now, for a command about to start its
    own processes (None where that cannot be told): the trainer's threads wait as that says, not as the
    machine looks once the grade's own imports load it (three busy processes on two cores)."""
    from grader.sandbox.limits import contended_since

    return contended_since(getattr(args, "started", None))


def warm_report_imports() -> None:
    """The report modules (matplotlib takes half a second), imported while the kernel runs."""
    from grader.grading.pipeline import import_in_background

    import_in_background("grader.reports.html")
