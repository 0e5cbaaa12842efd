"""The simulator's delayed mixing and the survivors' re-weighting (single process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from decent.comm.delay import DelayedCommunicator
from decent.comm.gossip import surviving_metropolis
from decent.comm.sim import SimCommunicator
from decent.topology import erdos_renyi, ring


@pytest.mark.parametrize("delay", [1, 2])
def test_delayed_mix_is_hand_unrolled(delay: int) -> None:
    topo = ring(5)
    w = topo.weights(1).dense()
    comm = DelayedCommunicator(topo, delay=delay)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((5, 3)) for _ in range(5)]
    for c, x in enumerate(xs, start=1):
        stale = xs[max(c - 1 - delay, 0)]
        want = np.diag(np.diag(w)) @ x + (w - np.diag(np.diag(w))) @ stale
        got = comm.mix(torch.as_tensor(x), c).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    assert comm.stats.rounds == 5  # one gossip round per call, as the simulator counts


def test_delay_zero_is_the_simulator() -> None:
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.equal(
        DelayedCommunicator(ring(4), delay=0).mix(x, 1), SimCommunicator(ring(4)).mix(x, 1)
    )


def test_delay_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"delay must be an integer >= 0.*got -1"):
        DelayedCommunicator(ring(4), delay=-1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 12), seed=st.integers(0, 50), data=st.data())
def test_surviving_metropolis_is_doubly_stochastic_on_survivors(n: int, seed: int, data) -> None:  # type: ignore[no-untyped-def]
    try:
        w = erdos_renyi(n, 0.5, seed=seed).weights(1)
    except ValueError:  # disconnected draw
        assume(False)
    dead = data.draw(st.lists(st.integers(0, n - 1), max_size=n // 2, unique=True))
    out = surviving_metropolis(w, dead).dense()
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(out, out.T)
    assert (out >= 0).all()
    alive = np.setdiff1d(np.arange(n), dead)
    for d in dead:  # dead nodes are cut off
        assert out[d, d] == 1.0 and out[d, alive].sum() == 0 and out[alive, d].sum() == 0
    base = w.dense()
    # no new edges: only edges of W between survivors
    edges = (out != 0) & ~np.eye(n, dtype=bool)
    assert not (edges & (base == 0) & (base.T == 0)).any()
