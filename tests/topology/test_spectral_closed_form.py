"""Rings and tori get their spectral gap in closed form (the DFT of W's first row), equal
to a dense eigendecomposition; other graphs are not mistaken for circulant ones."""

from __future__ import annotations

import numpy as np
import pytest

from decent.topology import erdos_renyi, ring, spectral_gap, torus
from decent.topology._spectral import _as_csr, _circulant_slem


def _dense_gap(w: np.ndarray) -> float:
    mods = np.sort(np.abs(np.linalg.eigvalsh(w)))
    return float(1.0 - mods[-2])


@pytest.mark.parametrize(
    "topo",
    [ring(7), ring(2100), ring(64, weights="uniform"), torus(30 * 70), torus(16), torus(6 * 9)],
    ids=lambda t: t.name,
)
def test_the_closed_form_equals_eigvalsh(topo) -> None:
    csr = _as_csr(topo.matrix)
    slem = _circulant_slem(csr)
    assert slem is not None
    assert 1.0 - slem == pytest.approx(_dense_gap(csr.toarray()), abs=1e-12)


def test_a_ring_of_ten_thousand_matches_the_cosine_formula() -> None:
    n = 10_000  # Metropolis weights: 1/3 each; lambda_k = 1/3 + 2/3 cos(2 pi k / n)
    assert spectral_gap(ring(n).matrix) == pytest.approx(
        (2.0 / 3.0) * (1.0 - np.cos(2.0 * np.pi / n)), rel=1e-9
    )


def test_a_random_graph_is_not_taken_for_a_circulant() -> None:
    topo = erdos_renyi(40, 0.3, seed=1)
    assert _circulant_slem(_as_csr(topo.matrix)) is None
