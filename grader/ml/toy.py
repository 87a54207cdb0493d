"""Toy tasks on points of the plane, drawn by the grader (toy-2d). Pure: NumPy only.

Each task is a rule from a point (x1, x2) of the square [-1, 1]² to its
target. The grader draws the points itself, fresh for each task from its own
seed and the task's name: training points, test points (their targets stay
in the grader: the trainer sees test inputs only) and a grid over the square,
which the trainer runs the trained model on so that the feedback can draw the
model's estimate over the plane with the data on top (details "field").
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.ml.metrics import field_details
from grader.ml.task import TaskData

LOW, HIGH = -1.0, 1.0  # the square the points are drawn from
SHOWN_POINTS = 300  # training points drawn over the field in the feedback


def _product(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] * x[:, 1]).astype(np.float32)


def _signs_differ(x: np.ndarray) -> np.ndarray:
    return ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64)


def _quadrant(x: np.ndarray) -> np.ndarray:
    """0 for x1 > 0, x2 > 0 (quadrant I), then counter-clockwise: 1 (II), 2 (III), 3 (IV)."""
    left, low = x[:, 0] <= 0, x[:, 1] <= 0
    return np.where(low, np.where(left, 2, 3), np.where(left, 1, 0)).astype(np.int64)


@dataclass(frozen=True)
class ToyTask:
    name: str
    kind: str  # a ModelTask kind: "regression" | "binary" | "classification"
    n_outputs: int
    rule: Callable[[np.ndarray], np.ndarray]
    text: str  # the rule, in words
    classes: tuple[str, ...] = ()


TOY_TASKS = {
    "prod": ToyTask("prod", "regression", 1, _product, "y = x1 · x2"),
    "xor": ToyTask("xor", "binary", 1, _signs_differ, "class 1 where x1 and x2 have different signs (XOR)",
                   classes=("0: same sign", "1: signs differ")),
    "quadrants": ToyTask("quadrants", "classification", 4, _quadrant, "the quadrant of (x1, x2)",
                         classes=("I: x1>0, x2>0", "II: x1<0, x2>0", "III: x1<0, x2<0", "IV: x1>0, x2<0")),
}


def grid_axis(side: int) -> np.ndarray:
    return np.linspace(LOW, HIGH, side, dtype=np.float32)


def grid_points(side: int) -> np.ndarray:
    """side × side points of the square, row by row: x1 varies fastest (values[i][j] at x1[j], x2[i])."""
    axis = grid_axis(side)
    x1, x2 = np.meshgrid(axis, axis)
    return np.stack([x1.reshape(-1), x2.reshape(-1)], axis=1)


def draw_points(name: str, *, seed: int, part: str, n: int) -> np.ndarray:
    """n points uniform in the square, from the grader's seed, the task's name and the part (train / test)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(part.encode())])
    return rng.uniform(LOW, HIGH, size=(n, 2)).astype(np.float32)


def toy_task_data(name: str, *, seed: int, n_train: int, n_test: int, grid_side: int) -> TaskData:
    task = TOY_TASKS[name]
    train_x = draw_points(name, seed=seed, part="train", n=n_train)
    test_x = draw_points(name, seed=seed, part="test", n=n_test)
    test_y = task.rule(test_x)
    return TaskData(name=f"toy-{name}", version=f"toy-{name}-{seed}-{n_train}-{n_test}", train_x=train_x,
                    train_y=task.rule(train_x), test_x=test_x,
                    test_y=test_y.astype(np.float64) if task.kind == "regression" else test_y,
                    classes=task.classes, extra_x=grid_points(grid_side))


def toy_field(name: str, data: TaskData, outputs: np.ndarray, *, output_kind: str = "") -> dict:
    """details["field"]: the trained model's estimate on the grid (TrainingRun.extra_outputs), with the first
    training points on top: a regressor's value, a binary classifier's probability of class 1, a
    classifier's predicted class."""
    task = TOY_TASKS[name]
    side = round(np.sqrt(len(outputs)))
    axis = grid_axis(side)
    outputs = np.asarray(outputs, dtype=np.float64).reshape(side * side, -1)
    shown = slice(0, SHOWN_POINTS)
    points = (data.train_x[shown, 0], data.train_x[shown, 1], np.asarray(data.train_y[shown], dtype=np.float64))
    common: dict[str, Any] = dict(x=axis, y=axis, points=points, title=f"{name}: {task.text}")
    if task.kind == "regression":
        return field_details(values=outputs[:, 0].reshape(side, side), label="your model's estimate of y",
                             **common)
    if task.kind == "binary":
        values = outputs[:, 0] if output_kind == "probability" else _sigmoid(outputs[:, 0])
        return field_details(values=values.reshape(side, side), label="estimated probability of class 1",
                             value_range=(0.0, 1.0), **common)
    scores = np.nan_to_num(outputs, nan=-np.inf)
    return field_details(values=scores.argmax(axis=1).reshape(side, side).astype(np.float64),
                         label="the class your model predicts", classes=task.classes, **common)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return 1.0 / (1.0 + np.exp(-z))
