"""The copy of a student's notebook to upload: outputs cleared, the assignment named in its metadata.

Outputs are cleared because the grader runs the notebook itself (they would only make the upload
larger and show nothing the grader reads); the metadata names the assignment so that the grader
and the LMS integrations recognise it whatever the file is called.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from grader.errors import UsageError


def write_submission(notebook: Path, bundle: dict, target: Path | None = None) -> Path:
    notebook = Path(notebook)
    try:
        copy = nbformat.read(notebook, as_version=4)
    except Exception as exc:  # any unreadable notebook is the same to the student
        raise UsageError(f"{notebook.name} cannot be read as a notebook, so no copy to upload was written ({exc})") \
            from None
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    copy.metadata.setdefault("grader", {})["assignment"] = bundle["assignment"]
    target = Path(target) if target else notebook.with_name(f"{notebook.stem}-submit.ipynb")
    if target.resolve() == notebook.resolve():
        raise UsageError("--submit-to names the notebook itself; choose another file for the copy to upload")
    nbformat.write(copy, target)
    return target
