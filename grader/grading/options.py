"""How a submission is graded: the options every stage of grading reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GradeOptions:
    course_root: Path
    data_root: Path
    cache_dir: Path
    device: str = "cpu"
    isolation: str = "auto"
    threads: int | None = None
    sandbox_user: str | None = None  # who a root grader runs student code as (default: nobody)
    private_paths: tuple[Path, ...] = ()  # the grader's outputs: the child may neither read nor write them
    own_code: bool = False  # a student's check of their own notebook: nothing to hide, no sandbox required
    kernel_image: bool = True  # fork kernels from a pre-started image where the sandbox allows it
