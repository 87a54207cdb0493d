"""The training budget a notebook asks for (its TRAINING dict), read through the check context and
judged by the pure rules of grader.ml.budget."""

from __future__ import annotations

from grader.checks.context import CheckContext
from grader.errors import StudentError
from grader.ml.budget import Budget, BudgetCaps, BudgetChoice, budget_from_student
from grader.states import StudentErrorKind


def student_budget(ctx: CheckContext, *, default: Budget, caps: BudgetCaps, name: str = "TRAINING",
                   key: str | None = None) -> BudgetChoice:
    """The notebook's TRAINING dict by these rules; the defaults when it defines none. With `key`, TRAINING
    holds one such dict per key (TRAINING["xor"]); a key it does not hold gets the defaults too."""
    try:
        requested = ctx.get(name)
    except StudentError as exc:
        if exc.kind != StudentErrorKind.MISSING:
            raise
        return BudgetChoice(default)
    if key is None:
        return budget_from_student(requested, default=default, caps=caps, name=name)
    if requested is None:
        return BudgetChoice(default)
    if not isinstance(requested, dict):
        return BudgetChoice(None, refused=f"{name} is a {type(requested).__name__}, not a dict of settings per "
                                         "task")
    return budget_from_student(requested.get(key), default=default, caps=caps, name=f"{name}[{key!r}]")
