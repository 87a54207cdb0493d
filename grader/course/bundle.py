"""The student bundle: what a student needs to check their work before submitting, and nothing more.

`grader assign` writes it beside the template (assignments/NAME.checks.json).
It holds, as data, the visible checks that are written as catalog kinds
(grader/checks/catalog.py): their calls and inputs, the grader's expected
values, the judge's or rule's name and parameters, the points, names and
hints; for model assignments the recipe's settings and a few training rows to
compare the model's own forward pass with its rebuild. Hidden checks appear by
id, name, points and hint only. It holds no reference code, no hidden check's
inputs or expected values and no test labels (tests/test_student_bundle.py
proves it for every assignment).

`assignment_from_bundle` turns a bundle back into an Assignment that
`grader check` grades like any other: the replayable checks run as they do
when grading, the rest say they are graded after submission.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from grader.checks.catalog import Preview, from_bundle, replayable
from grader.course.assignment import Assignment, Check
from grader.errors import UsageError
from grader.locations import ResourceRequest
from grader.sandbox.limits import Limits
from grader.scoring import Outcome

FORMAT = 1
SUFFIX = ".checks.json"
AFTER_SUBMITTING = "graded after you submit"


# --------------------------------------------------------------------------
# Values as JSON: arrays, tuples and non-finite floats kept


def encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__array__": {"dtype": value.dtype.str, "shape": list(value.shape),
                              "data": [encode(v) for v in value.reshape(-1).tolist()]}}
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("only string keys go into a bundle")
        return {k: encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a {type(value).__name__} cannot go into a bundle")


def decode(node: Any) -> Any:
    if isinstance(node, list):
        return [decode(v) for v in node]
    if isinstance(node, dict):
        if set(node) == {"__array__"}:
            spec = node["__array__"]
            data = [decode(v) for v in spec["data"]]
            return np.array(data, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        if set(node) == {"__float__"}:
            return float(node["__float__"])
        if set(node) == {"__tuple__"}:
            return tuple(decode(v) for v in node["__tuple__"])
        return {k: decode(v) for k, v in node.items()}
    return node


# --------------------------------------------------------------------------
# Writing


def build_bundle(assignment: Assignment, request: ResourceRequest) -> dict:
    """The bundle of an assignment: visible checks as data, hidden ones by name."""
    resources = assignment.resources(request) if assignment.resources and _needs_data(assignment) else None
    recipes: dict[str, Any] = {}
    checks = []
    for check in assignment.checks:
        entry = {"id": check.id, "name": check.name, "points": check.points, "visibility": check.visibility,
                 "hint": check.hint}
        if check.visibility == "visible" and replayable(check.run):
            replay = check.run.to_bundle(assignment.seed, resources)
            if "recipe" in replay:
                replay["recipe"] = _recipe_key(recipes, replay["recipe"])
            entry["replay"] = replay
        checks.append(entry)
    return {"format": FORMAT, "assignment": assignment.id, "title": assignment.title,
            "notebook": assignment.notebook, "seed": assignment.seed,
            "blocked_modules": list(assignment.blocked_modules), "limits": dataclasses.asdict(assignment.limits),
            "recipes": recipes, "checks": checks}


def _needs_data(assignment: Assignment) -> bool:
    return any(check.visibility == "visible" and replayable(check.run) and hasattr(check.run, "recipe")
               for check in assignment.checks)


def _recipe_key(recipes: dict[str, Any], recipe: dict) -> str:
    text = json.dumps(encode(recipe), sort_keys=True)
    for key, known in recipes.items():
        if json.dumps(encode(known), sort_keys=True) == text:
            return key
    key = f"recipe-{len(recipes)}"
    recipes[key] = recipe
    return key


def bundle_path(out_dir: Path, notebook: str) -> Path:
    return Path(out_dir) / (Path(notebook).stem + SUFFIX)


def render_bundle(bundle: dict) -> str:
    return json.dumps(encode(bundle), indent=1, sort_keys=True) + "\n"


# --------------------------------------------------------------------------
# Reading, and the assignment a student's check grades


def read_bundle(path: Path) -> dict:
    try:
        bundle = decode(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable student bundle ({exc})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT or "checks" not in bundle:
        raise UsageError(f"{path} is not a student bundle this grader reads (format {FORMAT})")
    return bundle


def find_bundle(notebook: Path, assignment_hint: str | None) -> Path:
    """The bundle beside the notebook: the template's name, else the one naming the notebook's assignment."""
    folder = Path(notebook).resolve().parent
    candidates = sorted(folder.glob(f"*{SUFFIX}"))
    named = folder / (Path(notebook).stem + SUFFIX)
    if named in candidates:
        return named
    matching = [p for p in candidates if assignment_hint and _assignment_of(p) == assignment_hint]
    if len(matching) == 1:
        return matching[0]
    if len(candidates) == 1 and not assignment_hint:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise UsageError(f"no student bundle for {Path(notebook).name} in {folder} (found: {found}): keep the "
                     f"*{SUFFIX} file that came with the assignment beside your notebook, or pass --bundle")


def _assignment_of(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("assignment")
    except (OSError, ValueError, AttributeError):
        return None


def assignment_from_bundle(bundle: dict, *, train: bool = False) -> Assignment:
    """The assignment `grader check` grades: visible replayable checks as they run when grading (model
    training as a short preview unless `train`), every other check saying it is graded after submitting."""
    preview = None if train else Preview()
    recipes = bundle.get("recipes", {})
    checks, recipe = [], None
    for entry in bundle["checks"]:
        replay = entry.get("replay")
        if replay is not None:
            if isinstance(replay.get("recipe"), str):
                replay = {**replay, "recipe": recipes[replay["recipe"]]}
            run = from_bundle(replay, preview=preview)
            recipe = getattr(run, "recipe", recipe)
        else:
            why = AFTER_SUBMITTING if entry["visibility"] == "hidden" else f"{AFTER_SUBMITTING} (not checkable here)"
            run = _after_submitting(why)
        checks.append(Check(entry["id"], entry["name"], entry["points"], run, visibility=entry["visibility"],
                            hint=entry.get("hint", "")))
    return Assignment(id=bundle["assignment"], title=bundle["title"], notebook=bundle["notebook"],
                      checks=tuple(checks), blocked_modules=tuple(bundle.get("blocked_modules", ())),
                      limits=Limits(**bundle["limits"]), seed=bundle["seed"],
                      resources=_lazy_resources(recipe) if recipe is not None and _trains(checks) else None)


def _after_submitting(why: str):
    return lambda ctx: Outcome.skipped(why)


def _trains(checks: list[Check]) -> bool:
    return any(type(c.run).__name__ == "ModelScore" for c in checks)


def _lazy_resources(recipe):
    """The recipe's data on the student's machine, or a note of what is missing (structure checks need none)."""
    from grader.checks.recipes import MissingData
    from grader.ml.datasets import DatasetMissing

    def load(request: ResourceRequest):
        try:
            return recipe.resources(request)
        except DatasetMissing as exc:
            return MissingData(str(exc))

    return load
