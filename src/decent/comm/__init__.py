"""Communicators: how node values move (simulated matrix mixing or torch.distributed)."""

from decent.comm.base import CommStats, Communicator, ReduceOp
from decent.comm.sim import SimCommunicator

__all__ = ["CommStats", "Communicator", "ReduceOp", "SimCommunicator"]
