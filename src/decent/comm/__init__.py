"""Communicators: how node values move (simulated matrix mixing or torch.distributed)."""

from decent.comm.base import CommStats, Communicator, ReduceOp
from decent.comm.sim import SimCommunicator

__all__ = [
    "CommStats",
    "Communicator",
    "DistCommunicator",
    "DistConfigError",
    "ReduceOp",
    "SimCommunicator",
    "block_placement",
]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # DistCommunicator imports torch.distributed; load it only when asked for.
    if name in ("DistCommunicator", "DistConfigError", "block_placement"):
        from decent.comm import dist

        return getattr(dist, name)
    raise AttributeError(f"module 'decent.comm' has no attribute {name!r}")
