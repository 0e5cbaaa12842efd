"""The Communicator protocol, the only place where nodes meet, and its ground floor.

Algorithms are written row-wise against ``(m, d)`` node tensors and call
:meth:`Communicator.mix` and :meth:`Communicator.all_reduce`, never a rank or a socket.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch

from decent._types import NodeTensor
from decent.topology._matrix import MixingMatrix, Topology

T = TypeVar("T")
ReduceOp = Literal["mean", "sum", "min", "max"]
REDUCE_OPS: tuple[str, ...] = ("mean", "sum", "min", "max")


def reduce_rows(x: NodeTensor, op: str) -> torch.Tensor:
    """This process's share of a reduction over nodes, ``(m, k) -> (k,)``: the row sum for
    ``mean`` and ``sum`` (the caller divides a global sum by ``n``), else the extremum.

    Raises:
        ValueError: ``op`` is not one of :data:`REDUCE_OPS`.
    """
    if op in ("mean", "sum"):
        return x.sum(dim=0)
    if op == "min":
        return x.amin(dim=0)
    if op == "max":
        return x.amax(dim=0)
    raise ValueError(f"op must be one of {', '.join(REDUCE_OPS)}; got {op!r}")


def per_matrix(fn: Callable[..., T]) -> Callable[..., T]:
    """Cache ``fn(w, *args)`` per matrix object ``w`` (by identity, the 64 latest): ``args``
    must be functions of ``w``."""
    cache: dict[int, tuple[object, T]] = {}

    @functools.wraps(fn)
    def cached(w: object, *args: Any) -> T:
        found = cache.get(id(w))
        if found is None or found[0] is not w:
            if len(cache) > 64:
                cache.clear()
            found = cache[id(w)] = (w, fn(w, *args))
        return found[1]

    return cached


def period_of(topology: object) -> int | None:
    """Rounds after which ``topology.weights(t)`` repeats (1 for static), ``None`` if never:
    communicators cache per-matrix work under the key ``(t - 1) % period``."""
    if getattr(topology, "is_static", False):
        return 1
    period = getattr(topology, "period", None)
    if isinstance(period, int) and not isinstance(period, bool) and period >= 1:
        return period
    return None


@dataclass
class CommStats:
    """Exact accounting of algorithmic traffic (never metric collectives), counted from the
    graph and the payload the same way by every backend.

    Attributes:
        messages: point-to-point messages sent (one per directed edge per gossip round; a
            ring all-reduce sends ``2 (n - 1)`` per node).
        bytes: bytes sent in total.
        bytes_per_node: ``(n,)`` bytes each node has sent.
        rounds: communication rounds (calls of ``mix`` or algorithmic ``all_reduce``).
    """

    num_nodes: int
    messages: int = 0
    bytes: int = 0
    rounds: int = 0
    bytes_per_node: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    _gossip_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int, int]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.bytes_per_node.size == 0:
            self.bytes_per_node = np.zeros(self.num_nodes, dtype=np.int64)

    def add_gossip(self, out_degree: np.ndarray, payload_bytes: int) -> None:
        """Record one gossip round: node ``j`` sends ``payload_bytes`` to each out-neighbour."""
        key = (id(out_degree), payload_bytes)
        cached = self._gossip_cache.get(key)
        if cached is None or cached[0] is not out_degree:
            sent = out_degree.astype(np.int64) * payload_bytes
            cached = (out_degree, sent, int(out_degree.sum()), int(sent.sum()))
            if len(self._gossip_cache) > 64:
                self._gossip_cache.clear()
            self._gossip_cache[key] = cached
        _, sent, messages, total = cached
        self.bytes_per_node += sent
        self.messages += messages
        self.bytes += total
        self.rounds += 1

    def add_all_reduce(self, payload_bytes: int) -> None:
        """Record one ring all-reduce: every node sends ``2 (n - 1)`` chunks of
        ``payload_bytes / n`` (reduce-scatter + all-gather)."""
        n = self.num_nodes
        if n > 1:
            per_node = 2 * (n - 1) * payload_bytes // n
            self.bytes_per_node += per_node
            self.messages += 2 * (n - 1) * n
            self.bytes += per_node * n
        self.rounds += 1

    def summary(self) -> dict[str, float]:
        """Flat metrics with stable names."""
        per = self.bytes_per_node if self.num_nodes else np.zeros(1)
        return {
            "comm/messages": float(self.messages),
            "comm/bytes": float(self.bytes),
            "comm/bytes_per_node_mean": float(per.mean()),
            "comm/bytes_per_node_max": float(per.max()),
            "comm/rounds": float(self.rounds),
        }


@runtime_checkable
class Communicator(Protocol):
    """Moves node values between nodes: ``num_nodes`` ``n`` in the network, ``node_ids``
    ``(m,)`` int64 the global ids of the rows held here, in row order."""

    num_nodes: int
    node_ids: torch.Tensor

    @property
    def stats(self) -> CommStats:
        """Exact accounting of algorithmic traffic (an attribute or a property)."""
        ...

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """One gossip step: held row ``i`` of ``x`` ``(m, k)`` becomes ``sum_j W_t[i, j] x_j``
        (``k`` may pack several vectors: DAT-SGD sends ``[w | x]`` as one message)."""
        ...

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """Reduce ``(m, k)`` over all ``n`` nodes to ``(k,)`` (``accounted=False``: metric
        traffic, not the algorithm's)."""
        ...

    def metrics(self) -> dict[str, float]:
        """Flat metrics added to every record (``{}`` for most; ``dist/alive_nodes``, ...)."""
        ...

    def close(self) -> None:
        """Finish what is in flight and release the transport; call once after the last round."""
        ...


class Buffers:
    """Reused flat buffers, one per ``(name, dtype, device)``, grown to the largest size asked
    for. Fresh multi-MB tensors are page-faulted in on first touch, which made a gossip step
    with 4 MB messages 2-3x slower than the exchange itself (see :mod:`decent.comm.dist`)."""

    def __init__(self) -> None:
        self._flat: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A ``shape`` view of buffer ``name`` with ``like``'s dtype and device."""
        size = int(np.prod(shape))
        key = (name, like.dtype, like.device)
        flat = self._flat.get(key)
        if flat is None or flat.numel() < size:
            flat = self._flat[key] = torch.empty(size, dtype=like.dtype, device=like.device)
        return flat[:size].view(shape)


class Combiner:
    """Base of a combiner over an ``inner`` communicator: its nodes, its accounting, its
    exact reduction, its metrics and its close (subclasses define ``mix``)."""

    def __init__(self, inner: Communicator) -> None:
        self.inner = inner
        self.num_nodes: int = inner.num_nodes
        self.node_ids: torch.Tensor = inner.node_ids

    @property
    def stats(self) -> CommStats:
        """The inner communicator's accounting."""
        return self.inner.stats

    def all_reduce(
        self, x: NodeTensor, op: ReduceOp = "mean", *, accounted: bool = True
    ) -> torch.Tensor:
        """The inner communicator's exact reduction."""
        return self.inner.all_reduce(x, op, accounted=accounted)

    def metrics(self) -> dict[str, float]:
        """The inner communicator's metrics."""
        return self.inner.metrics()

    def close(self) -> None:
        """Close the inner communicator."""
        self.inner.close()


# -- the transport: the ground floor every communicator stands on ---------------------------


class Posted(Protocol):
    """An exchange in flight: the rows posted, and what :meth:`wait` returns once received."""

    x: NodeTensor
    """``(m, k)`` the rows that were posted (a private copy when posted with ``keep``)."""

    def wait(self) -> NodeTensor:
        """Complete the exchange; return ``Z = [x; received]`` in the transport's row order
        (``x`` itself when nothing is received). Calling it again returns the same ``Z``."""
        ...


class Pending:
    """A :class:`Posted` exchange whose ``Z`` is ``finish()``, called by the first
    :meth:`wait` (without ``finish``: ``x``, every row it needs is already here)."""

    def __init__(self, x: NodeTensor, finish: Callable[[], NodeTensor] | None = None) -> None:
        self.x, self._finish = x, finish or (lambda: x)
        self._z: NodeTensor | None = None

    def wait(self) -> NodeTensor:
        if self._z is None:
            self._z = self._finish()
        return self._z


@runtime_checkable
class Exchange(Communicator, Protocol):
    """The exchange of ``W_t``'s rows: who sends which rows to whom, and receiving them (the
    simulator moves nothing, ``Z = x``; ranks swap exactly the rows each neighbour needs).
    Plain gossip is ``combine(post(x, t).wait(), t)`` and ``count``; the combiners are built
    from these members."""

    def post(self, x: NodeTensor, t: int, *, slot: int = 0, keep: bool = False) -> Posted:
        """Start sending each neighbour its rows of ``x`` for ``W_t`` and receiving theirs
        (counts nothing). Exchanges in flight together need different ``slot``s (reused
        buffers); ``keep`` copies ``x`` first, so the caller may overwrite it."""
        ...

    def combine(self, z: NodeTensor, t: int) -> NodeTensor:
        """``(m, k)``: row ``i`` is ``sum_j W_t[i, j] z_j`` over ``Z``'s rows (held ``i``); a
        fresh tensor, which callers may update in place."""
        ...

    def count(self, t: int, nbytes: int) -> None:
        """Account one gossip round of ``W_t`` with ``nbytes`` per message (a simulated
        network also puts it on its clock)."""
        ...


@runtime_checkable
class Transport(Exchange, Protocol):
    """A communicator's ground floor: the exchange, and where each node's row is in it
    (the per-node combiners, stale mixing and robust rules, need it)."""

    topology: Topology

    def weights(self, t: int) -> MixingMatrix:
        """``W_t`` as the exchange uses it."""
        ...

    def self_weights(self, t: int) -> np.ndarray:
        """``(m,)`` ``W_t[i, i]`` of the held rows ``i``."""
        ...

    def layout(self, t: int) -> np.ndarray:
        """``(n,)`` the row of ``Z`` that holds each node's value at round ``t`` (``-1``:
        neither held nor received here)."""
        ...


class BaseTransport:
    """What transports share: plain gossip from the exchange, the accounting of a round, no
    metrics, nothing to close."""

    stats: CommStats
    weights: Callable[[int], MixingMatrix]
    post: Callable[..., Posted]
    combine: Callable[[NodeTensor, int], NodeTensor]

    def mix(self, x: NodeTensor, t: int) -> NodeTensor:
        """One gossip step of the held rows ``(m, k)``: post, wait, count, combine (on ranks
        a collective over the neighbours: every rank calls it with the same ``t``)."""
        z = self.post(x, t).wait()
        self.count(t, x.shape[1] * x.element_size())
        return self.combine(z, t)

    def count(self, t: int, nbytes: int) -> None:
        """Count one gossip round of ``W_t``, ``nbytes`` per message."""
        self.stats.add_gossip(self.weights(t).out_degree, nbytes)

    def metrics(self) -> dict[str, float]:
        """Nothing beyond :attr:`stats`."""
        return {}

    def close(self) -> None:
        """Nothing to release."""


# -- optional capabilities, asked for with isinstance; a wrapper offers one only where it
# keeps its meaning -----------------------------------------------------------------------


@runtime_checkable
class Topological(Protocol):
    """A communicator that mixes with a known topology (``W_t = topology.weights(t)``)."""

    topology: Topology


@runtime_checkable
class Clocked(Protocol):
    """A simulated network's clock: rounds start when the clock says, nodes leave and join."""

    def begin_round(self, t: int) -> list[tuple[int, int]]:
        """Advance the clock to round ``t``; return ``(joining, source)`` pairs: a node that
        joins at ``t`` pulls its state from ``source``."""
        ...


@runtime_checkable
class PairwiseEvents(Protocol):
    """Asynchronous pairwise averaging events (AD-PSGD), drawn from a simulated clock."""

    def pairwise(self, x: NodeTensor, t: int) -> Any:
        """The events of round ``t`` as a :class:`~decent.comm.network.PairwiseRound`."""
        ...


@runtime_checkable
class HonestRows(Protocol):
    """Some nodes are Byzantine: metrics are over the ``honest`` ``(m,)`` held rows only."""

    honest: torch.Tensor

    @property
    def num_honest(self) -> int:
        """Honest nodes whose rows the latest ``all_reduce`` summed (all, without failures)."""
        ...


@runtime_checkable
class Replicable(Protocol):
    """A simulator communicator that can batch ``R`` independent replicas of itself."""

    def replicated(self, replicas: int) -> Communicator:
        """The same mixing on ``R`` replicas stacked node-major in ``(n R, k)`` rows."""
        ...


@runtime_checkable
class AliveRanks(Protocol):
    """A fault-tolerant transport: who is still alive, and what happened to the others."""

    events: list[dict[str, Any]]

    def alive_ranks(self) -> list[int]:
        """Group ranks not declared dead, ascending."""
        ...

    def counted_nodes(self) -> np.ndarray:
        """Node ids whose rows the latest ``all_reduce`` summed."""
        ...


@runtime_checkable
class Stale(Protocol):
    """Mixes neighbours' values up to ``staleness`` mix calls old (``0``: never stale)."""

    @property
    def staleness(self) -> int: ...
