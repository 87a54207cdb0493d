"""The records that flow from checks to result.json and reports.

Plain frozen dataclasses with to/from dict; result.json is `GradeResult.to_dict()`,
and grader/schemas/result.schema.json (`result_schema()`) is its contract: a
field added here is added there, or tests/test_result_schema.py fails.

A check's `details` is free-form JSON, but these keys have one meaning
everywhere, so that reports can draw them (all optional):

    series             {"name": [float per epoch], ...} e.g. train_loss, test_accuracy
    series_x           {"label": str, "values": [number], "mark": number, "mark_label": str}
                                                  (optional, with series) the series are against these
                                                  x values, not epochs (e.g. polynomial degree): drawn
                                                  together on one chart, y on a log scale when it spans
                                                  decades, a vertical line at "mark" (e.g. a choice)
    confusion_matrix   {"labels": [str], "matrix": [[int]]} rows: true, columns: predicted
    misclassified      [{"image": [[0..255]] (H x W), "predicted": str, "true": str}]
    scatter            {"x": [float], "y": [float], "x_label": str, "y_label": str,
                        "diagonal": bool}          predicted vs actual
    curve              {"data_x": [...], "data_y": [...], "fit_x": [...], "fit_y": [...],
                        "label": str}             a fitted line or curve over the data
    field              {"x": [float] (nx), "y": [float] (ny), "values": [[float | null]] (ny rows of nx),
                        "label": str, "classes": [str], "range": [low, high], "title": str,
                        "points": {"x": [float], "y": [float], "value": [float]}}
                                                  a model's estimate over a grid of the plane (values[i][j]
                                                  at x[j], y[i]) with data points and their targets on top;
                                                  with "classes", values and targets are class indexes
                                                  (drawn as regions), else on one colour scale ("range"
                                                  when given)
    layers             [{"layer": str, "expected": str, "found": str, "ok": bool}]
    table              {"title": str, "columns": [str], "rows": [[str | number]]}
                                                  any small table, e.g. models side by side
    training           {"epochs": int, "steps": int, "final_loss": float, "train_accuracy": float,
                        "test_accuracy": float, "wall_s": float, "device": str, ...}
    traceback          [str] the student's frames of an error
    relative_error     float, or {"param": float | "inf"} per parameter (with "rtol")

Details of a hidden check may hold the inputs and expected values; reports
show them to staff only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from grader.states import CellProblemKind, CheckStatus, ResultStatus

CHECK_STATUSES = tuple(CheckStatus)


def result_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every result.json meets; shipped in the package."""
    text = (resources.files("grader") / "schemas" / "result.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class CheckResult:
    id: str
    name: str
    score: float
    max_score: float
    status: str  # a CheckStatus
    message: str
    visibility: str = "visible"
    details: dict[str, Any] = field(default_factory=dict)
    hint: str = ""  # what a student sees instead of message and details when a hidden check fails

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class CellProblem:
    """Something that went wrong while running one cell of the student's notebook."""

    cell_index: int
    kind: CellProblemKind
    message: str
    source: str = ""
    error_name: str = ""
    traceback: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellProblem:
        fields = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        return cls(**{**fields, "kind": CellProblemKind(fields["kind"])})


@dataclass(frozen=True)
class GradeResult:
    assignment: str
    submission: str
    submission_sha256: str
    score: float
    max_score: float
    status: str  # a ResultStatus
    checks: list[CheckResult]
    environment: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    # Who submitted it, as the LMS download named them (grader.intake.collect.StudentIdentity.to_dict():
    # lms "canvas" | "moodle" | "", name, user_id, submission_id, participant_id, late); empty
    # outside a batch. Exports read it to give grades back to the LMS.
    student: dict[str, Any] = field(default_factory=dict)

    @property
    def has_grade(self) -> bool:
        """False when the grader could not finish: its score is no grade, and nothing may show it as one."""
        return self.status != ResultStatus.GRADER_ERROR

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checks"] = [c.to_dict() for c in self.checks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradeResult:
        if not isinstance(data, dict) or not isinstance(data.get("checks", []), list):
            raise ValueError("not a JSON object with a list of checks")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["checks"] = [CheckResult.from_dict(c) for c in data.get("checks", [])]
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable) + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)  # readers never see half a result

    @classmethod
    def read(cls, path: Path) -> GradeResult:
        return cls.from_json(Path(path).read_bytes())

    @classmethod
    def from_json(cls, text: str | bytes) -> GradeResult:
        return cls.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    """Numbers from numpy or torch that slipped into details become plain floats."""
    for attr in ("item", "tolist"):
        if hasattr(value, attr):
            return getattr(value, attr)()
    return str(value)
