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

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from decent._types import NodeTensor
from decent.comm.base import CommStats, ReduceOp, reduce_rows
from decent.comm.sim import SimCommunicator
from decent.topology._matrix import MixingMatrix, Topology

__all__ = [
    "ComputeModel",
    "DelayModel",
    "FaultModel",
    "LinkModel",
    "NetworkCommunicator",
    "NetworkError",
    "PairwiseRound",
    "simulate_clock",
]

ComputeKind = Literal["constant", "lognormal", "straggler"]
COMPUTE_KINDS: tuple[str, ...] = ("constant", "lognormal", "straggler")

_COMPUTE_STREAM = 0x636F6D70  # "comp": keys of the compute-time draws
_FAULT_STREAM = 0x66617574  # "faut": keys of the drops and link failures
_LINK_STREAM = 0x6C696E6B  # "link": keys of the link failures and recoveries
_DELAY_STREAM = 0x64656C61  # "dela": keys of the uniform delays
_PAIR_STREAM = 0x70616972  # "pair": keys of the AD-PSGD partner choices
_AHEAD = 64
"""Rounds of compute times drawn per generator call."""


def _generator(seed: int, stream: int, t: int) -> np.random.Generator:
    """numpy's Philox keyed by ``(seed, stream)`` at counter ``t``: round ``t``'s draws are a
    pure function of ``(seed, stream, t)``, and rounds never share numbers."""
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF, stream], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=[0, 0, 0, t]))


class NetworkError(ValueError):
    """A network model outside its range; the message names the field and the rule."""


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise NetworkError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _check_nonnegative(name: str, value: float, *, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or value < 0 or (positive and value == 0):
        rule = "> 0" if positive else ">= 0"
        raise NetworkError(f"{name} must be a number {rule}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ComputeModel:
    """Seconds each node spends on one round's gradient.

    Args:
        kind: ``"constant"`` (every node ``mean`` seconds), ``"lognormal"`` (``mean`` times
            ``exp(sigma Z - sigma^2 / 2)``, so the mean stays ``mean``), or ``"straggler"``
            (``mean``, and with probability ``p`` per node per round ``slowdown`` times
            that).
        mean: seconds per round of a typical node, ``> 0``.
        sigma: the lognormal's log-standard deviation, ``>= 0``.
        p: straggler probability per node per round, in ``[0, 1]``.
        slowdown: a straggler's factor, ``>= 1``.
        slow_nodes: nodes that are always ``slow_factor`` times slower (any kind).
        slow_factor: ``>= 1``.

    Raises:
        NetworkError: a field outside its range.
    """

    kind: ComputeKind = "constant"
    mean: float = 1.0
    sigma: float = 0.5
    p: float = 0.0
    slowdown: float = 10.0
    slow_nodes: tuple[int, ...] = ()
    slow_factor: float = 1.0
    _ahead: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in COMPUTE_KINDS:
            raise NetworkError(
                f"compute.kind must be one of {', '.join(COMPUTE_KINDS)}, got {self.kind!r}"
            )
        _check_nonnegative("compute.mean", self.mean, positive=True)
        _check_nonnegative("compute.sigma", self.sigma)
        _check_probability("compute.p", self.p)
        for name in ("slowdown", "slow_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 1:
                raise NetworkError(f"compute.{name} must be a number >= 1, got {value!r}")
        object.__setattr__(self, "slow_nodes", tuple(int(i) for i in self.slow_nodes))

    def draw(self, seed: int, t: int, n: int) -> np.ndarray:
        """``(n,)`` seconds of round ``t``: a pure function of ``(seed, t)``.

        Random kinds draw :data:`_AHEAD` rounds per generator call (round ``t`` is row
        ``(t - 1) % _AHEAD`` of block ``(t - 1) // _AHEAD``), so a round costs a slice.
        """
        times = np.full(n, self.mean)
        if self.kind == "lognormal" or (self.kind == "straggler" and self.p > 0):
            block, row = divmod(t - 1, _AHEAD)
            cache = self._ahead
            if cache.get("key") != (seed, block, n):
                rng = _generator(seed, _COMPUTE_STREAM, block)
                if self.kind == "lognormal":
                    z = rng.standard_normal((_AHEAD, n))
                    cache["values"] = np.exp(self.sigma * z - 0.5 * self.sigma**2)
                else:
                    slow = rng.random((_AHEAD, n)) < self.p
                    cache["values"] = np.where(slow, self.slowdown, 1.0)
                cache["key"] = (seed, block, n)
            times *= cache["values"][row]
        if self.slow_nodes:
            times[list(self.slow_nodes)] *= self.slow_factor
        return times

    def mean_time(self, n: int) -> float:
        """The expected seconds of one round's gradient, averaged over ``n`` nodes."""
        mean = (
            self.mean * (1 + self.p * (self.slowdown - 1))
            if self.kind == "straggler"
            else self.mean
        )
        slow = len(set(self.slow_nodes)) / n
        return mean * (1 + slow * (self.slow_factor - 1))


@dataclass(frozen=True)
class LinkModel:
    """How long a message takes: ``latency + bytes / bandwidth`` seconds.

    Args:
        latency: seconds per message, ``>= 0``.
        bandwidth: bytes per second of a node's link, ``> 0`` (``inf``: size is free).

    Raises:
        NetworkError: a field outside its range.
    """

    latency: float = 0.0
    bandwidth: float = math.inf

    def __post_init__(self) -> None:
        _check_nonnegative("link.latency", self.latency)
        _check_nonnegative("link.bandwidth", self.bandwidth, positive=True)

    def time(self, nbytes: float) -> float:
        """Seconds one message of ``nbytes`` bytes takes."""
        return self.latency + nbytes / self.bandwidth

    def all_reduce_time(self, nbytes: float, nodes: int) -> float:
        """A ring all-reduce of ``nbytes`` per node among ``nodes``: ``2 (M - 1)`` steps of
        ``latency`` and ``2 (M - 1) / M`` of the payload through each link."""
        if nodes <= 1:
            return 0.0
        steps = 2 * (nodes - 1)
        return steps * self.latency + steps / nodes * nbytes / self.bandwidth


@dataclass(frozen=True)
class FaultModel:
    """What goes wrong: dropped messages, failing links and crashing nodes.

    Args:
        drop: probability that a message is lost, per message, in ``[0, 1]``.
        link_fail: probability per round that an up link goes down, in ``[0, 1]``.
        link_recover: probability per round that a down link comes back, in ``[0, 1]``.
        crashes: ``{node: round}``: the node crashes (crash-stop) before that round's
            gradient; rounds ``>= 1``. It never comes back.
        leaves: ``{node: round}``: the node leaves before that round's gradient. For the
            iterates and the clock this is a crash, except that the node may come back with
            a ``joins`` entry of a later round.
        joins: ``{node: round}``: the node (re)joins before that round's gradient and pulls
            its state (every node-stacked tensor of the method's state) from its live
            in-neighbour of largest weight in ``W_round`` (ties: the smallest id), which
            was alive the round before. A node with a ``joins`` entry and no earlier
            ``leaves`` entry is absent from round 1 until it joins.

    Raises:
        NetworkError: a field outside its range, a node that both crashes and leaves or
            joins, a leave and a join in the same round (node ids and whether a joining node
            has a neighbour to pull from are checked against the network by
            :class:`NetworkCommunicator`).
    """

    drop: float = 0.0
    link_fail: float = 0.0
    link_recover: float = 1.0
    crashes: Mapping[int, int] = field(default_factory=dict)
    leaves: Mapping[int, int] = field(default_factory=dict)
    joins: Mapping[int, int] = field(default_factory=dict)
    _by_round: dict[int, tuple[list[int], list[int]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_probability("faults.drop", self.drop)
        _check_probability("faults.link_fail", self.link_fail)
        _check_probability("faults.link_recover", self.link_recover)
        if self.link_fail > 0 and self.link_recover == 0:
            raise NetworkError(
                "faults.link_recover must be > 0 when faults.link_fail > 0 (links that never "
                "recover disconnect the graph); use crashes for permanent failures"
            )
        for name in ("crashes", "leaves", "joins"):
            rounds = {}
            for node, at in dict(getattr(self, name)).items():
                if isinstance(at, bool) or not isinstance(at, int) or at < 1:
                    raise NetworkError(f"faults.{name}[{node!r}] must be a round >= 1, got {at!r}")
                if isinstance(node, bool) or not isinstance(node, int) or node < 0:
                    raise NetworkError(f"faults.{name} keys must be node ids >= 0, got {node!r}")
                rounds[int(node)] = at
            object.__setattr__(self, name, rounds)
        for node in self.crashes:
            if node in self.leaves or node in self.joins:
                raise NetworkError(
                    f"faults.crashes names node {node}, which faults.leaves or faults.joins "
                    "names too: a crashed node never comes back (use leaves and joins for a "
                    "node that does)"
                )
        for node, at in self.joins.items():
            if self.leaves.get(node) == at:
                raise NetworkError(
                    f"faults.joins[{node}] and faults.leaves[{node}] are both round {at}; a "
                    "node cannot leave and join in the same round"
                )
        # round -> (gone, joining), built once: the engine asks every round
        for name in ("crashes", "leaves", "joins"):
            for node, at in getattr(self, name).items():
                gone, joining = self._by_round.setdefault(at, ([], []))
                (joining if name == "joins" else gone).append(node)

    @property
    def any(self) -> bool:
        """Whether anything can go wrong at all."""
        return self.drop > 0 or self.link_fail > 0 or self.churn

    @property
    def churn(self) -> bool:
        """Whether any node crashes, leaves or joins."""
        return bool(self.crashes or self.leaves or self.joins)

    def absent_at_start(self) -> list[int]:
        """Nodes that join later without having left first: absent from round 1."""
        return [i for i, at in self.joins.items() if not self.leaves.get(i, at) < at]

    def events(self, t: int) -> tuple[list[int], list[int]]:
        """``(gone, joining)`` before round ``t``: the nodes that crash or leave, and those
        that join."""
        return self._by_round.get(t, ([], []))

    def change_rounds(self) -> list[int]:
        """The rounds at which the set of live nodes changes, in order."""
        return sorted(self._by_round)


DelayKind = Literal["clock", "uniform", "constant", "given"]
DELAY_KINDS: tuple[str, ...] = ("clock", "uniform", "constant", "given")
DelaySchedule = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""``schedule(t, dst, src) -> tau``: the delay of each message ``dst <- src`` at round ``t``."""


@dataclass(frozen=True)
class DelayModel:
    """Bounded-delay gossip: node ``i`` mixes neighbour ``j``'s value from ``tau_ij(t)``
    rounds ago, ``0 <= tau_ij(t) <= max_delay`` (and never before round 1).

    Args:
        max_delay: ``D >= 0`` rounds; ``0`` is synchronous gossip.
        kind: where the delays come from.

            * ``"clock"`` (bounded staleness): a node does not wait for a message younger
              than ``D`` rounds. It mixes the newest message of each neighbour that has
              arrived when it is ready, and waits only for the one of round ``t - D``. The
              delays follow from the compute and link models, and stragglers stop holding
              up their neighbours.
            * ``"uniform"``: ``tau_ij(t)`` uniform on ``0 .. D``, drawn from the run's
              seed. No node waits: the clock charges compute only.
            * ``"constant"``: ``tau_ij(t) = D``, the simulator twin of a transport that is
              ``D`` exchanges behind (:class:`~decent.comm.delay.DelayedCommunicator`).
              Nodes wait for the message of round ``t - D``.
            * ``"given"``: ``tau = schedule(t, dst, src)``, e.g. the pattern a real run
              recorded (:attr:`~decent.comm.gossip.GossipCommunicator.versions`), so the
              simulator replays the iterates of the distributed bounded-staleness mode.
              No node waits.
        schedule: for ``kind = "given"``: ``(t, dst, src) -> tau``, integer delays of the
            messages ``dst <- src`` (arrays of the off-diagonal entries of ``W_t``).

    Raises:
        NetworkError: ``max_delay`` below 0 or not an integer, an unknown ``kind``, a
            ``"given"`` kind without a schedule (or a schedule with another kind); during
            the run, a schedule that returns delays outside ``0 .. min(D, t - 1)``.
    """

    max_delay: int = 0
    kind: DelayKind = "clock"
    schedule: DelaySchedule | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        d = self.max_delay
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise NetworkError(f"delays.max_delay must be an integer >= 0 (rounds), got {d!r}")
        if self.kind not in DELAY_KINDS:
            raise NetworkError(
                f"delays.kind must be one of {', '.join(DELAY_KINDS)}, got {self.kind!r}"
            )
        if (self.kind == "given") != (self.schedule is not None):
            raise NetworkError(
                "delays.schedule is needed by kind 'given' and only by it, got kind "
                f"{self.kind!r} with{'out' if self.schedule is None else ''} a schedule"
            )


class _History:
    """The last ``D + 1`` values sent through one mix slot, and when each node sent them."""

    def __init__(self, depth: int, x: NodeTensor) -> None:
        self.depth = depth
        self.values = torch.empty((depth, *x.shape), dtype=x.dtype, device=x.device)
        self.sent = np.zeros((depth, x.shape[0]))  # ready times s_j(r)
        self.lost: np.ndarray | None = None  # (depth, entries): never delivered, by round
        self.rounds = 0  # rounds pushed so far

    def push(self, t: int, x: NodeTensor, ready: np.ndarray) -> None:
        if self.values.shape[1:] != x.shape or self.values.dtype != x.dtype:
            raise ValueError(
                f"delayed mixing needs the same shape and dtype on every call; got "
                f"{tuple(x.shape)} {x.dtype} after {tuple(self.values.shape[1:])} "
                f"{self.values.dtype}"
            )
        self.values[t % self.depth].copy_(x)
        self.sent[t % self.depth] = ready
        self.rounds += 1


@dataclass(frozen=True)
class PairwiseRound:
    """What happens in one round of asynchronous pairwise averaging (AD-PSGD).

    A round is a slice of simulated time. Each live node whose gradient finishes in it is an
    *event*: it averages with one live neighbour drawn uniformly (``(x_i + x_j) / 2`` into
    both, atomically), then takes its gradient step, then starts its next gradient from
    its new model. Events are applied in the order of their times; ``passes`` groups them
    into layers of events that touch disjoint nodes, in which order does not matter, so
    applying the passes in turn is exactly applying the events one by one in time order.

    Attributes:
        passes: per layer, ``(i, j, solo)`` device index tensors: the events whose exchange
            with ``j`` went through, and those without one (no live neighbour, or a lost
            message: the node steps alone).
        nodes: ``(E,)`` the event nodes in time order; ``partners``: their neighbour or
            ``-1``; ``times``: when each finished its gradient (simulated seconds).
    """

    passes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    nodes: np.ndarray
    partners: np.ndarray
    times: np.ndarray


@dataclass
class _Pairwise:
    slice: float  # simulated seconds per round
    next: np.ndarray  # (n,) when each node's gradient in flight finishes
    alive: np.ndarray  # who was alive at the last round
    done: int = 0  # gradients completed
    now: float = 0.0  # the end of the last round's slice


class NetworkCommunicator:
    """The simulator's communicator on a simulated network (see the module docstring).

    Args:
        inner: the simulator communicator, or a topology to build one.
        compute: per-node compute times (default: 1 s per round, every node alike).
        link: per-message times (default: free).
        faults: drops, link failures and crashes (default: none).
        delays: bounded-delay gossip (default: none, every node waits for its neighbours).
        seed: seeds every draw of the clock and the faults (the run's seed by default when
            built from a config).

    Raises:
        NetworkError: a crash of a node the network does not have, or a fault schedule that
            crashes every node.

    Example:
        >>> import torch
        >>> from decent.topology import ring
        >>> net = NetworkCommunicator(ring(4), link=LinkModel(latency=0.5))
        >>> _ = net.mix(torch.ones(4, 1, dtype=torch.float64), t=1)
        >>> net.metrics()["time/sim"]  # one second of compute, half a second of latency
        1.5
    """

    def __init__(
        self,
        inner: SimCommunicator | Topology,
        *,
        compute: ComputeModel | None = None,
        link: LinkModel | None = None,
        faults: FaultModel | None = None,
        delays: DelayModel | None = None,
        seed: int = 0,
    ) -> None:
        self.inner = inner if isinstance(inner, SimCommunicator) else SimCommunicator(inner)
        self.topology = self.inner.topology
        self.num_nodes = n = self.inner.num_nodes
        self.node_ids = self.inner.node_ids
        self.compute = compute or ComputeModel()
        self.link = link or LinkModel()
        self.faults = faults or FaultModel()
        self.delays = delays or DelayModel()
        self.seed = int(seed)
        if self.delays.max_delay > 0 and self.faults.any and not self.topology.is_static:
            raise NetworkError(
                "delays.max_delay > 0 with faults needs a static topology (a lost message is "
                f"remembered per link), got time-varying {self.topology.name!r}"
            )
        for name in ("crashes", "leaves", "joins"):
            for node in getattr(self.faults, name):
                if not 0 <= node < n:
                    raise NetworkError(
                        f"faults.{name} names node {node}, but the network has nodes 0..{n - 1}"
                    )
        if len(self.faults.crashes) >= n:
            raise NetworkError(
                f"faults.crashes crashes all {n} nodes; at least one node must stay alive"
            )
        for node in self.compute.slow_nodes:
            if not 0 <= node < n:
                raise NetworkError(
                    f"compute.slow_nodes names node {node}, but the network has nodes 0..{n - 1}"
                )
        self.stats = CommStats(num_nodes=n)
        self.clock = np.zeros(n)
        """``(n,)`` simulated seconds at which each node finished its latest step."""
        self.alive = np.ones(n, dtype=bool)
        """Which nodes take part now (not crashed, not left, not yet to join)."""
        self.alive[self.faults.absent_at_start()] = False
        self.pulled: dict[int, int] = {}
        """The latest join of each node: ``{node: the neighbour it pulled its state from}``."""
        self.dropped = 0
        """Messages lost so far (drops and down links; never charged as bytes)."""
        self._round = 0  # the last round whose compute time is on the clock
        self._joins: list[tuple[int, int]] = []
        self._links: dict[int, tuple[MixingMatrix, np.ndarray, np.ndarray]] = {}
        """Per matrix: each off-diagonal entry's undirected link, and which links are down."""
        self._ahead: dict[int, tuple[tuple[int, int, int], np.ndarray]] = {}
        self._alive_t: torch.Tensor | None = None
        self._dead_t: torch.Tensor | None = None
        self._live: tuple[int, MixingMatrix, tuple[np.ndarray, ...]] | None = None
        self._alive_version = 0  # bumped whenever the live set changes
        self._edge_cache: dict[int, tuple[MixingMatrix, tuple[np.ndarray, ...]]] = {}
        self._histories: list[_History] = []  # one per mix call of a round (slot)
        self._slot = 0
        self._slot_round = 0
        self.delay_sum = 0.0
        """Sum of ``tau_ij(t)`` over the messages mixed so far (``delay/mean`` divides)."""
        self.delay_count = 0
        self.delay_max = 0
        self._pair: _Pairwise | None = None
        self._reverse: dict[
            int, tuple[MixingMatrix, tuple[np.ndarray, np.ndarray, np.ndarray]]
        ] = {}
        if self.faults.churn:
            self._check_schedule()

    @property
    def staleness(self) -> int:
        """``delays.max_delay``: neighbours' values are up to this many rounds old."""
        return int(self.delays.max_delay)

    def _check_schedule(self) -> None:
        """Before training: some node is alive at every round, live nodes keep at least one
        link among them, and every joining node has a neighbour to pull its state from."""
        alive = self.alive.copy()
        schedule = [1, *self.faults.change_rounds()]
        for t in schedule:
            gone, joining = self.faults.events(t)
            before = alive.copy()
            alive[gone] = False
            before[gone] = False
            w = self.inner.weights(t)
            _, _, _, dst, src, *_ = self._edges(w)
            for node in joining:
                if self._pull_source(w, node, before) is None:
                    raise NetworkError(
                        f"faults.joins[{node}] = {t}: none of node {node}'s neighbours in the "
                        f"round-{t} graph is alive then to pull its state from"
                    )
            alive[joining] = True
            live = int(alive.sum())
            if live == 0:
                raise NetworkError(
                    f"the fault schedule (faults.crashes, faults.leaves, faults.joins) leaves "
                    f"no node alive at round {t}; at least one node must stay alive"
                )
            if live > 1 and not np.any(alive[dst] & alive[src]):
                raise NetworkError(
                    f"the fault schedule (faults.crashes, faults.leaves, faults.joins) "
                    f"disconnects every node at round {t}: no two of the {live} live nodes "
                    "are neighbours"
                )

    # -- the clock -----------------------------------------------------------------------
    def _advance(self, t: int) -> None:
        """Charge the compute of rounds ``_round + 1 .. t`` and apply the crashes due."""
        while self._round < t:
            self._round += 1
            if self.faults.churn:
                self._churn(self._round)
            times = self.compute.draw(self.seed, self._round, self.num_nodes)
            if self.faults.churn:
                times[~self.alive] = 0.0
            self.clock += times

    def _churn(self, t: int) -> None:
        """Apply round ``t``'s crashes, leaves and joins; a joining node starts at the clock
        of the neighbour it pulls from."""
        gone, joining = self.faults.events(t)
        if not gone and not joining:
            return
        before = self.alive.copy()
        self.alive[gone] = False
        before[gone] = False
        if joining:
            w = self.inner.weights(t)
            for node in joining:
                source = self._pull_source(w, node, before)
                assert source is not None  # _check_schedule refused the schedule otherwise
                self.pulled[node] = source
                self.clock[node] = self.clock[source]
                self._joins.append((node, source))
            self.alive[joining] = True
        self._alive_t = self._dead_t = None
        self._alive_version += 1

    def _pull_source(self, w: MixingMatrix, node: int, eligible: np.ndarray) -> int | None:
        """Whom a joining ``node`` pulls its state from: its in-neighbour in ``w`` of
        largest weight among the ``eligible`` (alive the round before and not leaving now),
        ties to the smallest id; ``None`` if there is none."""
        _, _, _, dst, src, weights, _ = self._edges(w)
        cand = (dst == node) & eligible[src]
        if not cand.any():
            return None
        ids, wts = src[cand], weights[cand]
        return int(ids[np.lexsort((ids, -wts))[0]])

    def begin_round(self, t: int) -> list[tuple[int, int]]:
        """The engine's hook before round ``t``: the nodes compute its gradients (a round
        without communication, as in local SGD, still takes its compute time).

        Returns:
            ``(node, source)`` per node that joins at round ``t``: the engine copies row
            ``source`` of every node-stacked state tensor into row ``node`` before the
            round's gradients.
        """
        self._joins = []
        self._advance(t)
        return self._joins

    # -- Communicator --------------------------------------------------------------------
    def _edges(self, w: MixingMatrix) -> tuple[np.ndarray, ...]:
        """``(rows, cols, off-diagonal, rows[off], cols[off], data[off], diagonal)`` of the
        entries of ``W``, cached per matrix."""
        found = self._edge_cache.get(id(w))
        if found is not None and found[0] is w:
            return found[1]
        csr = w.csr
        rows = np.repeat(np.arange(w.n), np.diff(csr.indptr))
        cols = csr.indices.astype(np.int64)
        off = rows != cols
        edges = (rows, cols, off, rows[off], cols[off], csr.data[off], csr.diagonal())
        if len(self._edge_cache) > 64:
            self._edge_cache.clear()
        self._edge_cache[id(w)] = (w, edges)
        return edges

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """One gossip step under the round's faults; advances the clock."""
        self._advance(t)
        plan = self.inner.checked_plan(x, t)
        w = plan.matrix
        nbytes = x.shape[1] * x.element_size()
        _, _, _, dst, src, weights, _ = self._edges(w)
        if self.delays.max_delay > 0:
            return self._mix_delayed(x, t, w, nbytes)
        if not self.faults.any:
            self.stats.add_gossip(w.out_degree, nbytes)
            self._tick_gossip(dst, src, nbytes)
            return self.inner.apply_plan(plan, x)
        lost = self._lost(w, t, dst, src)
        everyone = bool(self.alive.all())
        live = None if everyone else self._live_entries(w, dst, src, weights)
        reached = None if live is None else live[0]
        if reached is not None:
            lost &= reached
        count = int(np.count_nonzero(lost))
        self.dropped += count
        if reached is None:
            sent = w.out_degree - np.bincount(src[lost], minlength=w.n) if count else w.out_degree
            self.stats.add_gossip(sent, nbytes)
            # a receiver waits for every live in-neighbour: a lost message times out after
            # the time a delivered one takes
            self._tick_gossip(dst, src, nbytes)
            if not count:
                return self.inner.apply_plan(plan, x)
            # W' x = W x + sum over lost (i <- j) of W_ij (x_i - x_j): the weight of a lost
            # message goes back to its receiver (only while every node is alive: a crashed
            # node's value may be anything, NaN included, and must not enter W x at all)
            weight = torch.as_tensor(weights[lost], dtype=x.dtype, device=x.device)
            i = torch.as_tensor(dst[lost], device=x.device)
            j = torch.as_tensor(src[lost], device=x.device)
            diff = x.index_select(0, i).sub_(x.index_select(0, j)).mul_(weight[:, None])
            # index_put_ with accumulate: the same sum as index_add_, at half its cost on CPU
            return self.inner.apply_plan(plan, x).index_put_((i,), diff, accumulate=True)
        assert live is not None
        _, dst_r, src_r, to_dead, w_dead = live
        delivered = np.bincount(src_r, minlength=w.n)
        if count:
            delivered -= np.bincount(src[lost], minlength=w.n)
        self.stats.add_gossip(delivered, nbytes)
        self._tick_gossip(dst_r, src_r, nbytes)
        return self._apply_live(plan, x, dst, src, weights, lost, to_dead, w_dead)

    def _live_entries(
        self, w: MixingMatrix, dst: np.ndarray, src: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """``(reached, dst, src of the reached, receivers and weights of the live <- dead
        entries)``: what the live set decides, cached until it changes."""
        found = self._live
        if found is not None and found[0] == self._alive_version and found[1] is w:
            return found[2]
        reached = self.alive[dst] & self.alive[src]
        cut = self.alive[dst] & ~self.alive[src]
        entries = (reached, dst[reached], src[reached], dst[cut], weights[cut])
        self._live = (self._alive_version, w, entries)
        return entries

    def _mix_delayed(self, x: NodeTensor, t: int, w: MixingMatrix, nbytes: int) -> NodeTensor:
        """``y_i = W_ii x_i(t) + sum_j W_ij x_j(t - tau_ij(t))`` (see :class:`DelayModel`)."""
        if self._slot_round != t:
            self._slot_round, self._slot = t, 0
        slot = self._slot
        self._slot += 1
        depth = self.delays.max_delay + 1
        if slot == len(self._histories):
            self._histories.append(_History(depth, x))
        hist = self._histories[slot]
        ready = self.clock.copy()  # s_i(t): computed, ready to send and mix
        hist.push(t, x, ready)
        _, _, _, dst, src, weight, diagonal = self._edges(w)
        oldest = min(self.delays.max_delay, hist.rounds - 1)  # never before the first round
        kind = self.delays.kind
        link = self.link.time(nbytes)
        live: np.ndarray | None = None
        if self.faults.any:
            # this round's messages: lost ones are remembered, so no later round mixes them
            live = self._live_entries(w, dst, src, weight)[0]
            lost_now = self._lost(w, t, dst, src) & live
            self.dropped += int(lost_now.sum())
            self.stats.add_gossip(np.bincount(src[live & ~lost_now], minlength=w.n), nbytes)
            if hist.lost is None or hist.lost.shape[1] != dst.shape[0]:
                hist.lost = np.zeros((depth, dst.shape[0]), dtype=bool)
            hist.lost[t % depth] = lost_now | ~live
        else:
            self.stats.add_gossip(w.out_degree, nbytes)
        if kind == "uniform":
            u = self._uniforms(_DELAY_STREAM, t, dst.shape[0])
            tau = np.minimum((u * (self.delays.max_delay + 1)).astype(np.int64), oldest)
        elif kind == "given":
            assert self.delays.schedule is not None
            tau = np.asarray(self.delays.schedule(t, dst, src), dtype=np.int64)
            if tau.shape != dst.shape or (tau.size and not 0 <= tau.min() <= tau.max() <= oldest):
                raise NetworkError(
                    f"delays.schedule must return {dst.shape[0]} integer delays in "
                    f"0..{oldest} at round {t}, got shape {tau.shape}"
                    + (f", range {tau.min()}..{tau.max()}" if tau.size else "")
                )
        else:
            # j's message of round t - oldest must be in (or time out, if lost): wait for it
            must = hist.sent[(t - oldest) % depth][src] + link
            wait = ready.copy()
            if live is None:
                np.maximum.at(wait, dst, must)
            else:  # a dead node waits for nobody, and nobody waits for it
                np.maximum.at(wait, dst[live], must[live])
                wait = np.where(self.alive, wait, ready)
            self.clock = wait
            if kind == "constant":
                tau = np.full(dst.shape[0], oldest, dtype=np.int64)
            else:
                # the newest message of rounds t - oldest .. t that has arrived by then
                ages = np.arange(oldest + 1)
                arrived = hist.sent[(t - ages) % depth][:, src] + link <= wait[dst][None, :]
                if hist.lost is not None and live is not None:
                    arrived &= ~hist.lost[(t - ages) % depth]
                tau = np.argmax(arrived, axis=0).astype(np.int64)  # first True: the newest
                if live is not None:
                    live = live & arrived.any(axis=0)
        n = x.shape[0]
        coef_np, diag_np, to, tau_used = weight, diagonal, dst, tau
        if live is not None:
            assert hist.lost is not None
            # mixed: from a live sender to a live receiver, and not lost on its way; the
            # weight of the others stays with the receiver, and a dead row keeps its value
            has = live & ~hist.lost[(t - tau) % depth, np.arange(dst.shape[0])]
            diag_np = diagonal + np.bincount(dst[~has], weights=weight[~has], minlength=n)
            diag_np[~self.alive] = 1.0
            coef_np, to, tau_used, src = weight[has], dst[has], tau[has], src[has]
        self.delay_sum += float(tau_used.sum())
        self.delay_count += int(tau_used.shape[0])
        self.delay_max = max(self.delay_max, int(tau_used.max()) if tau_used.size else 0)
        where = torch.as_tensor(((t - tau_used) % depth) * n + src, device=x.device)
        stale = hist.values.view(depth * n, -1).index_select(0, where)
        coef = torch.as_tensor(coef_np, dtype=x.dtype, device=x.device)
        diag = torch.as_tensor(diag_np, dtype=x.dtype, device=x.device)
        out = x * diag[:, None]
        return out.index_add_(0, torch.as_tensor(to, device=x.device), stale.mul_(coef[:, None]))

    # -- asynchronous pairwise averaging (AD-PSGD) --------------------------------------
    def mean_step(self, nbytes: int) -> float:
        """The expected seconds of one AD-PSGD step: a gradient and one exchange (a message
        each way), averaged over nodes."""
        return self.compute.mean_time(self.num_nodes) + 2 * self.link.time(nbytes)

    def pairwise(self, x: NodeTensor, t: int) -> PairwiseRound:
        """Round ``t`` of asynchronous pairwise averaging (see :class:`PairwiseRound`).

        A round is half a mean step (:meth:`mean_step`) of simulated time, so about half
        the nodes finish a gradient in each. A node that finishes twice in one slice takes
        its second event in the next round. The exchange costs the initiator a message
        each way; the partner does not wait (it averages in place while it computes, which
        is where AD-PSGD's staleness comes from). A lost message (a drop, a link down)
        cancels the exchange: the node steps alone. Crashed, left and not yet joined nodes
        take no part.

        Raises:
            NetworkError: delays (``delays.max_delay > 0``), or a graph that is not
                undirected (pairwise averaging needs a link both ways).
        """
        self._advance(t)  # crashes, leaves and joins due
        n = self.num_nodes
        nbytes = x.shape[1] * x.element_size()
        exchange = 2 * self.link.time(nbytes)
        p = self._pair
        if p is None:
            if self.delays.max_delay > 0:
                raise NetworkError(
                    "delays.max_delay must be 0 for AD-PSGD: its staleness comes from the "
                    "clock itself (pairwise averaging while neighbours compute)"
                )
            first = self.compute.draw(self.seed, 1, n).copy()
            p = self._pair = _Pairwise(self.mean_step(nbytes) / 2, first, self.alive.copy())
        back = self.alive & ~p.alive  # joined since the last round: start computing now
        if back.any():
            p.next[back] = p.now + self.compute.draw(self.seed, t, n)[back]
        p.alive = self.alive.copy()
        p.now = t * p.slice
        w = self.inner.weights(t)
        _, _, _, dst, src, *_ = self._edges(w)
        rev, first_entry, end_entry = self._reverse_edges(w, dst, src)
        nodes = np.flatnonzero(self.alive & (p.next <= p.now))
        nodes = nodes[np.argsort(p.next[nodes], kind="stable")]  # time order, ties by id
        # a partner drawn uniformly among the live neighbours: off-diagonal entries are in
        # CSR order (by receiver), so a node's are one run; rank the live ones by a cumsum
        cl = np.concatenate([[0], np.cumsum(self.alive[src])])
        start = first_entry[nodes]
        count = cl[end_entry[nodes]] - cl[start]
        has = count > 0
        u = self._uniforms(_PAIR_STREAM, t, n)[nodes]
        k = np.minimum((u * count).astype(np.int64), np.maximum(count - 1, 0))
        edge = np.searchsorted(cl, cl[start] + k + 1, "left") - 1
        edge = np.where(has, edge, 0)
        partners = np.where(has, src[edge] if src.size else -1, -1)
        sent_i, sent_j = has.copy(), has.copy()
        if src.size and (self.faults.drop > 0 or self.faults.link_fail > 0):
            lost = self._lost(w, t, dst, src)  # per entry (receiver <- sender)
            request_lost = has & lost[rev[edge]]  # i -> j is entry (j <- i)
            sent_j = has & ~request_lost & ~lost[edge]
            self.dropped += int(request_lost.sum()) + int((has & ~request_lost & lost[edge]).sum())
            sent_i = has & ~request_lost
        partners = np.where(sent_j, partners, -1)  # a partner only if both messages arrived
        counts = np.bincount(nodes[sent_i], minlength=n) + np.bincount(
            partners[sent_j], minlength=n
        )
        self.stats.add_gossip(counts, nbytes)
        times = p.next[nodes].copy()
        p.next[nodes] = times + np.where(has, exchange, 0.0)
        p.next[nodes] += self.compute.draw(self.seed, t + 1, n)[nodes]
        p.done += int(nodes.size)
        return PairwiseRound(self._layers(nodes, partners, x.device), nodes, partners, times)

    def _layers(
        self, nodes: np.ndarray, partners: np.ndarray, device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Events in time order as passes of events on disjoint nodes: an event goes in
        once no earlier event left touches either of its nodes."""
        out = []
        n = self.num_nodes
        left = np.arange(nodes.size)
        first = np.empty(n, dtype=np.int64)
        while left.size:
            i, j = nodes[left], partners[left]
            pair = j >= 0
            first.fill(nodes.size)
            np.minimum.at(first, i, left)
            np.minimum.at(first, j[pair], left[pair])
            ready = (first[i] == left) & (~pair | (first[np.maximum(j, 0)] == left))
            both, solo = ready & pair, ready & ~pair
            out.append(
                (
                    torch.as_tensor(i[both], device=device),
                    torch.as_tensor(j[both], device=device),
                    torch.as_tensor(i[solo], device=device),
                )
            )
            left = left[~ready]
        return out

    def _reverse_edges(
        self, w: MixingMatrix, dst: np.ndarray, src: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per off-diagonal entry ``(i <- j)`` the index of ``(j <- i)``; per node the first
        and one past the last of its entries (they are one run: CSR order), cached."""
        found = self._reverse.get(id(w))
        if found is not None and found[0] is w:
            return found[1]
        n = self.num_nodes
        keys = dst * n + src
        order = np.argsort(keys, kind="stable")
        want = src * n + dst
        at = np.minimum(np.searchsorted(keys[order], want), max(keys.size - 1, 0))
        if keys.size and not np.array_equal(keys[order][at], want):
            raise NetworkError(
                f"AD-PSGD averages pairs over undirected links, but {self.topology.name}'s "
                f"graph has a link one way only; use an undirected topology"
            )
        back = order[at] if keys.size else at
        nodes = np.arange(n)
        found = (
            w,
            (back, np.searchsorted(dst, nodes, "left"), np.searchsorted(dst, nodes, "right")),
        )
        if len(self._reverse) > 64:
            self._reverse.clear()
        self._reverse[id(w)] = found
        return found[1]

    def _uniforms(self, stream: int, t: int, count: int) -> np.ndarray:
        """``(count,)`` uniforms of round ``t``: :data:`_AHEAD` rounds per generator call."""
        block, row = divmod(t - 1, _AHEAD)
        key = (stream, block, count)
        found = self._ahead.get(stream)
        if found is None or found[0] != key:
            found = (key, _generator(self.seed, stream, block).random((_AHEAD, count)))
            self._ahead[stream] = found
        return found[1][row]

    def _lost(self, w: MixingMatrix, t: int, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
        """Which off-diagonal entries of ``W_t`` (``dst <- src``) lose their message at round
        ``t``: dropped, or on a link that is down."""
        f = self.faults
        lost = np.zeros(dst.shape[0], dtype=bool)
        if f.drop > 0:
            lost |= self._uniforms(_FAULT_STREAM, t, dst.shape[0]) < f.drop
        if f.link_fail > 0:
            # one chain per undirected link {i, j}, shared by both directions
            links = self._links.get(id(w))
            if links is None or links[0] is not w:
                lo, hi = np.minimum(dst, src), np.maximum(dst, src)
                uniq, inverse = np.unique(lo * self.num_nodes + hi, return_inverse=True)
                links = self._links[id(w)] = (w, inverse, np.zeros(uniq.shape[0], dtype=bool))
            _, inverse, down = links
            u = self._uniforms(_LINK_STREAM, t, down.shape[0])
            down[:] = np.where(down, u >= f.link_recover, u < f.link_fail)
            lost |= down[inverse]
        return lost

    def _tick_gossip(self, dst: np.ndarray, src: np.ndarray, nbytes: int) -> None:
        """``clock_i = max(clock_i, max_{j -> i} clock_j + link(bytes))`` for live ``i``."""
        ready = self.clock
        done = ready.copy()
        np.maximum.at(done, dst, ready[src] + self.link.time(nbytes))
        # a dead node waits for nothing (and nobody waits for it: not in dst, src)
        self.clock = done if not self.faults.churn else np.where(self.alive, done, ready)

    def _tick_all_reduce(self, nbytes: int) -> None:
        """Every live node waits for the slowest, then a ring all-reduce among the live."""
        count = int(self.alive.sum())
        barrier = float(self.clock[self.alive].max())
        done = barrier + self.link.all_reduce_time(nbytes, count)
        self.clock = np.where(self.alive, done, self.clock)

    def _apply_live(
        self,
        plan: Any,
        x: NodeTensor,
        dst: np.ndarray,
        src: np.ndarray,
        weights: np.ndarray,
        lost: np.ndarray,
        to_dead: np.ndarray,
        w_dead: np.ndarray,
    ) -> NodeTensor:
        """``W'_t x`` while some node is away: a dead node's row is ``e_i`` (it keeps its
        value), and a live row's weights on dead nodes and on ``lost`` messages go to its
        diagonal.

        ``W (x with the dead rows zeroed)`` plus ``W_ij x_i`` for each live ``i`` whose ``j``
        is dead or whose message from ``j`` was lost, minus ``W_ij x_j`` for the lost ones:
        the dead rows enter as exact zeros, never as ``0 * x_j``, so a dead node's value,
        NaN included, cannot reach anyone; and the work is the plain product's plus the
        entries that changed.
        """
        dead = self._dead_rows(x)
        y = self.inner.apply_plan(plan, x.index_fill(0, dead, 0.0))
        # one gather and one scatter: + W_ij x_i per entry whose sender is dead (``to_dead``,
        # ``w_dead``) or whose message was lost, - W_ij x_j per lost one
        i, j, wl = dst[lost], src[lost], weights[lost]
        to = np.concatenate([to_dead, i, i])
        at = np.concatenate([to_dead, i, j])
        coef = np.concatenate([w_dead, wl, -wl])
        if to.size:
            weight = torch.as_tensor(coef, dtype=x.dtype, device=x.device)
            rows = x.index_select(0, torch.as_tensor(at, device=x.device)).mul_(weight[:, None])
            y.index_put_((torch.as_tensor(to, device=x.device),), rows, accumulate=True)
        return y.index_copy_(0, dead, x.index_select(0, dead))

    def _dead_rows(self, x: NodeTensor) -> torch.Tensor:
        if self._dead_t is None or self._dead_t.device != x.device:
            self._dead_t = torch.as_tensor(np.flatnonzero(~self.alive), device=x.device)
        return self._dead_t

    def _live_rows(self, x: NodeTensor) -> NodeTensor:
        if bool(self.alive.all()):
            return x
        if self._alive_t is None or self._alive_t.device != x.device:
            self._alive_t = torch.as_tensor(np.flatnonzero(self.alive), device=x.device)
        return x.index_select(0, self._alive_t)

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce over the live nodes; an accounted call waits for every live node and
        costs a ring all-reduce on the clock."""
        live = self._live_rows(x)
        out = live.mean(dim=0) if op == "mean" else reduce_rows(live, op)
        if accounted:
            nbytes = x.shape[1] * x.element_size()
            self.stats.add_all_reduce(nbytes)
            self._tick_all_reduce(nbytes)
        return out

    def metrics(self) -> dict[str, float]:
        """``time/sim`` (the last live node's clock), ``time/sim_mean``, ``faults/dropped``
        and ``faults/alive_nodes``; ``faults/crashed/node<i>/round``,
        ``faults/left/node<i>/round`` and ``faults/joined/node<i>/round`` per node and
        event so far (the latest round of each)."""
        live = self.clock[self.alive]
        out = {
            "time/sim": float(live.max()),
            "time/sim_mean": float(live.mean()),
            "faults/dropped": float(self.dropped),
            "faults/alive_nodes": float(self.alive.sum()),
        }
        if self._pair is not None:  # asynchronous: the slice's end, gradients completed
            out["time/sim"] = out["time/sim_mean"] = self._pair.now
            out["grad_evals"] = float(self._pair.done)
        if self.delays.max_delay > 0:
            out["delay/mean"] = self.delay_sum / max(self.delay_count, 1)
            out["delay/max"] = float(self.delay_max)
        for what, name in (("crashed", "crashes"), ("left", "leaves"), ("joined", "joins")):
            for node, at in sorted(getattr(self.faults, name).items()):
                if at <= self._round:
                    out[f"faults/{what}/node{node}/round"] = float(at)
        return out

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return (
            f"NetworkCommunicator({self.topology.name}, n={self.num_nodes}, "
            f"compute={self.compute.kind}, drop={self.faults.drop})"
        )


def simulate_clock(
    topology: Topology,
    rounds: int,
    message_bytes: int,
    *,
    pattern: Literal["gossip", "all_reduce"] = "gossip",
    compute: ComputeModel | None = None,
    link: LinkModel | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``(rounds,)`` ``time/sim`` after each round, from the clock alone (no training).

    The clock of a fault-free network does not depend on the values exchanged, so the time
    a method needs for ``t`` rounds is this function's ``[t - 1]``: what a training run with
    a :class:`NetworkCommunicator` of the same models records (tested), at the cost of a few
    numpy operations per round. ``pattern`` is one gossip of ``message_bytes`` per round
    (D-SGD, DAT-SGD) or one ring all-reduce of it (minibatch SGD).

    Raises:
        NetworkError: ``rounds < 1``, ``message_bytes < 0`` or an unknown ``pattern``.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise NetworkError(f"rounds must be an integer >= 1, got {rounds!r}")
    if message_bytes < 0:
        raise NetworkError(f"message_bytes must be >= 0, got {message_bytes!r}")
    if pattern not in ("gossip", "all_reduce"):
        raise NetworkError(f"pattern must be 'gossip' or 'all_reduce', got {pattern!r}")
    net = NetworkCommunicator(topology, compute=compute, link=link, seed=seed)
    out = np.empty(rounds)
    for t in range(1, rounds + 1):
        net.begin_round(t)
        if pattern == "gossip":
            _, _, _, dst, src, *_ = net._edges(net.inner.weights(t))
            net._tick_gossip(dst, src, message_bytes)
        else:
            net._tick_all_reduce(message_bytes)
        out[t - 1] = net.clock.max()
    return out
