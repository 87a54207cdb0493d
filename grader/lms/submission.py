"""The one notebook in what a student uploaded to an LMS, or why there is none, in their words.

An upload may be a single file, several files, or a zip the LMS unpacked into folders.
Exactly one notebook is graded. Checkpoint copies (.ipynb_checkpoints/), macOS zip debris
(__MACOSX/) and hidden files are not counted; symbolic links are never followed, because the
grader reads the notebook as root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grader.reports.plain import printable

IGNORED_DIRS = frozenset({".ipynb_checkpoints", "__MACOSX", "__pycache__"})
LISTED = 8  # file names quoted back to the student at most


@dataclass(frozen=True)
class Upload:
    notebook: Path | None
    problem: str = ""  # why nothing can be graded, for the student; "" when `notebook` is set


def find_notebook(directory: Path, *, expected: str) -> Upload:
    """The single .ipynb under `directory` (any depth), or a problem naming what was found instead."""
    directory = Path(directory)
    notebooks, links, others = [], [], []
    for folder, subfolders, files in os.walk(directory):  # does not descend into linked folders
        subfolders[:] = sorted(d for d in subfolders if d not in IGNORED_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith("."):
                continue
            if not name.lower().endswith(".ipynb"):
                others.append(path)
            elif path.is_symlink() or not path.is_file():
                links.append(path)
            else:
                notebooks.append(path)
    if len(notebooks) == 1:
        return Upload(notebooks[0])
    ask = f"Upload your notebook {expected} (one Jupyter notebook, .ipynb) and submit again."
    if len(notebooks) > 1:
        return Upload(None, f"Your submission holds {len(notebooks)} notebooks ({_names(notebooks, directory)}), "
                            f"and only one can be graded. {ask}")
    if links:
        return Upload(None, f"{_names(links, directory)} is a link, not a notebook file, and was not opened. {ask}")
    found = f" It holds: {_names(others, directory)}." if others else " It is empty."
    return Upload(None, f"No notebook was found in your submission.{found} {ask}")


def _names(paths: list[Path], directory: Path) -> str:
    names = [printable(p.relative_to(directory).as_posix(), limit=120) for p in paths[:LISTED]]
    more = f" and {len(paths) - LISTED} more" if len(paths) > LISTED else ""
    return ", ".join(names) + more
