"""Communicators: how node values move, as one transport with combiners on top.

Transports: :class:`SimCommunicator` (one process, ``W_t @ X``), :class:`DistCommunicator`
(neighbour-only exchange over torch.distributed), :class:`GossipCommunicator` (threads per
neighbour: bounded staleness, crash tolerance); the last two are imported on first use.
Combiners: :class:`DelayedCommunicator`, :class:`ChebyshevCommunicator`,
:class:`RobustCommunicator`, :class:`ReplicatedCommunicator` and the simulated network
(:class:`~decent.comm.network.NetworkCommunicator`).
"""

from typing import Any

from decent.comm.accelerated import (
    ChebyshevCommunicator,
    accelerate,
    chebyshev_contraction,
    chebyshev_steps_for,
)
from decent.comm.base import REDUCE_OPS, CommStats, Communicator, ReduceOp, reduce_rows
from decent.comm.delay import DelayedCommunicator
from decent.comm.robust import RobustCommunicator
from decent.comm.sim import ReplicatedCommunicator, SimCommunicator

__all__ = [
    "REDUCE_OPS",
    "ChebyshevCommunicator",
    "CommStats",
    "Communicator",
    "DelayedCommunicator",
    "DistCommunicator",
    "DistConfigError",
    "GossipCommunicator",
    "ReduceOp",
    "ReplicatedCommunicator",
    "RobustCommunicator",
    "SimCommunicator",
    "accelerate",
    "block_placement",
    "chebyshev_contraction",
    "chebyshev_steps_for",
    "reduce_rows",
]

_LAZY = {
    "DistCommunicator": "decent.comm.dist",
    "GossipCommunicator": "decent.comm.gossip",
    "DistConfigError": "decent.comm._exchange",
    "block_placement": "decent.comm._exchange",
}


def __getattr__(name: str) -> Any:
    # the distributed transports import torch.distributed; load them only when asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'decent.comm' has no attribute {name!r}")
