"""Argument checks shared by the task builders; every failure is a :class:`TaskError`."""

from __future__ import annotations

import math
import numbers
from typing import Annotated, Any, Literal

import annotated_types as at

from decent._params import SEED, SIZE, SIZE_MAX, Doc
from decent.tasks.base import TaskError

# Declarations shared by the task builders (read by the config schema).
SPREAD = at.Interval(ge=0.0, le=1e3)
"""A spread of means or optima: beyond 1e3 logits and squares leave float range."""
Dim = Annotated[int, SIZE, Doc("Dimension d.")]
BatchSize = Annotated[int, SIZE, Doc("Samples per node per round.")]
L2 = Annotated[float, at.Interval(ge=0.0, le=1e6), Doc("Ridge coefficient.")]
Components = Annotated[
    int | None,
    at.Interval(ge=1, le=SIZE_MAX),
    Doc(
        "K: node i holds components i, i + n, ... and samples one uniformly (a multiple "
        "of num_nodes; None: one per node)."
    ),
]
ProblemSeed = Annotated[int, SEED, Doc("Seed of the problem, not of the samples.")]
PartitionSeed = Annotated[int, SEED, Doc("Seed of the partition.")]
SplitSeed = Annotated[int, SEED, Doc("Seed of the train/test split.")]
TestFraction = Annotated[float, at.Interval(ge=0.0, lt=1.0), Doc("Held-out share.")]
SamplingArg = Annotated[
    Literal["with_replacement", "without_replacement"],
    Doc(
        "with_replacement: batch_size draws from the node's shard; without_replacement: "
        "min(batch_size, shard) distinct samples each round."
    ),
]


def check_int(name: str, value: Any, *, minimum: int, fix: str = "") -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TaskError(
            f"{name} must be an integer >= {minimum}, got {value!r} "
            f"({type(value).__name__}){'; ' + fix if fix else ''}"
        )
    if value < minimum:
        raise TaskError(
            f"{name} must be an integer >= {minimum}, got {value}{'; ' + fix if fix else ''}"
        )
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    strict: bool = False,
    maximum: float | None = None,
    fix: str = "",
) -> float:
    """Return ``value`` as a finite ``float`` within ``[minimum, maximum]`` (the lower bound
    exclusive when ``strict``; ``None``: unbounded), else raise naming ``name``, with the
    suggestion ``fix`` appended."""
    suffix = f"; {fix}" if fix else ""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TaskError(f"{name} must be a real number, got {value!r}{suffix}") from None
    if isinstance(value, bool) or not math.isfinite(out):
        raise TaskError(f"{name} must be a finite real number, got {value!r}{suffix}")
    if minimum is not None and (out <= minimum if strict else out < minimum):
        rule = ">" if strict else ">="
        raise TaskError(f"{name} must be {rule} {minimum}, got {value!r}{suffix}")
    if maximum is not None and out > maximum:
        raise TaskError(f"{name} must be <= {maximum}, got {value!r}{suffix}")
    return out


def check_components(components: Any, num_nodes: int) -> int | None:
    """``components`` (``K``, or ``None``: one per node) if it is a multiple of ``num_nodes``."""
    if components is None:
        return None
    check_int("components", components, minimum=1)
    if components % num_nodes:
        raise TaskError(
            f"components must be a multiple of num_nodes = {num_nodes} (each node "
            f"holds components / num_nodes of them), got {components!r}"
        )
    return int(components)
