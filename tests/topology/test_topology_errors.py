"""Bad input raises TopologyError (a ValueError) with a message that names the fix."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import decent.topology as T
from decent.topology import TopologyError


def test_is_value_error() -> None:
    assert issubclass(TopologyError, ValueError)


# Cases marked type: ignore pass ill-typed values on purpose: the runtime checks are under test.
@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: T.ring(2), r"ring needs num_nodes >= 3, got 2; use complete\(2\)"),
        (lambda: T.ring(0), r"ring\.n must be an integer >= 1, <= 1000000, got 0"),
        (lambda: T.ring(2.5), r"ring\.n must be an integer >= 1, .*got 2.5"),  # type: ignore[arg-type]
        (lambda: T.complete(0), r"complete\.n must be an integer >= 1, .*got 0"),
        (lambda: T.exponential(1), r"exponential needs num_nodes >= 2, got 1; use complete\(1\)"),
        (lambda: T.torus(12, rows=5, cols=3), r"rows \* cols == num_nodes.*rows=5, cols=3"),
        (lambda: T.torus(12, rows=5), r"rows=5 does not divide num_nodes=12"),
        (lambda: T.torus(7), r"no factorization rows \* cols = 7.*ring\(7\)"),
        (lambda: T.torus(8, rows=2, cols=4), r"torus needs rows, cols >= 3, got rows=2, cols=4"),
        (lambda: T.hypercube(12), r"power of 2, got 12; use 8 or 16 nodes"),
        (lambda: T.OnePeerExponential(12), r"one_peer_exponential needs .* power of 2.*8 or 16"),
        (
            lambda: T.erdos_renyi(5, 1.5, seed=0),
            r"erdos_renyi\.p must be a finite number >= 0.0, <= 1.0, got 1.5",
        ),
        (lambda: T.erdos_renyi(5, -0.1, seed=0), r"erdos_renyi\.p must be a finite number >= 0.0"),
        (
            lambda: T.erdos_renyi(5, 0.5, seed=-1),
            r"erdos_renyi\.seed must be an integer >= 0, got -1",
        ),
        (lambda: T.random_regular(5, 3, seed=0), r"n \* k even.*n=5, k=3"),
        (lambda: T.random_regular(4, 4, seed=0), r"k < num_nodes, got k=4, n=4"),
        (lambda: T.random_regular(4, 3, seed=0) and T.random_regular(4, 5, seed=0), r"k=5"),
        (lambda: T.watts_strogatz(10, 3, 0.1, seed=0), r"even k"),
        (lambda: T.star(1), r"star needs num_nodes >= 2, got 1"),
        (
            lambda: T.ring(5, weights="metropolis"),  # type: ignore[arg-type]
            r"unknown weight rule.*allowed: max_degree, metropolis_hastings, uniform.*did you mean 'metropolis_hastings'",
        ),
        (lambda: T.ring(5, lazy=1.0), r"ring\.lazy must be a finite number >= 0.0, < 1.0, got 1.0"),
        (lambda: T.star(5, weights="uniform"), r"regular graph.*degrees from 1 .* to 4"),
        (lambda: T.from_edges(3, [(0, 3)]), r"node ids must lie in \[0, 3\), got edge \(0, 3\)"),
        (lambda: T.from_edges(3, [(0, 1, 2)]), r"\(E, 2\) array"),  # type: ignore[list-item]
        (
            lambda: T.from_networkx(nx.DiGraph([(0, 1), (1, 2), (2, 0)])),
            r"metropolis_hastings weights need an undirected graph",
        ),
        (
            lambda: T.from_networkx(nx.DiGraph([(0, 1), (1, 2)]), weights="max_degree"),
            r"not strongly connected: 3 components",
        ),
        (lambda: T.from_networkx([(0, 1)]), r"needs a networkx Graph"),
        (lambda: T.from_matrix(np.array([[0.5, 0.4], [0.5, 0.5]])), r"row 0 sums to 0.9"),
        (lambda: T.from_matrix(np.eye(2)), r"disconnected: 2 components"),
        (lambda: T.ring(5).weights(0), r"round t must be >= 1"),
        (lambda: T.OnePeerExponential(8).weights(0), r"round t must be >= 1.*got 0"),
        (lambda: T.RandomMatching(T.ring(5), seed=0).weights(-2), r"round t must be >= 1"),
        (
            lambda: T.EdgeDropout(T.ring(5), 0.2, seed=0).weights(1.5),  # type: ignore[arg-type]
            r"round t must be an integer",
        ),
        (
            lambda: T.EdgeDropout(T.ring(5), 2.0, seed=0),
            r"edge_dropout\.p must be a finite number >= 0.0, <= 1.0, got 2.0",
        ),
        (lambda: T.RandomMatching(T.exponential(8, directed=True), seed=0), r"undirected base"),
    ],
)
def test_error_messages(call, pattern: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TopologyError, match=pattern):
        call()


def test_disconnected_names_components() -> None:
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7)]
    with pytest.raises(
        TopologyError,
        match=r"graph is disconnected: 2 components, sizes \[5, 3\]; component 2 = \[5, 6, 7\]",
    ):
        T.from_edges(8, edges)
    many = [(i, i + 1) for i in range(0, 40, 2)]
    with pytest.raises(TopologyError, match=r"20 components, sizes \[2, 2, .*, \.\.\.\]"):
        T.from_edges(40, many)


def test_erdos_renyi_disconnected_draw() -> None:
    with pytest.raises(
        TopologyError, match=r"erdos_renyi\(30, p=0.01, seed=0\): graph is disconnected"
    ):
        T.erdos_renyi(30, 0.01, seed=0)
