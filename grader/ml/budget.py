"""The training budget: what the spec allows, what the student asked for, and what the grader runs.

A student's setting is used as given wherever it costs the grader nothing: a
learning rate is taken whatever its value, as long as the optimizer accepts
it (a finite number, not negative). What costs budget (epochs, the batch size
that sets the number of steps) is clamped to the nearest allowed value, and
the notes say so. A setting that is not a number, or an optimizer or loss the
spec does not offer, earns no training: the grader never swaps in a better
value of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
TRAINING_KEYS = ("lr", "epochs", "batch_size", "optimizer", "loss")


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

    def steps(self, n_train: int) -> int:
        """Optimizer steps a full run takes: every batch of every epoch, the last one short."""
        return self.epochs * math.ceil(n_train / self.batch_size)


@dataclass(frozen=True)
class BudgetCaps:
    max_epochs: int
    batch_range: tuple[int, int] = (8, 1024)
    optimizers: tuple[str, ...] = OPTIMIZERS
    losses: tuple[str, ...] = ()


@dataclass(frozen=True)
class BudgetChoice:
    """The budget the grader trains with, or why it does not train at all."""

    budget: Budget | None
    notes: list[str] = field(default_factory=list)
    refused: str = ""  # set when budget is None


def learning_rate_problem(value: Any, name: str) -> str:
    """Why `value` cannot be a learning rate ("" when the optimizer accepts it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"{name} = {_shown(value)} is not a number"
    if value < 0:
        return f"{name} = {value:g} is negative"
    return ""


def budget_from_student(requested: Any, *, default: Budget, caps: BudgetCaps, name: str = "TRAINING"
                        ) -> BudgetChoice:
    """The student's TRAINING dict, clamped only where it costs budget."""
    if requested is None:
        return BudgetChoice(default)
    if not isinstance(requested, dict):
        return BudgetChoice(None, refused=f"{name} is a {type(requested).__name__}, not a dict")
    notes: list[str] = []
    unknown = sorted(str(k) for k in requested if k not in TRAINING_KEYS)
    if unknown:
        notes.append(f"ignored unknown {name} keys: {', '.join(unknown)}")
    lr = requested.get("lr", default.lr)
    problem = learning_rate_problem(lr, f"{name}['lr']")
    if problem:
        return BudgetChoice(None, refused=problem)

    def counted(key: str, low: int, high: int, fallback: int) -> int | str:
        value = requested.get(key, fallback)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name}[{key!r}] = {_shown(value)} is not a number"
        clamped = int(min(max(round(value), low), high))
        if clamped != value:
            notes.append(f"{name}[{key!r}] = {value:g} is outside [{low}, {high}]: the grader used {clamped}")
        return clamped

    def chosen(key: str, allowed: tuple[str, ...], fallback: str) -> str | None:
        value = requested.get(key, fallback)
        value = value.lower() if isinstance(value, str) else value
        return value if value in allowed else None

    epochs = counted("epochs", 1, caps.max_epochs, default.epochs)
    batch_size = counted("batch_size", *caps.batch_range, default.batch_size)
    if isinstance(epochs, str):
        return BudgetChoice(None, refused=epochs)
    if isinstance(batch_size, str):
        return BudgetChoice(None, refused=batch_size)
    optimizer = chosen("optimizer", caps.optimizers, default.optimizer)
    if optimizer is None:
        return BudgetChoice(None, refused=f"{name}['optimizer'] = {_shown(requested.get('optimizer'))} is not one "
                                         f"of {', '.join(caps.optimizers)}")
    loss = chosen("loss", caps.losses, default.loss) if caps.losses else default.loss
    if loss is None:  # only a chosen loss can be refused
        return BudgetChoice(None, refused=f"{name}['loss'] = {_shown(requested.get('loss'))} is not one of "
                                         f"{', '.join(caps.losses)}")
    return BudgetChoice(Budget(optimizer=optimizer, lr=float(lr), epochs=epochs, batch_size=batch_size, loss=loss),
                        notes)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
