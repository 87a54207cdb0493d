"""Students' PyTorch models: what the grader learns about them, and its training runs.

The child builds, inspects and trains the model (grader/child/training.py);
this module sends it the task and the budget, parses what comes back into
records, and computes every score-relevant number itself: test labels stay
here, the child returns only raw outputs for the test images.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.context import CheckContext, StudentError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
# The functions the child may report joining two layers, or a regressor's last Linear layer to its
# output (child/training.py's _FUNCTIONS), in the words a student reads.
FUNCTIONS = {
    "identity": "nothing", "relu": "a ReLU", "sigmoid": "a sigmoid", "tanh": "a tanh", "softmax": "a softmax",
    "log-softmax": "a log-softmax", "hardtanh": "a hardtanh", "relu6": "a ReLU6", "hardsigmoid": "a hard sigmoid",
    "softplus": "a softplus", "elu": "an ELU", "leaky-relu": "a leaky ReLU", "gelu": "a GELU", "silu": "a SiLU",
    "other": "something else",
}


# --------------------------------------------------------------------------
# The task and its data


@dataclass(frozen=True)
class ModelTask:
    kind: str  # "classification" | "regression"
    n_outputs: int
    factory: str = "build_model"
    factory_args: tuple = ()
    max_params: int = 50_000_000
    max_train_seconds: float = 900.0


@dataclass(frozen=True)
class TaskData:
    """Arrays for one task. test_y never leaves the grader's process."""

    name: str
    version: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...] = ()


def image_task_data(images, *, seed: int) -> TaskData:
    """An image dataset with its test set in a secret order, so the order carries no labels."""
    order = np.random.default_rng([seed, 7919]).permutation(len(images.test_labels))
    return TaskData(name=images.name, version=images.version, train_x=images.train_images,
                    train_y=images.train_labels.astype(np.int64), test_x=images.test_images[order],
                    test_y=images.test_labels[order].astype(np.int64), classes=images.classes)


def _data_files(ctx: CheckContext, data: TaskData) -> dict[str, str]:
    """Write the child's view of the data (no test labels) once per submission."""

    def write() -> dict[str, str]:
        folder = ctx.shared_file("data")
        folder.mkdir(mode=0o755)
        files = {"train_x": data.train_x, "train_y": data.train_y, "test_x": data.test_x,
                 "sample": data.train_x[:5]}
        paths = {}
        for key, array in files.items():
            np.save(folder / f"{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
            paths[key] = str(folder / f"{key}.npy")
        return paths

    return ctx.memo("data-files", write)


# --------------------------------------------------------------------------
# What the model is


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    module: str
    params: int
    in_features: int | None = None
    out_features: int | None = None

    @property
    def from_torch(self) -> bool:
        return self.module.startswith("torch.nn")

    @property
    def is_linear(self) -> bool:
        return self.type == "Linear" and self.from_torch

    def shape_text(self) -> str:
        if self.in_features is not None and self.out_features is not None:
            return f"{self.type}({self.in_features} → {self.out_features})"
        return self.type


@dataclass(frozen=True)
class ModelDescription:
    is_module: bool
    type_name: str = ""
    refused_params: int | None = None  # build refused: this many parameters planned
    class_name: str = ""
    layers: tuple[Layer, ...] = ()
    total_params: int = 0
    input_style: str | None = None  # "image" (B, 1, 28, 28) | "flat" (B, 784)
    tuple_index: int | None = None
    tuple_length: int | None = None
    output_shape: tuple[int, ...] = ()
    output_kind: str = ""  # "logits" | "probabilities" | "log-probabilities"
    output_finite: bool = True
    forward_errors: dict[str, str] = field(default_factory=dict)
    activations: tuple[str, ...] = ()
    linears_run: tuple[str, ...] | None = None  # Linear layers the forward pass ran, in order; None: unseen
    trainable_params: int | None = None
    # regression only, seen on inputs scaled up to 1000 times (see child/training.py `_output_head`)
    output_activation: str | None = None  # after the last nn.Linear: "identity", "sigmoid", ..., "other"
    last_module: str = ""  # the torch.nn module whose output is the model's output, e.g. "Sigmoid"
    output_range: tuple[float, float] | None = None
    task: str = "classification"  # the ModelTask kind it was described for

    @property
    def linear_layers(self) -> list[Layer]:
        """The Linear layers of the network: those the forward pass ran, in the order it ran them
        (each once); the ones defined, when the forward pass could not be watched."""
        defined = [layer for layer in self.layers if layer.is_linear]
        if self.linears_run is None:
            return defined
        by_name = {layer.name: layer for layer in defined}
        return [by_name[name] for name in dict.fromkeys(self.linears_run) if name in by_name]

    @property
    def unused_linear_layers(self) -> list[Layer]:
        running = {layer.name for layer in self.linear_layers}
        return [layer for layer in self.layers if layer.is_linear and layer.name not in running]

    def style_text(self) -> str:
        """What the grader detected, in words a student recognises."""
        parts = []
        if self.input_style == "image":
            parts.append("takes images of shape (B, 1, 28, 28)")
        elif self.input_style == "flat":
            parts.append("takes a batch of feature rows" if self.task == "regression"
                         else "takes flat inputs of shape (B, 784)")
        if self.tuple_length:
            parts.append(f"returns a tuple of {self.tuple_length}; the grader trains on element "
                         f"{self.tuple_index} ({self.output_kind})")
        elif self.output_kind:
            parts.append(f"returns {self.output_kind}")
        return ", ".join(parts)


def _int(value: Any, default: int | None = None) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else default


def description_from(answer: Any, task: str = "classification") -> ModelDescription:
    """Parse the child's answer; it is untrusted, so every field is checked."""
    if not isinstance(answer, dict):
        raise StudentError("the grader got a malformed description of the model", kind="broken")
    if answer.get("refused"):
        return ModelDescription(is_module=False, refused_params=_int(answer.get("planned_params"), 0))
    if not answer.get("is_module"):
        return ModelDescription(is_module=False, type_name=str(answer.get("type", ""))[:100])
    layers = []
    for item in answer.get("layers", [])[:10_000]:
        if isinstance(item, dict):
            layers.append(Layer(name=str(item.get("name", ""))[:200], type=str(item.get("type", ""))[:100],
                                module=str(item.get("module", ""))[:200], params=_int(item.get("params"), 0),
                                in_features=_int(item.get("in_features")),
                                out_features=_int(item.get("out_features"))))
    errors = answer.get("forward_errors") or {}
    return ModelDescription(
        is_module=True, task=task, class_name=str(answer.get("class", ""))[:100], layers=tuple(layers),
        total_params=_int(answer.get("total_params"), 0),
        input_style=answer.get("input_style") if answer.get("input_style") in ("image", "flat") else None,
        tuple_index=_int(answer.get("tuple_index")), tuple_length=_int(answer.get("tuple_length")),
        output_shape=tuple(_int(v, 0) for v in answer.get("output_shape", []) if isinstance(v, (int, float))),
        output_kind=str(answer.get("output_kind", ""))
        if answer.get("output_kind") in ("logits", "probabilities", "log-probabilities") else "",
        output_finite=bool(answer.get("output_finite", True)),
        forward_errors={str(k): str(v)[:300] for k, v in errors.items()} if isinstance(errors, dict) else {},
        activations=tuple(a if a in FUNCTIONS else "other" for a in answer.get("activations", [])[:100]),
        linears_run=tuple(str(n)[:200] for n in answer["linears_run"][:10_000])
        if isinstance(answer.get("linears_run"), list) else None,
        trainable_params=_int(answer.get("trainable_params")),
        output_activation=answer.get("output_activation") if answer.get("output_activation") in FUNCTIONS
        else None,
        last_module=answer.get("last_module") if isinstance(answer.get("last_module"), str)
        and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", answer["last_module"]) else "",
        output_range=_range(answer.get("output_range")),
    )


def _range(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    low, high = float(value[0]), float(value[1])
    return (low, high) if low <= high else None


def describe_model(ctx: CheckContext, task: ModelTask, data: TaskData) -> ModelDescription:
    """Build the student's model in the child and describe it (once per submission)."""

    def run() -> ModelDescription:
        files = _data_files(ctx, data)
        payload = {"factory": task.factory, "args": list(task.factory_args), "max_params": task.max_params,
                   "seed": ctx.seed, "sample": files["sample"], "n_outputs": task.n_outputs, "task": task.kind}
        return description_from(ctx.run_child("training", "inspect", payload, what=task.factory), task.kind)

    return ctx.memo("describe-model", run)


# --------------------------------------------------------------------------
# How the grader trains it


@dataclass(frozen=True)
class Budget:
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    loss: str = ""  # regression: "mse" | "mae"

    def text(self) -> str:
        loss = f", {self.loss} loss" if self.loss else ""
        epochs = f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{self.optimizer}, lr {self.lr:g}, {epochs}, batch size {self.batch_size}{loss}"


@dataclass(frozen=True)
class BudgetCaps:
    max_epochs: int
    lr_range: tuple[float, float] = (1e-6, 1.0)
    batch_range: tuple[int, int] = (8, 1024)
    optimizers: tuple[str, ...] = OPTIMIZERS
    losses: tuple[str, ...] = ()


def budget_from_student(requested: Any, *, default: Budget, caps: BudgetCaps) -> tuple[Budget, list[str]]:
    """The student's TRAINING dict, clamped to the caps; notes say what was changed and why."""
    if requested is None:
        return default, []
    if not isinstance(requested, dict):
        return default, [f"TRAINING is a {type(requested).__name__}, not a dict: the defaults were used"]
    notes: list[str] = []
    unknown = sorted(str(k) for k in requested if k not in ("lr", "epochs", "batch_size", "optimizer", "loss"))
    if unknown:
        notes.append(f"ignored unknown TRAINING keys: {', '.join(unknown)}")

    def number(key: str, kind, low, high, fallback):
        value = requested.get(key, fallback)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            notes.append(f"TRAINING[{key!r}] = {value!r} is not a number: used {fallback}")
            return fallback
        clamped = kind(min(max(value, low), high))
        if clamped != value:
            notes.append(f"TRAINING[{key!r}] = {value:g} is outside [{low:g}, {high:g}]: used {clamped:g}")
        return clamped

    def choice(key: str, allowed: tuple[str, ...], fallback: str) -> str:
        value = requested.get(key, fallback)
        value = value.lower() if isinstance(value, str) else value
        if value not in allowed:
            notes.append(f"TRAINING[{key!r}] = {value!r} is not one of {', '.join(allowed)}: used {fallback}")
            return fallback
        return value

    budget = Budget(
        optimizer=choice("optimizer", caps.optimizers, default.optimizer),
        lr=number("lr", float, *caps.lr_range, default.lr),
        epochs=number("epochs", int, 1, caps.max_epochs, default.epochs),
        batch_size=number("batch_size", int, *caps.batch_range, default.batch_size),
        loss=choice("loss", caps.losses, default.loss) if caps.losses else default.loss,
    )
    return budget, notes


def student_budget(ctx: CheckContext, *, default: Budget, caps: BudgetCaps, name: str = "TRAINING"
                   ) -> tuple[Budget, list[str]]:
    """The notebook's TRAINING dict clamped to the caps; the defaults when it defines none."""
    try:
        requested = ctx.get(name)
    except StudentError as exc:
        if exc.kind != "missing":
            raise
        return default, []
    return budget_from_student(requested, default=default, caps=caps)


@dataclass(frozen=True)
class TrainingRun:
    epochs_run: int
    steps: int
    train_loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_outputs: tuple[np.ndarray, ...]  # before training, then after each epoch
    stopped_early: str | None
    wall_s: float
    device: str
    budget: Budget

    @property
    def final_outputs(self) -> np.ndarray:
        return self.test_outputs[-1]


def training_run_from(answer: Any, *, budget: Budget, n_test: int, n_outputs: int) -> TrainingRun:
    if not isinstance(answer, dict) or not isinstance(answer.get("history"), dict):
        raise StudentError("the grader got a malformed training record", kind="broken")
    outputs = []
    for array in answer.get("test_outputs", []):
        if not isinstance(array, np.ndarray) or array.shape != (n_test, n_outputs) or array.dtype.kind != "f":
            raise StudentError("the grader got test outputs of the wrong shape from training", kind="broken")
        outputs.append(array.astype(np.float64))
    if not outputs:
        raise StudentError("training returned no test outputs", kind="broken")
    history = answer["history"]

    def floats(key: str) -> tuple[float, ...]:
        return tuple(float(v) if isinstance(v, (int, float)) else math.nan for v in history.get(key, []))

    stopped = answer.get("stopped_early")
    return TrainingRun(epochs_run=_int(answer.get("epochs_run"), 0), steps=_int(answer.get("steps"), 0),
                       train_loss=floats("train_loss"), train_accuracy=floats("train_accuracy"),
                       test_outputs=tuple(outputs), stopped_early=str(stopped)[:300] if stopped else None,
                       wall_s=float(answer.get("wall_s", 0.0)) if isinstance(answer.get("wall_s"), (int, float))
                       else 0.0, device=str(answer.get("device", ""))[:20], budget=budget)


def train_model(ctx: CheckContext, task: ModelTask, data: TaskData, description: ModelDescription,
                budget: Budget) -> TrainingRun:
    """Train a fresh model with the grader's budget and seed (once per submission)."""

    def run() -> TrainingRun:
        if not description.is_module or description.input_style is None:
            raise StudentError("the model could not be trained: " + (
                "its forward pass failed" if description.is_module else "build_model did not return a model"),
                kind="exception")
        files = _data_files(ctx, data)
        loss_kind = f"regression-{budget.loss}" if task.kind == "regression" else description.output_kind
        payload = {"factory": task.factory, "args": list(task.factory_args), "max_params": task.max_params,
                   "seed": ctx.seed, "device": ctx.device, "task": task.kind, "n_outputs": task.n_outputs,
                   "train_x": files["train_x"], "train_y": files["train_y"], "test_x": files["test_x"],
                   "input_style": description.input_style, "tuple_index": description.tuple_index,
                   "loss_kind": loss_kind, "max_seconds": task.max_train_seconds,
                   "budget": {"optimizer": budget.optimizer, "lr": budget.lr, "epochs": budget.epochs,
                              "batch_size": budget.batch_size}}
        answer = ctx.run_child("training", "train", payload, what=f"training {task.factory}()",
                               timeout_s=task.max_train_seconds + 120)
        run = training_run_from(answer, budget=budget, n_test=len(data.test_y), n_outputs=task.n_outputs)
        ctx.timings["train_s"] = round(ctx.timings.get("train_s", 0.0) + run.wall_s, 3)
        return run

    return ctx.memo("train-model", run)


# --------------------------------------------------------------------------
# Scores computed here, from raw outputs and the labels the child never saw


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    if not np.all(np.isfinite(outputs)):
        outputs = np.nan_to_num(outputs, nan=-np.inf)
    return float(np.mean(outputs.argmax(axis=1) == labels))


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, n_classes: int) -> list[list[int]]:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def classification_details(run: TrainingRun, data: TaskData, *, examples: int = 8) -> dict[str, Any]:
    """Plot data for feedback: loss and accuracy curves, confusion matrix, mistakes."""
    test_accuracy = [accuracy(o, data.test_y) for o in run.test_outputs]
    predicted = np.nan_to_num(run.final_outputs, nan=-np.inf).argmax(axis=1)
    wrong = np.flatnonzero(predicted != data.test_y)[:examples]
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
               "wall_s": round(run.wall_s, 2), "device": run.device, "stopped_early": run.stopped_early}
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


def regression_details(run: TrainingRun, data: TaskData, *, points: int = 1000) -> dict[str, Any]:
    """Plot data for feedback: loss and test MSE per epoch, predicted against actual on the test set."""
    test_mse = [mean_squared_error(o, data.test_y) for o in run.test_outputs]
    predicted = run.final_outputs.reshape(-1)
    shown = np.linspace(0, len(predicted) - 1, min(points, len(predicted))).astype(int)
    summary = training_summary(run, None, None)
    del summary["train_accuracy"]
    summary.update(test_mse=test_mse[-1], initial_test_mse=test_mse[0])
    return {
        "series": {"train_loss": list(run.train_loss), "test_mse": test_mse[1:]},
        "scatter": {"x": data.test_y[shown].tolist(), "y": predicted[shown].tolist(),
                    "x_label": "actual (100k$)", "y_label": "predicted (100k$)", "diagonal": True},
        "training": summary,
    }

