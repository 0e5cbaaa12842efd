"""Declarations and checks shared by the task builders; every failure is a :class:`TaskError`."""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at

from decent._params import SEED, SIZE, SIZE_MAX, Doc
from decent.tasks.base import TaskError

# Declarations shared by the task builders (read by the config schema).
SPREAD = at.Interval(ge=0.0, le=1e3)
"""A spread of means or optima: beyond 1e3 logits and squares leave float range."""
Nodes = Annotated[int, SIZE, Doc("Number of nodes n.")]
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


def check_components(components: int | None, num_nodes: int) -> int | None:
    """``components`` (``K``, or ``None``: one per node) if it is a multiple of ``num_nodes``;
    its declared range is checked where it is declared."""
    if components is not None and components % num_nodes:
        raise TaskError(
            f"components must be a multiple of num_nodes = {num_nodes} (each node "
            f"holds components / num_nodes of them), got {components!r}"
        )
    return components
