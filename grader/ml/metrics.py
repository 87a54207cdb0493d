"""Scores from raw model outputs and the labels the child never saw, and plot data for feedback. Pure."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from grader.ml.task import TaskData

if TYPE_CHECKING:
    from grader.ml.training import TrainingRun


def two_class_scores(outputs: np.ndarray, kind: str) -> np.ndarray:
    """A binary classifier's one output per sample as two columns whose argmax is its prediction:
    a probability p as [1 - p, p] (class 1 above 0.5), a logit z as [0, z] (class 1 above 0)."""
    values = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)[:, 0]
    low = 1.0 - values if kind == "probability" else np.zeros_like(values)
    return np.stack([low, values], axis=1)


def two_class_run(run: TrainingRun, kind: str) -> TrainingRun:
    """The same run with every set of test outputs as two_class_scores (what the accuracy checks read)."""
    from dataclasses import replace

    return replace(run, test_outputs=tuple(two_class_scores(o, kind) for o in run.test_outputs))


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    if not np.all(np.isfinite(outputs)):
        outputs = np.nan_to_num(outputs, nan=-np.inf)
    return float(np.mean(outputs.argmax(axis=1) == labels))


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> list[list[int]]:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def classification_details(run: TrainingRun, data: TaskData, *, examples: int = 8) -> dict[str, Any]:
    """Plot data for feedback: loss and accuracy curves, confusion matrix, mistakes (images only)."""
    test_accuracy = [accuracy(o, data.test_y) for o in run.test_outputs]
    predicted = np.nan_to_num(run.final_outputs, nan=-np.inf).argmax(axis=1)
    wrong = np.flatnonzero(predicted != data.test_y)[:examples if data.test_x.ndim >= 3 else 0]
    labels = list(data.classes) or [str(i) for i in range(run.final_outputs.shape[1])]
    return {
        "series": {"train_loss": list(run.train_loss), "train_accuracy": list(run.train_accuracy),
                   "test_accuracy": test_accuracy[1:]},
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(predicted, data.test_y, len(labels))},
        "misclassified": [{"image": data.test_x[i].tolist(), "predicted": labels[predicted[i]],
                           "true": labels[data.test_y[i]]} for i in wrong],
        "training": training_summary(run, test_accuracy[-1], test_accuracy[0]),
    }


def training_summary(run: TrainingRun, test_accuracy: float | None, initial_accuracy: float | None
                     ) -> dict[str, Any]:
    summary = {"epochs": run.epochs_run, "steps": run.steps, "budget": run.budget.text(),
               "final_loss": run.train_loss[-1] if run.train_loss else None,
               "train_accuracy": run.train_accuracy[-1] if run.train_accuracy else None,
               "wall_s": round(run.wall_s, 2), "cpu_s": round(run.cpu_s, 2), "device": run.device,
               "stopped_early": run.stopped_early}
    if test_accuracy is not None:
        summary.update(test_accuracy=test_accuracy, initial_test_accuracy=initial_accuracy)
    return summary


def mean_squared_error(outputs: np.ndarray, targets: np.ndarray) -> float:
    """MSE of a one-output regressor's raw outputs; inf when they are not all finite."""
    predicted = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if len(predicted) != len(targets) or not np.all(np.isfinite(predicted)):
        return math.inf
    with np.errstate(over="ignore"):
        value = float(np.mean((predicted - targets) ** 2))
    return value if math.isfinite(value) else math.inf


def mean_absolute_error(outputs: np.ndarray, targets: np.ndarray) -> float:
    predicted = np.asarray(outputs, dtype=np.float64).reshape(-1)
    if len(predicted) != len(targets) or not np.all(np.isfinite(predicted)):
        return math.inf
    value = float(np.mean(np.abs(predicted - targets)))
    return value if math.isfinite(value) else math.inf


def regression_details(run: TrainingRun, data: TaskData, *, points: int = 1000,
                       scatter_labels: tuple[str, str] | None = ("actual (100k$)", "predicted (100k$)")
                       ) -> dict[str, Any]:
    """Plot data for feedback: loss and test MSE per epoch, predicted against actual on the test set
    (no scatter when `scatter_labels` is None)."""
    test_mse = [mean_squared_error(o, data.test_y) for o in run.test_outputs]
    predicted = run.final_outputs.reshape(-1)
    shown = np.linspace(0, len(predicted) - 1, min(points, len(predicted))).astype(int)
    summary = training_summary(run, None, None)
    del summary["train_accuracy"]
    summary.update(test_mse=test_mse[-1], initial_test_mse=test_mse[0])
    details = {"series": {"train_loss": list(run.train_loss), "test_mse": test_mse[1:]}, "training": summary}
    if scatter_labels is not None:
        details["scatter"] = {"x": data.test_y[shown].tolist(), "y": predicted[shown].tolist(),
                              "x_label": scatter_labels[0], "y_label": scatter_labels[1], "diagonal": True}
    return details


def field_details(*, x: np.ndarray, y: np.ndarray, values: np.ndarray, label: str,
                  points: tuple[np.ndarray, np.ndarray, np.ndarray], classes: tuple[str, ...] = (),
                  value_range: tuple[float, float] | None = None, title: str = "") -> dict[str, Any]:
    """details["field"]: a model's estimate over a grid of the plane (values[i][j] at x[j], y[i]), with data
    points (x, y, their target) on top; with `classes`, values and targets are class indexes."""
    finite = np.where(np.isfinite(values), values, np.nan)
    field = {"x": [float(v) for v in x], "y": [float(v) for v in y],
             "values": [[None if np.isnan(v) else float(v) for v in row] for row in finite], "label": label,
             "points": {"x": [float(v) for v in points[0]], "y": [float(v) for v in points[1]],
                        "value": [float(v) for v in points[2]]}}
    if classes:
        field["classes"] = list(classes)
    if value_range is not None:
        field["range"] = [float(value_range[0]), float(value_range[1])]
    if title:
        field["title"] = title
    return field

