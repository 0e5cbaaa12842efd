"""Weight rules: turn a graph into a mixing matrix ``W``.

Graph, weights and placement are three separate things: a generator says who is connected,
a *weight rule* (this module) turns that connectivity into ``W``. A rule is any callable
``rule(graph) -> MixingMatrix``; the built-in ones are registered in :data:`WEIGHT_RULES`.

A rule accepts a ``networkx`` graph whose nodes are ``0..n-1`` or a sparse/dense adjacency
matrix ``A`` (``A[u, v] != 0`` means an edge ``u -> v``; a symmetric ``A`` is an undirected
graph). Convention: in a directed graph an edge ``u -> v`` means ``u`` *sends* to ``v``, so
``W[v, u] > 0``; in an undirected graph ``W[i, j] > 0`` exactly when ``{i, j}`` is an edge.
Self-loops in the input are ignored: the diagonal of ``W`` is set by the rule.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Annotated, Literal, TypeAlias

import annotated_types as at
import networkx as nx
import numpy as np
import scipy.sparse as sp

from decent._params import SEED, Doc, checked_args
from decent.topology._matrix import MixingMatrix, TopologyError

GraphLike: TypeAlias = "nx.Graph | nx.DiGraph | sp.sparray | sp.spmatrix | np.ndarray"
"""A networkx graph on nodes ``0..n-1`` or an ``(n, n)`` adjacency matrix."""

WeightRule: TypeAlias = Callable[[GraphLike], MixingMatrix]
"""A callable ``rule(graph) -> MixingMatrix``."""


def _adjacency(graph: GraphLike) -> tuple[sp.csr_array, bool]:
    """Return ``(A, directed)``: ``A`` a 0/1 CSR adjacency without self-loops."""
    if isinstance(graph, nx.Graph):
        n = graph.number_of_nodes()
        if set(graph.nodes) != set(range(n)):
            raise TopologyError(
                "a weight rule needs graph nodes labelled 0..n-1, got nodes such as "
                f"{list(graph.nodes)[:5]}; use from_networkx(G), which relabels them"
            )
        directed = graph.is_directed()
        edges = np.asarray(list(graph.edges()), dtype=np.int64).reshape(-1, 2)
        u, v = edges[:, 0], edges[:, 1]
        if not directed:
            u, v = np.concatenate([u, v]), np.concatenate([v, u])
    else:
        coo = sp.coo_array(graph)
        if coo.shape[0] != coo.shape[1]:
            raise TopologyError(f"an adjacency matrix must be square, got shape {coo.shape}")
        n = int(coo.shape[0])
        nonzero = coo.data != 0
        u, v = coo.row[nonzero].astype(np.int64), coo.col[nonzero].astype(np.int64)
        directed = None
    off = u != v
    u, v = u[off], v[off]
    adj = sp.csr_array((np.ones(u.size), (u, v)), shape=(n, n))
    adj.sum_duplicates()
    adj.data[:] = 1.0
    adj.sort_indices()
    if directed is None:
        directed = bool((adj != adj.T).nnz != 0)
    return adj, bool(directed)


def _degree_of_receivers(graph: GraphLike) -> tuple[sp.csr_array, np.ndarray, bool]:
    """Return ``(P, d, directed)``: ``P`` the 0/1 pattern of off-diagonal ``W`` and ``d``
    its row counts."""
    adj, directed = _adjacency(graph)
    pattern = sp.csr_array(adj.T) if directed else adj
    pattern.sort_indices()
    return pattern, np.diff(pattern.indptr).astype(np.int64), directed


def _with_diagonal(off: sp.csr_array, name: str) -> MixingMatrix:
    """Add ``w_ii = 1 - sum_{j != i} w_ij`` to the off-diagonal matrix and wrap it."""
    n = off.shape[0]
    diag = 1.0 - np.asarray(off.sum(axis=1)).ravel()
    w = sp.csr_array(off + sp.diags_array(diag, shape=(n, n)).tocsr())
    return MixingMatrix.from_array(w, name=name)


def metropolis_hastings(graph: GraphLike) -> MixingMatrix:
    """Build Metropolis-Hastings weights on an undirected graph.

    .. math::
        w_{ij} = \\frac{1}{1 + \\max(d_i, d_j)} \\quad (\\{i, j\\} \\in E), \\qquad
        w_{ii} = 1 - \\sum_{j \\ne i} w_{ij},

    with ``d_i`` the degree of node ``i``. The result is symmetric and doubly stochastic
    for every undirected graph, and ``w_ii > 0``.

    Reference: Xiao, Boyd, Kim, "Distributed average consensus with least-mean-square
    deviation" (2007).

    Raises:
        TopologyError: the graph is directed.

    Example:
        >>> import networkx as nx
        >>> metropolis_hastings(nx.path_graph(3)).dense().round(3).tolist()
        [[0.667, 0.333, 0.0], [0.333, 0.333, 0.333], [0.0, 0.333, 0.667]]
    """
    adj, directed = _adjacency(graph)
    if directed:
        raise TopologyError(
            "metropolis_hastings weights need an undirected graph (symmetric adjacency); "
            "use weights='uniform' or 'max_degree' on a directed graph"
        )
    deg = np.diff(adj.indptr).astype(np.float64)
    coo = adj.tocoo()
    data = 1.0 / (1.0 + np.maximum(deg[coo.row], deg[coo.col]))
    off = sp.csr_array((data, (coo.row, coo.col)), shape=adj.shape)
    return _with_diagonal(off, "metropolis_hastings")


def max_degree(graph: GraphLike) -> MixingMatrix:
    """Build max-degree weights: every edge gets the same weight.

    .. math::
        w_{ij} = \\frac{1}{1 + d_{\\max}} \\quad (j \\to i), \\qquad
        w_{ii} = 1 - \\frac{d_i}{1 + d_{\\max}},

    with ``d_i`` the number of nodes ``i`` receives from. Symmetric and doubly stochastic
    on an undirected graph; on a directed graph only row-stochastic in general.

    Example:
        >>> import networkx as nx
        >>> max_degree(nx.path_graph(3)).dense().round(3).tolist()
        [[0.667, 0.333, 0.0], [0.333, 0.333, 0.333], [0.0, 0.333, 0.667]]
    """
    pattern, deg, _ = _degree_of_receivers(graph)
    d_max = int(deg.max()) if deg.size else 0
    off = pattern * (1.0 / (1.0 + d_max))
    return _with_diagonal(sp.csr_array(off), "max_degree")


def uniform(graph: GraphLike) -> MixingMatrix:
    """Build uniform weights on a regular graph: ``W = (I + A) / (d + 1)``.

    .. math::
        w_{ij} = \\frac{1}{d + 1} \\quad (j \\to i \\text{ or } j = i),

    with ``d`` the common degree (in-degree for a directed graph). Symmetric on an
    undirected graph; doubly stochastic whenever in- and out-degrees all equal ``d``.

    Raises:
        TopologyError: the graph is not regular; the message names the degree spread.

    Example:
        >>> import networkx as nx
        >>> uniform(nx.cycle_graph(4)).dense()[0].round(4).tolist()
        [0.3333, 0.3333, 0.0, 0.3333]
    """
    pattern, deg, directed = _degree_of_receivers(graph)
    if deg.size and deg.min() != deg.max():
        which = "in-degrees" if directed else "degrees"
        raise TopologyError(
            f"uniform weights need a regular graph (every node the same degree), got {which} "
            f"from {int(deg.min())} (node {int(deg.argmin())}) to {int(deg.max())} "
            f"(node {int(deg.argmax())}); use weights='metropolis_hastings' or 'max_degree'"
        )
    d = int(deg[0]) if deg.size else 0
    off = pattern * (1.0 / (d + 1.0))
    return _with_diagonal(sp.csr_array(off), "uniform")


@checked_args("lazy", TopologyError)
def lazy(
    matrix: MixingMatrix, alpha: Annotated[float, at.Interval(ge=0.0, lt=1.0)]
) -> MixingMatrix:
    """Make a mixing matrix lazy: keep a fraction ``alpha`` of the own value.

    .. math::
        W_{\\text{lazy}} = \\alpha I + (1 - \\alpha) W.

    Laziness moves every eigenvalue ``lambda`` to ``alpha + (1 - alpha) lambda``, so
    ``alpha >= 1/2`` makes ``W`` positive semidefinite (what some analyses assume).

    Returns:
        The lazy mixing matrix, named ``lazy(alpha)*<name>``.

    Raises:
        TopologyError: ``alpha`` is outside ``[0, 1)`` (``1`` would stop all communication).

    Example:
        >>> import numpy as np
        >>> w = MixingMatrix.from_array(np.array([[0.0, 1.0], [1.0, 0.0]]))
        >>> lazy(w, 0.5).dense().tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    a = float(alpha)
    n = matrix.n
    w = a * sp.eye_array(n, format="csr") + (1.0 - a) * matrix.csr
    return MixingMatrix.from_array(sp.csr_array(w), name=f"lazy({a:g})*{matrix.name}")


WEIGHT_RULES: dict[str, WeightRule] = {
    "metropolis_hastings": metropolis_hastings,
    "max_degree": max_degree,
    "uniform": uniform,
}
"""Built-in weight rules by name."""

WeightName = Literal["metropolis_hastings", "max_degree", "uniform"]
Weights: TypeAlias = Annotated[
    WeightName | WeightRule, Doc("Rule turning the graph into the mixing matrix W.")
]
"""A generator's ``weights`` argument: a rule of :data:`WEIGHT_RULES` by name, or a callable."""
Lazy: TypeAlias = Annotated[
    float | None,
    at.Interval(ge=0.0, lt=1.0),
    Doc("Self weight a: W <- a I + (1 - a) W (None: off)."),
]
"""A generator's ``lazy`` argument."""
GraphSeed: TypeAlias = Annotated[int, SEED, Doc("Seed of the graph.")]
"""A random generator's ``seed``."""


def resolve_weight_rule(weights: str | WeightRule) -> tuple[WeightRule, str]:
    """Return ``(rule, name)`` for a rule name from :data:`WEIGHT_RULES` or a callable.

    Raises:
        TopologyError: an unknown name; the message lists the allowed names.
    """
    if isinstance(weights, str):
        rule = WEIGHT_RULES.get(weights)
        if rule is None:
            allowed = ", ".join(sorted(WEIGHT_RULES))
            close = difflib.get_close_matches(weights, list(WEIGHT_RULES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TopologyError(
                f"unknown weight rule weights={weights!r}; allowed: {allowed}{hint}"
            )
        return rule, weights
    if callable(weights):
        return weights, getattr(weights, "__name__", type(weights).__name__)
    raise TopologyError(
        f"weights must be a rule name ({', '.join(sorted(WEIGHT_RULES))}) or a callable "
        f"graph -> MixingMatrix, got {weights!r}"
    )
