"""The simulated network's models (compute and link times, faults, delays), checked at the
edge, and its seeded draws: every random choice is a pure function of ``(seed, stream, t)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np

from decent._params import PROBABILITY, ROUNDS_MAX, SIZE_MAX, check_declared, hparam

ComputeKind = Literal["constant", "lognormal", "straggler"]
COMPUTE_KINDS: tuple[str, ...] = ("constant", "lognormal", "straggler")

COMPUTE_STREAM = 0x636F6D70  # "comp": keys of the compute-time draws
FAULT_STREAM = 0x66617574  # "faut": keys of the drops and link failures
LINK_STREAM = 0x6C696E6B  # "link": keys of the link failures and recoveries
DELAY_STREAM = 0x64656C61  # "dela": keys of the uniform delays
PAIR_STREAM = 0x70616972  # "pair": keys of the AD-PSGD partner choices
AHEAD = 64
"""Rounds of compute times drawn per generator call."""


def generator(seed: int, stream: int, t: int) -> np.random.Generator:
    """numpy's Philox keyed by ``(seed, stream)`` at counter ``t``: round ``t``'s draws are a
    pure function of ``(seed, stream, t)``, and rounds never share numbers."""
    key = np.array([seed & 0xFFFFFFFFFFFFFFFF, stream], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key, counter=[0, 0, 0, t]))


class NetworkError(ValueError):
    """A network model outside its range; the message names the field and the rule."""


NodeId = Annotated[int, at.Interval(ge=0, le=SIZE_MAX)]
Round = Annotated[int, at.Interval(ge=1, le=ROUNDS_MAX)]


@dataclass(frozen=True)
class ComputeModel:
    """Seconds each node spends on one round's gradient.

    Args:
        kind: ``"constant"`` (``mean`` seconds), ``"lognormal"`` (``mean`` times
            ``exp(sigma Z - sigma^2 / 2)``: the mean stays ``mean``) or ``"straggler"``
            (``slowdown`` times ``mean`` with probability ``p`` per node and round).
        mean: seconds per round of a typical node, ``> 0``.
        sigma: the lognormal's log-standard deviation, ``>= 0``.
        p: straggler probability per node per round, in ``[0, 1]``.
        slowdown: a straggler's factor, ``>= 1``.
        slow_nodes: nodes always ``slow_factor`` (``>= 1``) times slower (any kind).

    Raises:
        NetworkError: a field outside its range.
    """

    kind: ComputeKind = hparam(
        "constant",
        doc=(
            "constant: every node `mean` s; lognormal: mean times exp(sigma Z - sigma^2/2); "
            "straggler: `mean`, and `slowdown` times that with probability p per node per round."
        ),
    )
    mean: float = hparam(1.0, at.Gt(0.0), doc="Seconds per round of a typical node.")
    sigma: float = hparam(
        0.5, at.Interval(ge=0.0, le=10.0), doc="Log-standard deviation (lognormal), at most 10."
    )
    p: float = hparam(0.0, PROBABILITY, doc="Straggler probability per node per round.")
    slowdown: float = hparam(10.0, at.Ge(1.0), doc="A straggler's slow-down factor.")
    slow_nodes: tuple[NodeId, ...] = hparam(
        (), at.MaxLen(SIZE_MAX), doc="Nodes that are always slow_factor times slower."
    )
    slow_factor: float = hparam(1.0, at.Ge(1.0), doc="The slow nodes' factor.")
    _ahead: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_declared(self, "compute", NetworkError)
        object.__setattr__(self, "slow_nodes", tuple(int(i) for i in self.slow_nodes))

    def draw(self, seed: int, t: int, n: int) -> np.ndarray:
        """``(n,)`` seconds of round ``t``, a pure function of ``(seed, t)`` (random kinds
        draw :data:`AHEAD` rounds per generator call: round ``t`` is a row of its block)."""
        times = np.full(n, self.mean)
        if self.kind == "lognormal" or (self.kind == "straggler" and self.p > 0):
            block, row = divmod(t - 1, AHEAD)
            cache = self._ahead
            if cache.get("key") != (seed, block, n):
                rng = generator(seed, COMPUTE_STREAM, block)
                if self.kind == "lognormal":
                    z = rng.standard_normal((AHEAD, n))
                    cache["values"] = np.exp(self.sigma * z - 0.5 * self.sigma**2)
                else:
                    slow = rng.random((AHEAD, n)) < self.p
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
        latency: seconds per message, ``0 .. 1e6``.
        bandwidth: bytes per second of a node's link, ``>= 1`` (``None``: size is free).

    Raises:
        NetworkError: a field outside its range.
    """

    latency: float = hparam(0.0, at.Interval(ge=0.0, le=1e6), doc="Seconds per message.")
    bandwidth: float | None = hparam(
        None, at.Ge(1.0), doc="Bytes per second of a node's link, at least 1 (None: size is free)."
    )

    def __post_init__(self) -> None:
        check_declared(self, "link", NetworkError)

    def time(self, nbytes: float) -> float:
        """Seconds one message of ``nbytes`` bytes takes."""
        return self.latency + nbytes / (math.inf if self.bandwidth is None else self.bandwidth)

    def all_reduce_time(self, nbytes: float, nodes: int) -> float:
        """A ring all-reduce of ``nbytes`` per node among ``nodes``: ``2 (M - 1)`` steps of
        ``latency`` and ``2 (M - 1) / M`` of the payload through each link."""
        if nodes <= 1:
            return 0.0
        steps = 2 * (nodes - 1)
        bandwidth = math.inf if self.bandwidth is None else self.bandwidth
        return steps * self.latency + steps / nodes * nbytes / bandwidth


@dataclass(frozen=True)
class FaultModel:
    """What goes wrong: dropped messages, failing links and crashing nodes.

    Args:
        drop: probability that a message is lost, per message.
        link_fail: probability per round that an up link goes down.
        link_recover: probability per round that a down link comes back.
        crashes: ``{node: round >= 1}``: crash-stop before that round's gradient.
        leaves: ``{node: round}``: a crash that a later ``joins`` entry may undo.
        joins: ``{node: round}``: the node (re)joins before that round's gradient and pulls
            its state from its live in-neighbour of largest weight in ``W_round`` (ties:
            the smallest id), alive the round before; without an earlier ``leaves`` entry
            it is absent from round 1 until then.

    Raises:
        NetworkError: a field outside its range, a node that crashes and leaves or joins,
            a leave and a join in the same round (node ids and the pull sources are
            checked by :class:`NetworkCommunicator`).
    """

    drop: float = hparam(0.0, PROBABILITY, doc="Probability a message is lost.")
    link_fail: float = hparam(
        0.0, PROBABILITY, doc="Probability per round that an up link goes down."
    )
    link_recover: float = hparam(
        1.0, PROBABILITY, doc="Probability per round that a down link comes back."
    )
    crashes: Mapping[NodeId, Round] = hparam(
        factory=dict,
        doc=(
            "node -> round: the node crashes (crash-stop) before that round's exchange, e.g. "
            '{"5" = 100}.'
        ),
    )
    leaves: Mapping[NodeId, Round] = hparam(
        factory=dict,
        doc=(
            "node -> round: the node leaves before that round's gradient (and may rejoin "
            "with joins)."
        ),
    )
    joins: Mapping[NodeId, Round] = hparam(
        factory=dict,
        doc=(
            "node -> round: the node (re)joins before that round's gradient, pulling its state "
            "from its live neighbour of largest weight; absent until then unless it left first."
        ),
    )
    _by_round: dict[int, tuple[list[int], list[int]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_declared(self, "faults", NetworkError)
        if self.link_fail > 0 and self.link_recover == 0:
            raise NetworkError(
                "faults.link_recover must be > 0 when faults.link_fail > 0 (links that never "
                "recover disconnect the graph); use crashes for permanent failures"
            )
        for name in ("crashes", "leaves", "joins"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        for node in self.crashes:
            if node in self.leaves or node in self.joins:
                raise NetworkError(
                    f"faults.crashes names node {node}, which faults.leaves or faults.joins "
                    "names too: a crashed node never comes back (use leaves and joins for a "
                    "node that does)"
                )
        for node, when in self.joins.items():
            if self.leaves.get(node) == when:
                raise NetworkError(
                    f"faults.joins[{node}] and faults.leaves[{node}] are both round {when}; a "
                    "node cannot leave and join in the same round"
                )
        # round -> (gone, joining), built once: the engine asks every round
        for name in ("crashes", "leaves", "joins"):
            for node, when in getattr(self, name).items():
                gone, joining = self._by_round.setdefault(when, ([], []))
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
        max_delay: ``D`` rounds, ``0 .. 1000``; ``0`` is synchronous gossip.
        kind: where the delays come from.

            * ``"clock"`` (bounded staleness): a node mixes the newest message of each
              neighbour that has arrived when it is ready and waits only for the one of
              round ``t - D``: stragglers stop holding up their neighbours.
            * ``"uniform"``: ``tau_ij(t)`` uniform on ``0 .. D`` from the run's seed; no
              node waits.
            * ``"constant"``: ``tau_ij(t) = D``, the twin of a transport ``D`` exchanges
              behind (:class:`~decent.comm.delay.DelayedCommunicator`); nodes wait for
              round ``t - D``'s message.
            * ``"given"``: ``tau = schedule(t, dst, src)``, e.g. the pattern a real run
              recorded (:attr:`~decent.comm.gossip.GossipCommunicator.versions`) to replay
              the distributed bounded-staleness mode; no node waits.
        schedule: for ``"given"``: integer delays of the messages ``dst <- src`` (arrays
            of the off-diagonal entries of ``W_t``).

    Raises:
        NetworkError: a bad ``max_delay`` or ``kind``, a schedule without kind ``"given"``
            or the reverse; during the run, delays outside ``0 .. min(D, t - 1)``.
    """

    max_delay: int = hparam(
        0, at.Interval(ge=0, le=1000), doc="D: the oldest a mixed value may be (rounds)."
    )
    kind: DelayKind = hparam(
        "clock",
        doc=(
            "clock: bounded staleness, mix the newest message that has arrived, wait only for "
            "the one D rounds old; uniform: tau uniform on 0..D, no waiting; constant: tau = D."
        ),
    )
    schedule: DelaySchedule | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_declared(self, "delays", NetworkError)
        if (self.kind == "given") != (self.schedule is not None):
            raise NetworkError(
                "delays.schedule is needed by kind 'given' and only by it, got kind "
                f"{self.kind!r} with{'out' if self.schedule is None else ''} a schedule"
            )


class Draws:
    """Uniforms of round ``t`` per stream, :data:`AHEAD` rounds per generator call."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._ahead: dict[int, tuple[tuple[int, int, int], np.ndarray]] = {}

    def uniforms(self, stream: int, t: int, count: int) -> np.ndarray:
        """``(count,)`` uniforms of round ``t`` on ``stream``."""
        block, row = divmod(t - 1, AHEAD)
        key = (stream, block, count)
        found = self._ahead.get(stream)
        if found is None or found[0] != key:
            found = (key, generator(self.seed, stream, block).random((AHEAD, count)))
            self._ahead[stream] = found
        return found[1][row]
