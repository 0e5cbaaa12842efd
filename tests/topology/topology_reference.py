"""Independent, loop-based reference implementations used by the topology tests."""

from __future__ import annotations

import networkx as nx
import numpy as np


def mh_reference(graph: nx.Graph) -> np.ndarray:
    """Metropolis-Hastings weights written out entry by entry from networkx degrees."""
    n = graph.number_of_nodes()
    w = np.zeros((n, n))
    for i, j in graph.edges():
        if i == j:
            continue
        w[i, j] = w[j, i] = 1.0 / (1.0 + max(graph.degree[i], graph.degree[j]))
    for i in range(n):
        w[i, i] = 1.0 - w[i].sum()
    return w


def pattern_from_graph(graph: nx.Graph) -> np.ndarray:
    """Boolean ``(n, n)``: ``True`` on the diagonal and where ``W[i, j]`` must be positive."""
    n = graph.number_of_nodes()
    p = np.eye(n, dtype=bool)
    for u, v in graph.edges():
        if graph.is_directed():
            p[v, u] = True  # u sends to v: v receives from u
        else:
            p[u, v] = p[v, u] = True
    return p
