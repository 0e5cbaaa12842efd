"""A simulated network: a virtual clock, slow machines, lossy links and crashing nodes.

:class:`NetworkCommunicator` wraps the simulator's communicator. Training stays in
synchronous rounds (the iterates are those of the method under the faults drawn) and a
virtual clock says *when* each node finishes each round: compute (:class:`ComputeModel`),
then the messages of its live in-neighbours, each ``latency + bytes / bandwidth``
(:class:`LinkModel`), or a ring all-reduce. Faults (:class:`FaultModel`: drops, failing
links, crashes, leaves and joins) are drawn per round from the run's seed. A weight whose
message does not arrive goes to the receiver's own value (rows stay stochastic, columns do
not). Records gain ``time/sim``, ``time/sim_mean`` and ``faults/*``. With no faults,
:meth:`~NetworkCommunicator.mix` is the wrapped communicator's mix, bit for bit.
``docs/network.md`` gives the model in full.
"""

from decent.comm.network.clock import simulate_clock
from decent.comm.network.communicator import NetworkCommunicator
from decent.comm.network.events import PairwiseRound
from decent.comm.network.models import (
    COMPUTE_KINDS,
    DELAY_KINDS,
    ComputeModel,
    DelayModel,
    FaultModel,
    LinkModel,
    NetworkError,
)

__all__ = [
    "COMPUTE_KINDS",
    "DELAY_KINDS",
    "ComputeModel",
    "DelayModel",
    "FaultModel",
    "LinkModel",
    "NetworkCommunicator",
    "NetworkError",
    "PairwiseRound",
    "simulate_clock",
]
