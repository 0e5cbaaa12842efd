"""Stacking replicas node-major: the helpers the tasks and the engine share.

Row ``i * R + r`` of a stacked ``(n * R, ...)`` tensor is node ``i`` of replica ``r`` (see
:class:`decent.comm.sim.ReplicatedCommunicator` for why node-major).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class ReplicaError(ValueError):
    """Runs that cannot share one replica batch; the message names what differs."""


def interleave(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``R`` per-replica tensors ``(n, ...)`` node-major into ``(n * R, ...)``."""
    stacked = torch.stack(list(parts), dim=1)
    return stacked.reshape(stacked.shape[0] * stacked.shape[1], *stacked.shape[2:])


def check_family(tasks: Sequence[Any], fields: Sequence[str]) -> None:
    """Raise :class:`ReplicaError` unless every task has ``tasks[0]``'s class and ``fields``."""
    first = tasks[0]
    for other in tasks[1:]:
        if type(other) is not type(first):
            raise ReplicaError(
                f"replicas must share the task family, got {type(first).__name__} and "
                f"{type(other).__name__}"
            )
        diff = [f for f in fields if getattr(first, f) != getattr(other, f)]
        if diff:
            raise ReplicaError(f"replicas of {first.name} must share {diff}")


__all__ = ["ReplicaError", "check_family", "interleave"]
