"""Where the grader keeps its files (its cache, the default data root), and what a resource builder
is told of them: shared by every stage, so it imports nothing of the grader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The datasets a data root may hold (grader.ml.datasets reads them): torchvision's folder names, and one table.
IMAGE_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
ALL_DATASETS = (*IMAGE_DATASETS, "california-housing")


def default_course_root() -> Path:
    """--course, else GRADER_COURSE, else the nearest directory with solutions/, else this checkout."""
    env = os.environ.get("GRADER_COURSE")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in [here, *here.parents]:
        if (candidate / "solutions").is_dir() and any((candidate / "solutions").glob("*.py")):
            return candidate
    return Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grader"


def default_data_root() -> Path:
    env = os.environ.get("GRADER_DATA")
    return Path(env) if env else cache_dir() / "data"


@dataclass(frozen=True)
class ResourceRequest:
    """What an assignment's resource builder may use."""

    data_root: Path
    cache_dir: Path
    device: str
