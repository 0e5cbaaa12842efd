"""A simulated network: a virtual clock, slow machines, lossy links and crashing nodes.

:class:`NetworkCommunicator` wraps the simulator's communicator. Training stays in
synchronous rounds (the iterates are those of the method under the faults drawn), and a
virtual clock says *when* each node finishes each round, from what the method waits for:

* **compute**: node ``i`` spends ``C_i(t)`` seconds on round ``t``'s gradient
  (:class:`ComputeModel`: constant, lognormal, random stragglers ``k`` times slower with
  probability ``p``, or a fixed set of persistently slow nodes);
* **gossip** (each :meth:`~NetworkCommunicator.mix`): node ``i`` waits for the messages of
  its live in-neighbours only, each taking ``latency + bytes / bandwidth``
  (:class:`LinkModel`); with ``a_i`` the time node ``i`` is ready to send,
  ``clock_i = max(a_i, max_{j -> i} a_j + link(bytes))``;
* **all-reduce** (each accounted :meth:`~NetworkCommunicator.all_reduce`): every live node
  waits for the slowest, then a ring all-reduce: ``2 (M - 1)`` latency steps and
  ``2 (M - 1) / M`` of the payload through each node's link.

Records gain ``time/sim`` (when the last live node finished the round, in simulated
seconds) and ``time/sim_mean``; studies plot against it and ask for time to a target.

Faults (:class:`FaultModel`), drawn per round from the run's seed, so a run is reproducible:

* each message is dropped with probability ``drop``;
* each link fails with probability ``link_fail`` per round and, once down, recovers with
  probability ``link_recover`` per round (a two-state Markov chain per undirected link);
* nodes crash (crash-stop) at given rounds: from then on nothing reaches them and nothing
  leaves them, the clock stops waiting for them, and every metric (network mean, worst node,
  consensus) is over live nodes only;
* nodes leave at given rounds (for the iterates, a crash) and join or rejoin at given
  rounds: a joining node pulls its state from its live neighbour of largest weight (the
  engine copies that row of every node-stacked state tensor) and starts at that
  neighbour's clock.

A weight whose message does not arrive goes to the receiver's own value: row ``i`` of the
effective ``W_t`` is ``W_ii + sum_{j dropped} W_ij`` on the diagonal and ``W_ij`` for the
delivered ``j``, so every row stays stochastic (each node averages what it has). Columns do
not: under faults ``W_t`` is no longer doubly stochastic and the network average drifts;
see ``docs/network.md``. A dropped message is counted in ``faults/dropped`` and never
charged as bytes sent (the sender's bytes are those of delivered messages, as a transport
that learns of a dead link before sending would count). A message to or from a crashed node
is not sent at all.

With no faults and any clock, :meth:`~NetworkCommunicator.mix` is the wrapped
communicator's mix, bit for bit.
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
