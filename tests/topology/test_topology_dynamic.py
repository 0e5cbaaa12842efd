"""Time-varying topologies: pure in (seed, t), doubly stochastic, exact one-peer consensus."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from topology_reference import mh_reference

import decent.topology as T
from decent.topology import EdgeDropout, OnePeerExponential, RandomMatching, Topology

SETTINGS = settings(max_examples=20, deadline=None)


def _doubly_stochastic(w: np.ndarray) -> None:
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)


@pytest.mark.parametrize("n", [2, 4, 8, 64, 256])
def test_one_peer_product_is_exact_average(n: int) -> None:
    topo = OnePeerExponential(n)
    assert isinstance(topo, Topology)
    assert topo.period == int(np.log2(n)) and not topo.is_static
    j = np.full((n, n), 1.0 / n)
    for start in (1, 2, 5):
        prod = np.eye(n)
        for t in range(start, start + topo.period):
            w = topo.weights(t).dense()
            _doubly_stochastic(w)
            prod = w @ prod
        np.testing.assert_array_equal(prod, j)  # exact: entries are sums of powers of 1/2


def test_one_peer_pattern() -> None:
    topo = OnePeerExponential(16)
    for t in range(1, 10):
        k = (t - 1) % 4
        w = topo.weights(t).dense()
        ref = 0.5 * np.eye(16)
        ref[np.arange(16), (np.arange(16) + 2**k) % 16] = 0.5
        np.testing.assert_array_equal(w, ref)
    assert topo.weights(1) is topo.weights(5)  # period 4


def greedy_reference(edges: list[tuple[int, int]], order: np.ndarray) -> set[tuple[int, int]]:
    """Sequential greedy matching over the edges in the given order."""
    used: set[int] = set()
    out = set()
    for e in order:
        a, b = edges[int(e)]
        if a not in used and b not in used:
            used |= {a, b}
            out.add((a, b))
    return out


@SETTINGS
@given(n=st.integers(2, 25), p=st.floats(0.1, 1.0), seed=st.integers(0, 10**6))
def test_vectorized_greedy_matches_sequential(n: int, p: float, seed: int) -> None:
    g = nx.gnp_random_graph(n, p, seed=seed)
    edges = sorted((min(a, b), max(a, b)) for a, b in g.edges())
    if not edges:
        return
    u = np.array([e[0] for e in edges])
    v = np.array([e[1] for e in edges])
    rank = np.random.default_rng(seed).permutation(len(edges))
    from decent.topology._dynamic import greedy_matching

    chosen = greedy_matching(n, u, v, rank)
    got = {(int(a), int(b)) for a, b in zip(u[chosen], v[chosen], strict=True)}
    assert got == greedy_reference(edges, np.argsort(rank))


@SETTINGS
@given(seed=st.integers(0, 2**40), t=st.integers(1, 10**6), n=st.integers(3, 20))
def test_random_matching_properties(seed: int, t: int, n: int) -> None:
    base = T.ring(n) if n % 2 else T.complete(n)
    topo = RandomMatching(base, seed=seed)
    w = topo.weights(t).dense()
    _doubly_stochastic(w)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, RandomMatching(base, seed=seed).weights(t).dense())
    pairs = topo.matching(t)
    flat = pairs.ravel()
    assert len(set(flat.tolist())) == flat.size  # a matching
    adj = base.matrix.off_diagonal.toarray() > 0
    assert all(adj[a, b] for a, b in pairs)  # only base edges
    matched = set(flat.tolist())
    for a in range(n):  # maximal: no base edge joins two unmatched nodes
        for b in range(a + 1, n):
            assert not (adj[a, b] and a not in matched and b not in matched)


def test_random_matching_varies_with_t_and_seed() -> None:
    topo = RandomMatching(T.complete(16), seed=3)
    mats = [topo.weights(t).dense() for t in range(1, 6)]
    assert any(not np.array_equal(mats[0], m) for m in mats[1:])
    assert not np.array_equal(mats[0], RandomMatching(T.complete(16), seed=4).weights(1).dense())
    # order of calls does not matter (no hidden RNG state)
    np.testing.assert_array_equal(topo.weights(3).dense(), mats[2])
    assert topo.matching(1).shape == (8, 2)  # complete graph: perfect matching


@SETTINGS
@given(seed=st.integers(0, 2**40), t=st.integers(1, 10**6), p=st.just(0.0) | st.floats(1e-12, 1))
def test_edge_dropout_properties(seed: int, t: int, p: float) -> None:
    base = T.torus(12)
    topo = EdgeDropout(base, p, seed=seed)
    w = topo.weights(t).dense()
    _doubly_stochastic(w)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, EdgeDropout(base, p, seed=seed).weights(t).dense())
    # Metropolis-Hastings recomputed on the surviving graph, checked entry by entry.
    up = topo.alive(t)
    g = nx.Graph()
    g.add_nodes_from(range(12))
    u, v = topo._edges
    g.add_edges_from(zip(u[up].tolist(), v[up].tolist(), strict=True))
    np.testing.assert_allclose(w, mh_reference(g), atol=1e-14)


def test_edge_dropout_extremes_and_variation() -> None:
    base = T.ring(10)
    np.testing.assert_array_equal(
        EdgeDropout(base, 0.0, seed=1).weights(7).dense(), base.weights(1).dense()
    )
    np.testing.assert_array_equal(EdgeDropout(base, 1.0, seed=1).weights(7).dense(), np.eye(10))
    topo = EdgeDropout(base, 0.5, seed=1)
    mats = [topo.weights(t).dense() for t in range(1, 6)]
    assert any(not np.array_equal(mats[0], m) for m in mats[1:])
    assert topo.period is None and not topo.is_static


def test_networkx_base_accepted() -> None:
    topo = RandomMatching(nx.petersen_graph(), seed=0)
    assert topo.num_nodes == 10
    _doubly_stochastic(topo.weights(1).dense())
