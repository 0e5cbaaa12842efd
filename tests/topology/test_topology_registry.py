"""make(kind, n, **kwargs) builds every kind and explains unknown ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import decent.topology as T
from decent.topology import TOPOLOGY_KINDS, Topology, TopologyError, make

KWARGS: dict[str, dict[str, Any]] = {
    "erdos_renyi": {"p": 0.8, "seed": 0},
    "random_regular": {"k": 3, "seed": 0},
    "watts_strogatz": {"k": 4, "p": 0.2, "seed": 0},
    "random_matching": {"seed": 0},
    "edge_dropout": {"p": 0.3, "seed": 0},
}


@pytest.mark.parametrize("kind", list(TOPOLOGY_KINDS))
def test_make_every_kind(kind: str) -> None:
    n = 16
    topo = make(kind, n, **KWARGS.get(kind, {}))
    assert isinstance(topo, Topology)
    assert topo.num_nodes == n
    w = topo.weights(3).dense()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert (w >= 0).all()


def test_make_matches_direct_calls() -> None:
    a = make("torus", 20, rows=4, weights="max_degree").weights(1).dense()
    np.testing.assert_array_equal(a, T.torus(20, rows=4, weights="max_degree").weights(1).dense())
    b = make(
        "edge_dropout", 12, p=0.5, seed=3, base="random_regular", base_kwargs={"k": 3, "seed": 1}
    )
    ref = T.EdgeDropout(T.random_regular(12, 3, seed=1), 0.5, seed=3)
    np.testing.assert_array_equal(b.weights(4).dense(), ref.weights(4).dense())


def test_unknown_kind_lists_allowed_and_closest() -> None:
    with pytest.raises(
        TopologyError, match=r"unknown topology kind 'toruss'.*ring, torus.*did you mean 'torus'"
    ):
        make("toruss", 8)


def test_bad_kwargs_are_explained() -> None:
    with pytest.raises(TopologyError, match=r"make\('erdos_renyi', 8\).*seed.*accepts: p, seed"):
        make("erdos_renyi", 8, p=0.5)
    with pytest.raises(TopologyError, match=r"unexpected keyword argument 'colz'"):
        make("torus", 9, colz=3)
