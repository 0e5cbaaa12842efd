"""The simulated network's models (compute and link times, faults, delays), checked at the
edge, and its seeded draws: every random choice is a pure function of ``(seed, stream, t)``.
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


_RULES: dict[str, Callable[[float], bool]] = {
    ">= 0": lambda v: v >= 0,
    "> 0": lambda v: v > 0,
    ">= 1": lambda v: v >= 1,
    "probability": lambda v: 0 <= v <= 1,
}


def _check(name: str, value: float, rule: str) -> None:
    """Raise unless ``value`` is a number obeying ``rule`` (NaN obeys none)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _RULES[rule](value):
        what = "a probability in [0, 1]" if rule == "probability" else f"a number {rule}"
        raise NetworkError(f"{name} must be {what}, got {value!r}")


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
        _check("compute.mean", self.mean, "> 0")
        _check("compute.sigma", self.sigma, ">= 0")
        _check("compute.p", self.p, "probability")
        _check("compute.slowdown", self.slowdown, ">= 1")
        _check("compute.slow_factor", self.slow_factor, ">= 1")
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
    """How long a message takes: ``latency`` (seconds, ``>= 0``) ``+ bytes / bandwidth``
    (bytes per second of a node's link, ``> 0``; ``inf``: size is free).

    Raises:
        NetworkError: a field outside its range.
    """

    latency: float = 0.0
    bandwidth: float = math.inf

    def __post_init__(self) -> None:
        _check("link.latency", self.latency, ">= 0")
        _check("link.bandwidth", self.bandwidth, "> 0")

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
        for name in ("drop", "link_fail", "link_recover"):
            _check(f"faults.{name}", getattr(self, name), "probability")
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
