"""Spectral gap against closed forms and numpy eigenvalues."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import decent.topology as T
from decent.topology import spectral_gap
from decent.topology._spectral import DENSE_LIMIT


def ring_mh_gap(n: int) -> float:
    k = np.arange(1, n)
    return float(1.0 - np.max(np.abs(1 / 3 + 2 / 3 * np.cos(2 * np.pi * k / n))))


@pytest.mark.parametrize("n", [3, 4, 5, 8, 17, 64, 255])
def test_ring_mh_closed_form(n: int) -> None:
    assert T.ring(n).spectral_gap == pytest.approx(ring_mh_gap(n), rel=1e-9, abs=1e-13)


@pytest.mark.parametrize("n", [1, 2, 7, 32])
def test_complete_mh_is_averaging(n: int) -> None:
    assert T.complete(n).spectral_gap == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("d", [1, 2, 3, 5, 7])
def test_hypercube_uniform_closed_form(d: int) -> None:
    # Eigenvalues of (I + A) / (d + 1) are (1 + d - 2j) / (d + 1); the second largest
    # modulus is (d - 1) / (d + 1), so the gap is 2 / (d + 1).
    assert T.hypercube(2**d, weights="uniform").spectral_gap == pytest.approx(2 / (d + 1))


def test_torus_closed_form() -> None:
    # Uniform weights on an r x c torus: (1 + 2cos(2 pi a / r) + 2cos(2 pi b / c)) / 5.
    r, c = 5, 7
    a, b = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
    lam = (1 + 2 * np.cos(2 * np.pi * a / r) + 2 * np.cos(2 * np.pi * b / c)) / 5
    slem = np.sort(np.abs(lam.ravel()))[-2]
    assert T.torus(35, weights="uniform").spectral_gap == pytest.approx(1 - slem, rel=1e-10)


def test_lazy_moves_eigenvalues() -> None:
    n, alpha = 10, 0.5
    k = np.arange(1, n)
    lam = alpha + (1 - alpha) * (1 / 3 + 2 / 3 * np.cos(2 * np.pi * k / n))
    assert T.ring(n, lazy=alpha).spectral_gap == pytest.approx(1 - np.abs(lam).max())


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(4, 40),
    seed=st.integers(0, 10**6),
    rule=st.sampled_from(["metropolis_hastings", "max_degree"]),
)
def test_random_graphs_match_numpy(n: int, seed: int, rule: str) -> None:
    g = nx.connected_watts_strogatz_graph(n, 2, 0.5, seed=seed) if n > 3 else nx.path_graph(n)
    w = T.from_networkx(g, weights=rule).weights(1).dense()  # type: ignore[arg-type]
    eig = np.linalg.eigvals(w)  # general solver: independent of eigvalsh
    slem = np.sort(np.abs(eig))[-2]
    assert spectral_gap(w) == pytest.approx(1 - slem, abs=1e-10)


def test_nonsymmetric_uses_consensus_norm() -> None:
    w = T.exponential(12, directed=True).weights(1).dense()
    j = np.full((12, 12), 1 / 12)
    expected = 1 - np.linalg.svd(w - j, compute_uv=False)[0]
    assert spectral_gap(w) == pytest.approx(expected, abs=1e-12)
    # One-peer W_1 = (I + S) / 2 with S the cyclic shift (a normal matrix): singular values
    # |1 + exp(2 pi i k / n)| / 2 = |cos(pi k / n)|, so the gap is 1 - cos(pi / n).
    for n in (4, 8, 16):
        gap = spectral_gap(T.OnePeerExponential(n).weights(1))
        assert gap == pytest.approx(1 - np.cos(np.pi / n), abs=1e-12)


def test_accepts_array_types() -> None:
    torch = pytest.importorskip("torch")
    m = T.ring(9).matrix
    ref = spectral_gap(m)
    assert spectral_gap(m.dense()) == ref
    assert spectral_gap(sp.csr_matrix(m.dense())) == ref
    assert spectral_gap(torch.tensor(m.dense())) == ref
    assert spectral_gap(torch.tensor(m.dense()).to_sparse()) == ref
    with pytest.raises(T.TopologyError, match="square"):
        spectral_gap(np.ones((2, 3)))


def test_disconnected_has_zero_gap() -> None:
    assert spectral_gap(np.eye(3)) == pytest.approx(0.0)


def test_sparse_path_matches_closed_form() -> None:
    n = DENSE_LIMIT + 452  # beyond the dense limit: ARPACK with shift-invert fallback
    assert T.ring(n).spectral_gap == pytest.approx(ring_mh_gap(n), rel=1e-6)
    assert T.hypercube(4096, weights="uniform").spectral_gap == pytest.approx(2 / 13, rel=1e-9)
    # exponential: compare against the dense solver on the same matrix
    w = T.exponential(2100).matrix
    dense = np.sort(np.abs(np.linalg.eigvalsh(w.dense())))[-2]
    assert spectral_gap(w) == pytest.approx(1 - dense, rel=1e-8)


def test_sparse_path_near_bipartite() -> None:
    # Even ring with small self weight: the bottom eigenvalue decides the gap.
    n, a = 2600, 0.49
    off = T.ring(n, weights="max_degree").matrix.off_diagonal * (3 * a)
    w = sp.csr_array(off + sp.diags_array(np.full(n, 1 - 2 * a)))
    k = np.arange(1, n)
    lam = (1 - 2 * a) + 2 * a * np.cos(2 * np.pi * k / n)
    assert spectral_gap(w) == pytest.approx(1 - np.abs(lam).max(), rel=1e-6)
