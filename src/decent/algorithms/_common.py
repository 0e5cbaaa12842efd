"""Validation helpers shared by the algorithm dataclasses."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from decent.algorithms.base import LearningRate, as_schedule


class AlgorithmError(ValueError):
    """Bad hyperparameters; the message names the field, the value and the rule."""


def check_lr(owner: str, lr: LearningRate) -> Callable[[int], float]:
    try:
        return as_schedule(lr)
    except ValueError as err:
        raise AlgorithmError(f"{owner}.lr: {err}") from None


def check_local_steps(owner: str, local_steps: Any) -> None:
    if not isinstance(local_steps, int) or isinstance(local_steps, bool) or local_steps < 1:
        raise AlgorithmError(
            f"{owner}.local_steps must be an integer >= 1 (1 = communicate every round), "
            f"got {local_steps!r}"
        )


def check_finite(owner: str, field: str, value: Any, *, minimum: float | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (minimum is not None and value < minimum):
        rule = "a finite number" + (f" >= {minimum}" if minimum is not None else "")
        raise AlgorithmError(f"{owner}.{field} must be {rule}, got {value!r}")


def communicates(t: int, local_steps: int) -> bool:
    """Whether round ``t`` ends with communication: every ``local_steps``-th round."""
    return t % local_steps == 0
