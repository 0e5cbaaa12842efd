"""Time-varying topologies: ``W_t`` is a pure function of ``(seed, t)``.

Every process that knows the seed and the round computes the same ``W_t`` without talking.
Random rounds draw from ``np.random.default_rng([seed, t])``; no generator state is kept
between calls, so ``weights(t)`` may be called in any order, any number of times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import networkx as nx
import numpy as np
import scipy.sparse as sp

from decent._params import PROBABILITY, check_declared
from decent.topology._checks import Nodes, check_min_nodes, check_power_of_two, check_round
from decent.topology._matrix import MixingMatrix, TopologyError
from decent.topology._rules import GraphSeed, _adjacency, metropolis_hastings
from decent.topology._static import StaticTopology


@dataclass(frozen=True, eq=False)
class OnePeerExponential:
    """One-peer exponential graph: at each round every node averages with one peer.

    At round ``t`` let ``k = (t - 1) mod log2(n)``; then

    .. math::
        W_t[i, i] = \\tfrac12, \\qquad W_t[i, (i + 2^k) \\bmod n] = \\tfrac12 .

    Each ``W_t`` is doubly stochastic (a circulant) and the product of any ``log2(n)``
    consecutive matrices is exactly ``J = 11^T / n``, so ``period = log2(n)`` rounds reach
    exact consensus.

    Reference: Ying, Yuan, Chen, Hu, Pan, Yin, "Exponential Graph is Provably Efficient for
    Decentralized Deep Training", NeurIPS 2021, https://arxiv.org/abs/2110.13363

    Args:
        n: number of nodes, a power of 2 and ``>= 2``.

    Raises:
        TopologyError: ``n`` is not a power of 2 (the message suggests the nearest ones).

    Example:
        >>> topo = OnePeerExponential(4)
        >>> topo.period
        2
        >>> topo.weights(2).dense()[0].tolist()
        [0.5, 0.0, 0.5, 0.0]
    """

    n: Nodes
    _cache: dict[int, MixingMatrix] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        check_declared(self, "one_peer_exponential", TopologyError)
        check_min_nodes(self.n, 2, who="one_peer_exponential", fix="use complete(1) for one node")
        check_power_of_two(self.n, who="one_peer_exponential")

    @property
    def num_nodes(self) -> int:
        return self.n

    @property
    def name(self) -> str:
        return f"one_peer_exponential({self.n})"

    @property
    def is_static(self) -> bool:
        return False

    @property
    def period(self) -> int:
        """``log2(n)``: the rounds after which the peer offsets repeat."""
        return self.n.bit_length() - 1

    def weights(self, t: int) -> MixingMatrix:
        """Return ``W_t`` for round ``t >= 1``."""
        t = check_round(t, who=self.name)
        k = (t - 1) % self.period
        cached = self._cache.get(k)
        if cached is None:  # the matrix depends only on k: caching keeps weights(t) pure
            i = np.arange(self.n)
            rows = np.concatenate([i, i])
            cols = np.concatenate([i, (i + (1 << k)) % self.n])
            w = sp.csr_array((np.full(2 * self.n, 0.5), (rows, cols)), shape=(self.n, self.n))
            cached = MixingMatrix.from_array(w, name=f"{self.name}[k={k}]")
            self._cache[k] = cached
        return cached

    def describe(self) -> dict[str, Any]:
        """Summarize the schedule."""
        return {"name": self.name, "num_nodes": self.n, "is_static": False, "period": self.period}


def _base_edges(base: StaticTopology | nx.Graph, who: str) -> tuple[int, np.ndarray, np.ndarray]:
    """Return ``(n, u, v)``: the undirected edges ``u < v`` of the base graph, row-major."""
    if isinstance(base, StaticTopology):
        adj = sp.csr_array(base.matrix.off_diagonal != 0, dtype=np.float64)
        if (adj != adj.T).nnz:
            raise TopologyError(
                f"{who} needs an undirected base topology (symmetric pattern), got "
                f"{base.name}; use an undirected generator such as ring, torus or complete"
            )
    elif isinstance(base, nx.Graph):
        if base.is_directed():
            raise TopologyError(f"{who} needs an undirected base graph, got a directed one")
        if set(base.nodes) != set(range(base.number_of_nodes())):
            raise TopologyError(
                f"{who} needs base graph nodes labelled 0..n-1; wrap it with from_networkx(G)"
            )
        adj, _ = _adjacency(base)
    else:
        raise TopologyError(
            f"{who}: base must be a StaticTopology (e.g. ring(16)) or a networkx Graph, "
            f"got {type(base).__name__}"
        )
    coo = sp.triu(adj, k=1).tocoo()
    return int(adj.shape[0]), coo.row.astype(np.int64), coo.col.astype(np.int64)


def greedy_matching(num_nodes: int, u: np.ndarray, v: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Return the greedy maximal matching of edges taken in increasing ``rank`` order.

    Vectorized: repeatedly select every alive edge whose rank is the smallest among all alive
    edges touching either endpoint, then retire edges that touch a matched node. This selects
    exactly the edges the sequential greedy pass would (a selected edge is never blocked by a
    lower-ranked edge), in ``O(log E)`` passes for random ranks.

    Args:
        num_nodes: number of nodes ``n``.
        u: ``(E,)`` first endpoints.
        v: ``(E,)`` second endpoints.
        rank: ``(E,)`` distinct priorities (a permutation of ``0..E-1``).

    Returns:
        ``(E,)`` boolean mask of the matched edges.
    """
    e = u.size
    chosen = np.zeros(e, dtype=bool)
    matched = np.zeros(num_nodes, dtype=bool)
    alive = np.ones(e, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)
        eu, ev, er = u[idx], v[idx], rank[idx]
        best = np.full(num_nodes, e, dtype=np.int64)
        np.minimum.at(best, eu, er)
        np.minimum.at(best, ev, er)
        sel = (best[eu] == er) & (best[ev] == er)
        chosen[idx[sel]] = True
        matched[eu[sel]] = True
        matched[ev[sel]] = True
        alive &= ~(matched[u] | matched[v])
    return chosen


@dataclass(frozen=True, eq=False)
class _OnBaseGraph:
    """Shared plumbing of the random topologies drawn on an undirected base graph."""

    kind: ClassVar[str]
    base: StaticTopology | nx.Graph
    seed: GraphSeed = field(kw_only=True)
    _edges: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)
    _n: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_declared(self, self.kind, TopologyError)
        n, u, v = _base_edges(self.base, self.kind)
        object.__setattr__(self, "_n", n)
        object.__setattr__(self, "_edges", (u, v))

    def _name(self, kind: str, *params: str) -> str:
        base = self.base.name if isinstance(self.base, StaticTopology) else f"graph({self._n})"
        return f"{kind}({', '.join([base, *params])})"

    @property
    def num_nodes(self) -> int:
        return self._n

    @property
    def is_static(self) -> bool:
        return False

    @property
    def period(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        """Summarize the schedule."""
        out = {"name": self.name, "num_nodes": self._n, "is_static": False, "period": None}
        return {**out, "base_edges": int(self._edges[0].size), **self._described()}

    def _described(self) -> dict[str, Any]:
        return {}

    @property
    def name(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class RandomMatching(_OnBaseGraph):
    """Random pairwise gossip: each round a random maximal matching of the base graph.

    At round ``t`` the base edges are ranked by a permutation drawn from
    ``default_rng([seed, t])`` and matched greedily in that order. Matched pairs average:

    .. math::
        W_t[i, i] = W_t[i, j] = W_t[j, i] = W_t[j, j] = \\tfrac12 \\quad (\\{i, j\\} \\in M_t),

    and unmatched nodes keep their value (``W_t[i, i] = 1``). Each ``W_t`` is symmetric and
    doubly stochastic and every node sends at most one message per round.

    Args:
        base: an undirected :class:`StaticTopology` or networkx graph on ``0..n-1``.
        seed: a nonnegative integer.

    Example:
        >>> from decent.topology import ring
        >>> topo = RandomMatching(ring(6), seed=0)
        >>> topo.weights(3).dense().sum(axis=0).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """

    kind = "random_matching"

    @property
    def name(self) -> str:
        return self._name("random_matching", f"seed={self.seed}")

    def matching(self, t: int) -> np.ndarray:
        """Return the ``(P, 2)`` matched pairs ``(i, j)``, ``i < j``, of round ``t``."""
        t = check_round(t, who=self.name)
        u, v = self._edges
        rng = np.random.default_rng([self.seed, t])
        rank = rng.permutation(u.size)
        chosen = greedy_matching(self._n, u, v, rank)
        return np.stack([u[chosen], v[chosen]], axis=1)

    def weights(self, t: int) -> MixingMatrix:
        """Return ``W_t`` for round ``t >= 1``."""
        pairs = self.matching(t)
        n = self._n
        a, b = pairs[:, 0], pairs[:, 1]
        single = np.ones(n, dtype=bool)
        single[a] = False
        single[b] = False
        lone = np.flatnonzero(single)
        rows = np.concatenate([a, a, b, b, lone])
        cols = np.concatenate([a, b, a, b, lone])
        data = np.concatenate([np.full(4 * a.size, 0.5), np.ones(lone.size)])
        w = sp.csr_array((data, (rows, cols)), shape=(n, n))
        return MixingMatrix.from_array(w, name=f"{self.name}@t={t}")


@dataclass(frozen=True, eq=False)
class EdgeDropout(_OnBaseGraph):
    """A base graph whose edges fail independently each round.

    At round ``t`` every undirected base edge is down with probability ``p`` (draws from
    ``default_rng([seed, t])``); Metropolis-Hastings weights are recomputed on the surviving
    graph ``G_t``:

    .. math::
        W_t[i, j] = \\frac{1}{1 + \\max(d_i^t, d_j^t)} \\quad (\\{i, j\\} \\in G_t), \\qquad
        W_t[i, i] = 1 - \\sum_{j \\ne i} W_t[i, j],

    so every ``W_t`` is symmetric and doubly stochastic (``G_t`` may be disconnected; the
    union over rounds is the connected base graph).

    Args:
        base: an undirected :class:`StaticTopology` or networkx graph on ``0..n-1``.
        p: probability that an edge is down in a round, in ``[0, 1]``.
        seed: a nonnegative integer.

    Raises:
        TopologyError: ``p`` outside ``[0, 1]``, a directed base.

    Example:
        >>> from decent.topology import ring
        >>> topo = EdgeDropout(ring(5), 0.0, seed=1)
        >>> bool((topo.weights(4).dense() == ring(5).weights(1).dense()).all())
        True
    """

    kind = "edge_dropout"
    p: Annotated[float, PROBABILITY]

    @property
    def name(self) -> str:
        return self._name("edge_dropout", f"p={self.p:g}", f"seed={self.seed}")

    def alive(self, t: int) -> np.ndarray:
        """Return the ``(E,)`` mask of base edges that are up in round ``t``."""
        t = check_round(t, who=self.name)
        u, _ = self._edges
        rng = np.random.default_rng([self.seed, t])
        return np.asarray(rng.random(u.size) >= self.p)

    def weights(self, t: int) -> MixingMatrix:
        """Return ``W_t`` for round ``t >= 1``."""
        up = self.alive(t)
        u, v = self._edges
        a, b = u[up], v[up]
        n = self._n
        adj = sp.csr_array(
            (np.ones(2 * a.size), (np.concatenate([a, b]), np.concatenate([b, a]))),
            shape=(n, n),
        )
        w = metropolis_hastings(adj)
        return MixingMatrix(csr=w.csr, name=f"{self.name}@t={t}")

    def _described(self) -> dict[str, Any]:
        return {"p": self.p}
