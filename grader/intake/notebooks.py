"""Read and validate a submitted notebook, and select the cells the grader runs. Pure.

Cells tagged `demo` (or nbclient's `skip-execution`) only demonstrate: plots,
long training demos. The grader does not run them, so they cost no grading
time; assignment templates set the tag, and instructors document it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grader.errors import NotebookError

MAX_NOTEBOOK_MB = 50
MAX_NESTING = 100
CELL_TYPES = ("code", "markdown", "raw")
SKIP_TAGS = frozenset({"demo", "skip-execution"})


@dataclass(frozen=True)
class CodeCell:
    index: int  # position among all cells, 0-based
    source: str
    tags: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How a student finds the cell: its number and first line."""
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        if len(first) > 60:
            first = first[:57] + "..."
        return f"cell {self.index + 1}" + (f" ({first})" if first else "")


@dataclass(frozen=True)
class Submission:
    path: Path
    sha256: str
    notebook: NotebookNode
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def assignment_hint(self) -> str | None:
        meta = self.notebook.get("metadata", {}).get("grader", {})
        hint = meta.get("assignment") if isinstance(meta, dict) else None
        return hint if isinstance(hint, str) else None


def sha256_of(path: Path) -> str:
    """The file's digest; OSError for anything but a regular file (a named pipe would block forever)."""
    digest = hashlib.sha256()
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_submission(path: Path, *, max_mb: int = MAX_NOTEBOOK_MB) -> Submission:
    """Load a notebook, upgrading old formats; raise NotebookError naming the file and why."""
    path = Path(path)
    name = path.name
    if not path.exists():
        raise NotebookError(f"{name}: no such file")
    if not path.is_file():
        raise NotebookError(f"{name}: not a file")
    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        raise NotebookError(f"{name} is {size / 1024 / 1024:.0f} MB; a notebook may be at most {max_mb} MB "
                            "(clear large outputs before submitting)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not a notebook: it is not UTF-8 text (is it a binary file?)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"{name} is not a notebook: invalid JSON at line {exc.lineno}, "
                            f"column {exc.colno} ({exc.msg})") from None
    except RecursionError:
        raise NotebookError(_too_deep_message(name)) from None
    if _too_deep(data):
        raise NotebookError(_too_deep_message(name))
    return Submission(path=path, sha256=hashlib.sha256(raw).hexdigest(), **_as_notebook(data, name))


def _too_deep_message(name: str) -> str:
    return (f"{name} is not a notebook the grader can read: its JSON is nested more than {MAX_NESTING} "
            "levels deep (look at its metadata)")


def _too_deep(data: object) -> bool:
    """Whether lists and objects nest deeper than MAX_NESTING (checked without recursion)."""
    stack = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _as_notebook(data: object, name: str) -> dict:
    if not isinstance(data, dict) or "nbformat" not in data:
        raise NotebookError(f"{name} is JSON but not a Jupyter notebook (no 'nbformat' field)")
    version = data.get("nbformat")
    if version not in (2, 3, 4):
        raise NotebookError(f"{name} uses notebook format {version!r}; only formats 2, 3 and 4 can be graded")
    warnings_ = []
    if version in (2, 3):
        warnings_.append(f"{name} uses the old notebook format {version}; it was converted to format 4")
    if version == 4:
        warnings_.extend(_fill_optional_fields(data, name))
    captured: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat's own notices (missing cell ids...) are not the student's
            notebook = nbformat.reads(json.dumps(data), as_version=4, capture_validation_error=captured)
    except Exception as exc:  # nbformat raises many kinds for broken input
        raise NotebookError(f"{name} is not a valid notebook: {_one_line(exc)}") from None
    if captured.get("ValidationError") is not None:
        problem = getattr(captured["ValidationError"], "message", captured["ValidationError"])
        warnings_.append(f"{name} does not fully follow the notebook format ({_one_line(problem)}); "
                         "graded anyway")
    for i, cell in enumerate(notebook.get("cells", [])):
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), str) \
                or cell.get("cell_type") not in CELL_TYPES:
            raise NotebookError(f"{name}: cell {i + 1} is malformed (no cell_type or source)")
    return {"notebook": notebook, "warnings": tuple(warnings_)}


def _fill_optional_fields(data: dict, name: str) -> list[str]:
    """Editors that write notebooks by hand often drop fields Jupyter would fill in; so do we.
    A cell type from a newer format becomes a raw cell (kept in place, so cell numbers hold, never run)."""
    found = []
    data.setdefault("metadata", {})
    data.setdefault("nbformat_minor", 4)
    cells = data.get("cells")
    if not isinstance(cells, list):
        raise NotebookError(f"{name} is not a valid notebook: 'cells' is not a list")
    for i, cell in enumerate(cells):
        known = isinstance(cell, dict) and cell.get("cell_type") in CELL_TYPES
        if not isinstance(cell, dict) or (known and not isinstance(cell.get("source"), (str, list))):
            raise NotebookError(f"{name}: cell {i + 1} is malformed (no cell_type or source)")
        if not known:
            kind = str(cell.get("cell_type"))[:40]
            found.append(f"cell {i + 1} has the cell type {kind!r}, which the grader does not know; "
                         "it was not run")
            source = cell.get("source", "")
            cells[i] = cell = {"cell_type": "raw", "metadata": {},
                               "source": source if isinstance(source, (str, list)) else ""}
        cell.setdefault("metadata", {})
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
    return found


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def code_cells(notebook: NotebookNode) -> list[CodeCell]:
    """The code cells the grader runs, in order; demo cells are left out."""
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        tags = tuple(t for t in cell.get("metadata", {}).get("tags", []) if isinstance(t, str))
        if SKIP_TAGS.intersection(tags):
            continue
        cells.append(CodeCell(index=index, source=cell.source, tags=tags))
    return cells


def skipped_cells(notebook: NotebookNode) -> list[int]:
    return [i for i, cell in enumerate(notebook.cells)
            if cell.cell_type == "code" and SKIP_TAGS.intersection(cell.get("metadata", {}).get("tags", []))]
