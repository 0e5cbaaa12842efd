"""The simulated network's models, checked at the edge, and its seeded draws.

:class:`ComputeModel` and :class:`LinkModel` drive the clock (:mod:`.clock`),
:class:`FaultModel` the drops, link failures and churn (:mod:`.faults`), :class:`DelayModel`
bounded-delay gossip (:mod:`.delays`). Every random choice is a pure function of
``(seed, stream, t)`` (:func:`generator`, :class:`Draws`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

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

        Random kinds draw :data:`AHEAD` rounds per generator call (round ``t`` is row
        ``(t - 1) % AHEAD`` of block ``(t - 1) // AHEAD``), so a round costs a slice.
        """
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
