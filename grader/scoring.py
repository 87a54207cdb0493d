"""Points: what a check's outcome is worth, and the total. Pure."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from grader.states import CheckStatus


@dataclass(frozen=True)
class Outcome:
    """What a check found: the fraction of its points earned and why.

    `status` is derived from the fraction unless a check sets it: "error"
    when the check could not be evaluated (timeout, dead kernel), "skipped"
    when it did not apply.
    """

    fraction: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    status: CheckStatus | None = None

    @classmethod
    def passed(cls, message: str, **details: Any) -> Outcome:
        return cls(1.0, message, details)

    @classmethod
    def failed(cls, message: str, **details: Any) -> Outcome:
        return cls(0.0, message, details)

    @classmethod
    def partial(cls, fraction: float, message: str, **details: Any) -> Outcome:
        return cls(fraction, message, details)

    @classmethod
    def error(cls, message: str, **details: Any) -> Outcome:
        return cls(0.0, message, details, status=CheckStatus.ERROR)

    @classmethod
    def skipped(cls, message: str, **details: Any) -> Outcome:
        return cls(0.0, message, details, status=CheckStatus.SKIPPED)


def points(outcome: Outcome, max_points: float) -> float:
    """Points earned, rounded to hundredths; a NaN or out-of-range fraction earns what it can."""
    fraction = outcome.fraction
    if not isinstance(fraction, (int, float)) or math.isnan(fraction):
        fraction = 0.0
    fraction = min(1.0, max(0.0, float(fraction)))
    return round(fraction * max_points, 2)


def status_of(outcome: Outcome) -> CheckStatus:
    if outcome.status is not None:
        return outcome.status
    return CheckStatus.PASSED if outcome.fraction >= 1.0 else CheckStatus.FAILED


def linear_credit(value: float, *, floor: float, target: float) -> float:
    """0 at or below `floor`, 1 at or above `target`, linear between."""
    if value >= target:
        return 1.0
    if value <= floor or target <= floor:
        return 0.0
    return (value - floor) / (target - floor)
