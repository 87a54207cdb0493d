"""The gradebook export formats, by name: `grader export --format NAME`.

Each format is one module holding a pure `render(gradebook, *, checks)` and
its `FORMAT`; adding a format means one such file and one line here.
"""

from __future__ import annotations

from grader.reports import export_canvas, export_csv, export_junit, export_moodle
from grader.reports.gradebook import ExportFormat

FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    export_csv.FORMAT,
    export_canvas.FORMAT,
    export_moodle.FORMAT,
    export_junit.FORMAT,
)}
