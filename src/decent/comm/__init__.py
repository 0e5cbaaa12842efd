"""Communicators: how node values move, as one transport with combiners on top.

Transports (:class:`~decent.comm.base.Transport`: who sends which rows to whom for ``W_t``):

* :class:`SimCommunicator` - all nodes in one process, nothing moves, ``W_t @ X``;
* :class:`DistCommunicator` - neighbour-only exchange over torch.distributed;
* :class:`GossipCommunicator` - threads per neighbour: bounded staleness, crash tolerance.

Combiners over a transport or another communicator:

* :class:`DelayedCommunicator` - neighbours' values ``delay`` calls old (the overlap mode);
* :class:`ChebyshevCommunicator` - ``P_K(W_t)`` per mix (:func:`accelerate`);
* :class:`RobustCommunicator` - Byzantine senders and robust aggregation;
* :class:`ReplicatedCommunicator` - ``R`` simulator replicas in one product;
* :class:`~decent.comm.network.NetworkCommunicator` - a simulated clock, faults and churn.

The two torch.distributed transports are imported on first use.
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
