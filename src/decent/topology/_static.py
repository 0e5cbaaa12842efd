"""Static topologies: a fixed graph and one mixing matrix used at every round.

Generators take networkx vocabulary and build the graph's CSR adjacency straight from
numpy index arrays, so ``ring(8192)`` or ``exponential(8192)`` take milliseconds. Every
generator takes ``weights``, a rule of ``WEIGHT_RULES`` by name or a callable
``graph -> MixingMatrix``, and ``lazy``: if given, ``W <- lazy * I + (1 - lazy) * W``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, cast

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from decent._params import PROBABILITY, SIZE, Doc, checked_args
from decent.topology._checks import (
    Nodes,
    check_min_nodes,
    check_power_of_two,
    check_round,
    require_connected,
)
from decent.topology._matrix import MixingMatrix, TopologyError
from decent.topology._rules import (
    GraphSeed,
    Lazy,
    WeightName,
    WeightRule,
    Weights,
    lazy,
    resolve_weight_rule,
)
from decent.topology._spectral import _torch_to_scipy, spectral_gap

_DIAMETER_CHUNK = 256


@dataclass(frozen=True, eq=False)
class StaticTopology:
    """A fixed graph with one mixing matrix: ``W_t = W`` for every round ``t``.

    Attributes:
        graph: the communication graph on nodes ``0..n-1``. In a directed graph an edge
            ``u -> v`` means ``u`` sends to ``v`` (``W[v, u] > 0``).
        matrix: the mixing matrix ``W``.
        name: a short human-readable name such as ``"ring(8)"``.
        weight_rule: the name of the rule that produced ``matrix`` (``"custom"`` for
            :func:`from_matrix`).

    Example:
        >>> topo = ring(4)
        >>> topo.num_nodes, topo.is_static, topo.period
        (4, True, 1)
        >>> round(topo.spectral_gap, 6)
        0.666667
    """

    graph_source: nx.Graph | Callable[[], nx.Graph] = field(repr=False)
    """The graph, or a function that builds it on first use of :attr:`graph` (a complete
    graph on 4096 nodes is 8.4M networkx edges, gigabytes that a run never needs)."""
    matrix: MixingMatrix
    name: str
    weight_rule: str = "custom"
    directed: bool = False

    @cached_property
    def graph(self) -> nx.Graph:
        """The communication graph (built on first use)."""
        src = self.graph_source
        return src() if callable(src) else src

    @property
    def num_nodes(self) -> int:
        return self.matrix.n

    @property
    def is_static(self) -> bool:
        return True

    @property
    def period(self) -> int:
        return 1

    def weights(self, t: int) -> MixingMatrix:
        """Return ``W`` (the same for every round ``t >= 1``)."""
        check_round(t, who=self.name)
        return self.matrix

    @cached_property
    def spectral_gap(self) -> float:
        """``1 - |lambda_2(W)|`` (see :func:`decent.topology.spectral_gap`)."""
        return spectral_gap(self.matrix)

    @cached_property
    def diameter(self) -> int | None:
        """Longest shortest path in hops; ``None`` if the graph is not (strongly) connected."""
        return _diameter(self.matrix)

    def describe(self) -> dict[str, Any]:
        """Summarize the topology: size, degrees, diameter, spectral gap and weight rule.

        Degrees count the neighbours each node receives from (its degree in an undirected
        graph).
        """
        deg = self.matrix.in_degree
        return {
            "name": self.name,
            "num_nodes": self.num_nodes,
            "directed": self.directed,
            "num_edges": self.matrix.num_messages // (1 if self.directed else 2),
            "degree_min": int(deg.min()),
            "degree_mean": float(deg.mean()),
            "degree_max": int(deg.max()),
            "diameter": self.diameter,
            "spectral_gap": self.spectral_gap,
            "weight_rule": self.weight_rule,
        }


def _diameter(matrix: MixingMatrix) -> int | None:
    """Hop diameter of the off-diagonal pattern of ``W`` (edge ``j -> i`` when ``W[i,j]>0``)."""
    n = matrix.n
    if n == 1:
        return 0
    adj = sp.csr_array(matrix.off_diagonal.T)  # adj[j, i] != 0: j sends to i
    directed = not matrix.is_symmetric
    count, _ = csgraph.connected_components(adj, directed=directed, connection="strong")
    if count > 1:
        return None
    best = 0
    for start in range(0, n, _DIAMETER_CHUNK):
        idx = np.arange(start, min(n, start + _DIAMETER_CHUNK))
        dist = csgraph.shortest_path(adj, directed=directed, unweighted=True, indices=idx)
        best = max(best, int(dist.max()))
    return best


# ---- shared builder


def _build(
    n: int,
    u: np.ndarray,
    v: np.ndarray,
    *,
    name: str,
    weights: str | WeightRule,
    lazy_alpha: float | None,
    directed: bool = False,
    check_connected: bool = True,
) -> StaticTopology:
    """Build a topology from edge index arrays ``u[k] -- v[k]`` (or ``u[k] -> v[k]``)."""
    rule, rule_name = resolve_weight_rule(weights)
    u = np.asarray(u, dtype=np.int64).ravel()
    v = np.asarray(v, dtype=np.int64).ravel()
    keep = u != v
    u, v = u[keep], v[keep]
    if not directed:
        u, v = np.minimum(u, v), np.maximum(u, v)
    key = np.sort(u * n + v)  # unique by sorting: numpy's hash-based unique is 4x slower
    key = key[np.concatenate([[True], key[1:] != key[:-1]])] if key.size else key
    u, v = key // n, key % n
    if directed:
        rows, cols = u, v
    else:
        rows, cols = np.concatenate([u, v]), np.concatenate([v, u])
    adj = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n, n))
    adj.sort_indices()
    if check_connected:
        require_connected(adj, who=name, directed=directed)
    matrix = rule(adj)
    if not isinstance(matrix, MixingMatrix):
        raise TopologyError(
            f"{name}: weight rule {rule_name!r} must return a MixingMatrix, "
            f"got {type(matrix).__name__}"
        )
    if matrix.n != n:
        raise TopologyError(
            f"{name}: weight rule {rule_name!r} returned a {matrix.n}x{matrix.n} matrix for a "
            f"graph on {n} nodes"
        )
    if lazy_alpha is not None:
        matrix = lazy(matrix, lazy_alpha)
        rule_name = f"lazy({float(lazy_alpha):g})*{rule_name}"
    matrix = MixingMatrix(csr=matrix.csr, name=name)
    return StaticTopology(
        graph_source=_graph_of(n, u, v, directed),
        matrix=matrix,
        name=name,
        weight_rule=rule_name,
        directed=directed,
    )


def _graph_of(n: int, u: np.ndarray, v: np.ndarray, directed: bool) -> Callable[[], nx.Graph]:
    def make() -> nx.Graph:
        graph: nx.Graph = nx.DiGraph() if directed else nx.Graph()
        graph.add_nodes_from(range(n))
        graph.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
        return graph

    return make


def _square_factors(n: int, minimum: int) -> tuple[int, int] | None:
    """The factorization ``rows * cols = n`` with ``minimum <= rows <= cols``, most square."""
    for rows in range(math.isqrt(n), minimum - 1, -1):
        if n % rows == 0 and n // rows >= minimum:
            return rows, n // rows
    return None


def _grid_shape(
    who: str, n: int, rows: int | None, cols: int | None, minimum: int
) -> tuple[int, int]:
    if rows is None and cols is None:
        shape = _square_factors(n, minimum)
        if shape is None:
            raise TopologyError(
                f"{who}({n}): no factorization rows * cols = {n} with rows, cols >= {minimum}; "
                f"pass rows= and cols= explicitly, or use ring({n}) or grid({n})"
            )
        return shape
    if rows is None or cols is None:  # one side given: the other is n // side
        arg, side = ("cols", cols) if rows is None else ("rows", rows)
        side = cast(int, side)  # the other one: not None
        if n % side:
            raise TopologyError(
                f"{who}: {arg}={side} does not divide num_nodes={n}; pick a divisor"
            )
        r, c = (n // side, side) if rows is None else (side, n // side)
    else:
        r, c = rows, cols
    if min(r, c) < minimum:
        raise TopologyError(f"{who} needs rows, cols >= {minimum}, got rows={r}, cols={c}")
    if r * c != n:
        shape = _square_factors(n, minimum)
        hint = f"; for example rows={shape[0]}, cols={shape[1]}" if shape else ""
        raise TopologyError(
            f"{who} needs rows * cols == num_nodes, got rows={r}, cols={c} ({r * c} != {n}){hint}"
        )
    return r, c


# ---- deterministic generators


Side = Annotated[int | None, SIZE, Doc("Rows or columns (None: the most square factorization).")]
Degree = Annotated[int, SIZE, Doc("Degree of every node.")]


@checked_args("ring", TopologyError)
def ring(
    n: Nodes, *, weights: Weights = "metropolis_hastings", lazy: Lazy = None
) -> StaticTopology:
    """Build the cycle graph: node ``i`` talks to ``i - 1`` and ``i + 1`` (mod ``n``).

    With Metropolis-Hastings weights every entry is ``1/3``; the gap is
    ``1 - max_k |1/3 + 2/3 cos(2 pi k / n)|`` over ``k != 0``.

    Args:
        n: number of nodes, ``>= 3``.

    Raises:
        TopologyError: ``n < 3``.

    Example:
        >>> ring(5).weights(1).dense()[0].round(4).tolist()
        [0.3333, 0.3333, 0.0, 0.0, 0.3333]
    """
    check_min_nodes(n, 3, who="ring", fix=f"use complete({n})")
    i = np.arange(n)
    return _build(n, i, (i + 1) % n, name=f"ring({n})", weights=weights, lazy_alpha=lazy)


@checked_args("torus", TopologyError)
def torus(
    n: Nodes,
    rows: Side = None,
    cols: Side = None,
    *,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
) -> StaticTopology:
    """Build the 2-D periodic grid: node ``r * cols + c`` talks to its 4 wrap-around neighbours.

    Args:
        n: number of nodes, ``rows * cols``.
        rows: grid rows, ``>= 3``; default: the most square factorization with both ``>= 3``.
        cols: grid columns, ``>= 3``.

    Raises:
        TopologyError: ``rows * cols != n``, a side below 3, or no such factorization.

    Example:
        >>> torus(12).name
        'torus(3x4)'
    """
    r, c = _grid_shape("torus", n, rows, cols, minimum=3)
    i = np.arange(n)
    row, col = i // c, i % c
    right = row * c + (col + 1) % c
    down = ((row + 1) % r) * c + col
    u = np.concatenate([i, i])
    v = np.concatenate([right, down])
    return _build(n, u, v, name=f"torus({r}x{c})", weights=weights, lazy_alpha=lazy)


@checked_args("grid", TopologyError)
def grid(
    n: Nodes,
    rows: Side = None,
    cols: Side = None,
    *,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
) -> StaticTopology:
    """Build the 2-D grid without wrap-around (``rows x cols``, node ``r * cols + c``).

    Args:
        n: number of nodes, ``rows * cols``.
        rows: grid rows (default: most square factorization; a prime ``n`` gives a path).

    Raises:
        TopologyError: ``rows * cols != n``.

    Example:
        >>> grid(6).describe()["degree_max"]
        3
    """
    r, c = _grid_shape("grid", n, rows, cols, minimum=1)
    i = np.arange(n)
    row, col = i // c, i % c
    has_right = col < c - 1
    has_down = row < r - 1
    u = np.concatenate([i[has_right], i[has_down]])
    v = np.concatenate([i[has_right] + 1, i[has_down] + c])
    return _build(n, u, v, name=f"grid({r}x{c})", weights=weights, lazy_alpha=lazy)


@checked_args("hypercube", TopologyError)
def hypercube(
    n: Nodes, *, weights: Weights = "metropolis_hastings", lazy: Lazy = None
) -> StaticTopology:
    """Build the hypercube on ``n = 2**d`` nodes: ``i`` talks to ``i XOR 2**b``, ``b < d``.

    With uniform weights ``W = (I + A) / (d + 1)`` and the gap is ``2 / (d + 1)``.

    Raises:
        TopologyError: ``n`` is not a power of 2 (the message suggests the nearest ones).

    Example:
        >>> round(hypercube(8, weights="uniform").spectral_gap, 6)
        0.5
    """
    check_power_of_two(n, who="hypercube")
    dim = n.bit_length() - 1
    i = np.arange(n)
    u = np.concatenate([i] * dim) if dim else i[:0]
    v = np.concatenate([i ^ (1 << b) for b in range(dim)]) if dim else i[:0]
    return _build(n, u, v, name=f"hypercube({n})", weights=weights, lazy_alpha=lazy)


@checked_args("exponential", TopologyError)
def exponential(
    n: Nodes,
    directed: Annotated[bool, Doc("One-way edges i -> i + 2^k (uniform weights).")] = False,
    *,
    weights: Annotated[
        WeightName | WeightRule | None,
        Doc("Weight rule (None: uniform if directed, else metropolis_hastings)."),
    ] = None,
    lazy: Lazy = None,
) -> StaticTopology:
    """Build the static base-2 exponential graph: ``i`` linked to ``i + 2**k mod n``.

    Offsets ``2**k`` for ``k = 0 .. ceil(log2 n) - 1``. Undirected (default), every link is
    two-way and the default weights are Metropolis-Hastings. With ``directed=True`` this is
    the circulant of Ying et al. (2021): node ``i`` receives from ``i + 2**k mod n``
    (``W[i, (i + 2**k) mod n] > 0``) and the default weights are uniform,
    ``1 / (tau + 1)`` with ``tau = ceil(log2 n)`` distinct out-neighbours, which is doubly
    stochastic.

    Reference: Ying, Yuan, Chen, Hu, Pan, Yin, "Exponential Graph is Provably Efficient for
    Decentralized Deep Training", NeurIPS 2021, https://arxiv.org/abs/2110.13363

    Args:
        n: number of nodes, ``>= 2`` (any ``n``, not only powers of 2).

    Example:
        >>> exponential(8, directed=True).weights(1).dense()[0].tolist()
        [0.25, 0.25, 0.25, 0.0, 0.25, 0.0, 0.0, 0.0]
    """
    check_min_nodes(n, 2, who="exponential", fix="use complete(1) for a single node")
    if weights is None:
        weights = "uniform" if directed else "metropolis_hastings"
    tau = math.ceil(math.log2(n))
    offsets = np.array([1 << k for k in range(tau)], dtype=np.int64) % n
    i = np.arange(n)
    recv = np.repeat(i, offsets.size)
    send = (recv + np.tile(offsets, n)) % n
    kind = "directed_exponential" if directed else "exponential"
    # Directed: edge send -> recv (send's value flows to recv, W[recv, send] > 0).
    return _build(
        n, send, recv, name=f"{kind}({n})", weights=weights, lazy_alpha=lazy, directed=directed
    )


@checked_args("complete", TopologyError)
def complete(
    n: Nodes, *, weights: Weights = "metropolis_hastings", lazy: Lazy = None
) -> StaticTopology:
    """Build the complete graph; Metropolis-Hastings weights give ``W = J = 11^T / n``.

    Example:
        >>> complete(4).weights(1).dense()[0].tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    u, v = np.triu_indices(n, k=1)
    return _build(n, u, v, name=f"complete({n})", weights=weights, lazy_alpha=lazy)


@checked_args("star", TopologyError)
def star(
    n: Nodes, *, weights: Weights = "metropolis_hastings", lazy: Lazy = None
) -> StaticTopology:
    """Build the star graph: node 0 is the hub, nodes ``1..n-1`` are leaves.

    Raises:
        TopologyError: ``n < 2``.

    Example:
        >>> star(4).describe()["degree_max"]
        3
    """
    check_min_nodes(n, 2, who="star", fix="use complete(1) for a single node")
    leaves = np.arange(1, n)
    return _build(
        n, np.zeros_like(leaves), leaves, name=f"star({n})", weights=weights, lazy_alpha=lazy
    )


# ---- random generators (seeded; the same seed gives the same graph)


def _from_nx_edges(n: int, g: nx.Graph, **build: Any) -> StaticTopology:
    """:func:`_build` on the edges of the networkx graph ``g`` (nodes ``0..n-1``)."""
    edges = np.asarray(list(g.edges()), dtype=np.int64).reshape(-1, 2)
    return _build(n, edges[:, 0], edges[:, 1], **build)


@checked_args("erdos_renyi", TopologyError)
def erdos_renyi(
    n: Nodes,
    p: Annotated[float, PROBABILITY, Doc("Edge probability.")],
    *,
    seed: GraphSeed,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
) -> StaticTopology:
    """Build a G(n, p) random graph: every pair linked independently with probability ``p``.

    Raises:
        TopologyError: ``p`` outside ``[0, 1]``, or the drawn graph is disconnected (the
            message names the components; raise ``p`` or change ``seed``).

    Example:
        >>> erdos_renyi(10, 0.6, seed=1).num_nodes
        10
    """
    p = float(p)
    g = nx.fast_gnp_random_graph(n, p, seed=seed) if p < 1 else nx.complete_graph(n)
    return _from_nx_edges(
        n, g, name=f"erdos_renyi({n}, p={p:g}, seed={seed})", weights=weights, lazy_alpha=lazy
    )


@checked_args("random_regular", TopologyError)
def random_regular(
    n: Nodes,
    k: Degree,
    *,
    seed: GraphSeed,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
) -> StaticTopology:
    """Build a uniformly random ``k``-regular graph on ``n`` nodes.

    Raises:
        TopologyError: ``n * k`` odd, ``k >= n``, ``k < 1`` or a disconnected draw.

    Example:
        >>> random_regular(10, 3, seed=0).describe()["degree_min"]
        3
    """
    if k >= n:
        fix = f"use complete({n}) for k = n - 1" if k == n - 1 else f"use k <= {n - 1}"
        raise TopologyError(f"random_regular needs degree k < num_nodes, got k={k}, n={n}; {fix}")
    if (n * k) % 2:
        raise TopologyError(
            f"random_regular needs n * k even (each edge has two ends), got n={n}, k={k}; "
            f"use k={k + 1 if k + 1 < n else k - 1} or n={n + 1}"
        )
    g = nx.random_regular_graph(k, n, seed=seed)
    return _from_nx_edges(
        n, g, name=f"random_regular({n}, k={k}, seed={seed})", weights=weights, lazy_alpha=lazy
    )


@checked_args("watts_strogatz", TopologyError)
def watts_strogatz(
    n: Nodes,
    k: Annotated[int, SIZE, Doc("Degree of the ring lattice (even).")],
    p: Annotated[float, PROBABILITY, Doc("Rewiring probability.")],
    *,
    seed: GraphSeed,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
) -> StaticTopology:
    """Build a connected Watts-Strogatz small-world graph.

    A ring where each node links to its ``k`` nearest neighbours (``k/2`` per side), then each
    edge is rewired with probability ``p``; redrawn (deterministically from ``seed``) until
    connected, as in ``networkx.connected_watts_strogatz_graph``.

    Raises:
        TopologyError: ``k`` odd or outside ``[2, n)``, ``p`` outside ``[0, 1]``.

    Example:
        >>> watts_strogatz(12, 4, 0.2, seed=0).num_nodes
        12
    """
    check_min_nodes(n, 3, who="watts_strogatz", fix=f"use complete({n})")
    if k % 2 or k >= n:
        raise TopologyError(
            f"watts_strogatz needs an even k (k/2 neighbours per side) with k < num_nodes, "
            f"got k={k}, n={n}; use k={max(2, min(k - k % 2, n - 1 - (n - 1) % 2))}"
        )
    try:
        g = nx.connected_watts_strogatz_graph(n, k, p, tries=100, seed=seed)
    except nx.NetworkXError as err:
        raise TopologyError(
            f"watts_strogatz({n}, k={k}, p={p:g}, seed={seed}): no connected draw in 100 "
            f"tries; lower p or raise k ({err})"
        ) from err
    return _from_nx_edges(
        n,
        g,
        name=f"watts_strogatz({n}, k={k}, p={p:g}, seed={seed})",
        weights=weights,
        lazy_alpha=lazy,
    )


# ---- from user data


def from_networkx(
    graph: nx.Graph,
    *,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
    name: str | None = None,
) -> StaticTopology:
    """Wrap a networkx graph; nodes are relabelled ``0..n-1`` in ``list(graph.nodes)`` order.

    Self-loops and multi-edges are dropped (the weight rule sets the diagonal). In a
    ``DiGraph`` an edge ``u -> v`` means ``u`` sends to ``v``; it must be strongly connected.
    The original labels are kept on the relabelled graph's nodes as attribute ``"label"``.

    Raises:
        TopologyError: an empty or disconnected graph (the message names the components).

    Example:
        >>> from_networkx(nx.petersen_graph(), weights="uniform").describe()["diameter"]
        2
    """
    if not isinstance(graph, nx.Graph):
        raise TopologyError(
            f"from_networkx needs a networkx Graph or DiGraph, got {type(graph).__name__}; "
            "use from_edges(n, edges) for an edge list or from_matrix(W) for a matrix"
        )
    n = graph.number_of_nodes()
    check_min_nodes(n, 1, who="from_networkx", fix="the graph has no nodes")
    index = {node: pos for pos, node in enumerate(graph.nodes)}
    topo = _from_nx_edges(
        n,
        nx.relabel_nodes(graph, index),
        name=name or f"from_networkx({n})",
        weights=weights,
        lazy_alpha=lazy,
        directed=graph.is_directed(),
    )
    if list(graph.nodes) != list(range(n)):
        nx.set_node_attributes(topo.graph, {pos: node for node, pos in index.items()}, name="label")
    return topo


@checked_args("from_edges", TopologyError)
def from_edges(
    n: Nodes,
    edges: Iterable[tuple[int, int]] | np.ndarray,
    *,
    directed: bool = False,
    weights: Weights = "metropolis_hastings",
    lazy: Lazy = None,
    name: str | None = None,
) -> StaticTopology:
    """Build a topology on nodes ``0..n-1`` from an edge list (pairs or an ``(E, 2)`` array).

    Duplicate edges and self-loops are dropped. With ``directed=True`` a pair ``(u, v)``
    means ``u`` sends to ``v``.

    Raises:
        TopologyError: malformed edges, a node id outside ``[0, n)`` or a disconnected graph.

    Example:
        >>> from_edges(3, [(0, 1), (1, 2)]).describe()["diameter"]
        2
    """
    try:
        arr = np.asarray(list(edges) if not isinstance(edges, np.ndarray) else edges)
    except (TypeError, ValueError) as err:
        raise TopologyError(f"from_edges: edges must be pairs of node ids ({err})") from err
    if arr.size == 0:
        arr = np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise TopologyError(
            f"from_edges: edges must be (u, v) pairs or an (E, 2) array, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise TopologyError("from_edges: node ids must be integers")
        arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise TopologyError(
            f"from_edges: node ids must lie in [0, {n}), got edge {tuple(arr[row].tolist())}; "
            f"raise n or relabel"
        )
    return _build(
        n,
        arr[:, 0],
        arr[:, 1],
        name=name or f"from_edges({n})",
        weights=weights,
        lazy_alpha=lazy,
        directed=directed,
    )


def from_matrix(
    w: Any, *, name: str = "custom", require_connected_graph: bool = True
) -> StaticTopology:
    """Wrap a user mixing matrix (numpy array, scipy sparse matrix or torch tensor).

    The matrix must be square, nonnegative and row-stochastic. Its graph is read off the
    off-diagonal pattern: undirected when the pattern is symmetric, otherwise directed
    with an edge ``j -> i`` for every ``W[i, j] > 0``.

    Args:
        w: the ``(n, n)`` matrix.
        name: the topology's name.
        require_connected_graph: reject a matrix whose graph is not (strongly) connected;
            pass ``False`` for e.g. ``W = I`` (no communication).

    Raises:
        TopologyError: the matrix breaks a rule (the message names the row) or its graph is
            disconnected.

    Example:
        >>> import numpy as np
        >>> from_matrix(np.full((3, 3), 1 / 3), name="avg").describe()["weight_rule"]
        'custom'
    """
    if type(w).__module__.split(".")[0] == "torch":
        w = _torch_to_scipy(w)
    matrix = MixingMatrix.from_array(w, name=name)
    off = matrix.off_diagonal
    directed = bool((off != off.T).nnz != 0) if off.nnz else False
    adj = sp.csr_array(off.T)  # adj[j, i] != 0: j sends to i
    adj.data[:] = 1.0
    if require_connected_graph:
        require_connected(adj, who=name, directed=directed)
    n = matrix.n
    coo = adj.tocoo()
    return StaticTopology(
        graph_source=_graph_of(n, coo.row, coo.col, directed),
        matrix=matrix,
        name=name,
        weight_rule="custom",
        directed=directed,
    )
