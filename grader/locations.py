"""Where the grader keeps its files (its cache, the default data root), and what a resource builder
is told of them: shared by every stage, so it imports nothing of the grader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
