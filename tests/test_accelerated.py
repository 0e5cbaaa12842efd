"""Chebyshev-accelerated gossip: checked against an eigendecomposition of the dense ``W``.

The references never use the code under test: ``lambda2`` comes from ``eigvalsh`` of the
dense ``W`` and ``T_K`` from :func:`numpy.polynomial.chebyshev.chebval`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import chebyshev

from decent.comm import (
    ChebyshevCommunicator,
    DelayedCommunicator,
    SimCommunicator,
    accelerate,
    chebyshev_contraction,
    chebyshev_steps_for,
)
from decent.comm.base import Replicable, Topological, Transport
from decent.comm.sim import ReplicatedCommunicator
from decent.topology import (
    OnePeerExponential,
    RandomMatching,
    Topology,
    exponential,
    ring,
    torus,
)

STEPS = range(1, 7)
TOPOLOGIES = {"ring16": lambda: ring(16), "torus16": lambda: torus(16)}


def _t(k: int, z: np.ndarray | float) -> np.ndarray:
    """``T_k(z)``, the Chebyshev polynomial of the first kind, by numpy."""
    return np.asarray(chebyshev.chebval(z, [0.0] * k + [1.0]))


def _slem(w: np.ndarray) -> float:
    """Second largest eigenvalue modulus of a symmetric stochastic ``w``."""
    vals = np.linalg.eigvalsh(w)  # ascending; vals[-1] = 1
    return float(np.abs(vals[:-1]).max())


def _reference(w: np.ndarray, k: int, x: np.ndarray, rho: float | None = None) -> np.ndarray:
    """``V diag(T_k(lambda / rho) / T_k(1 / rho)) V^T x`` from ``eigh`` of the dense ``w``."""
    rho = _slem(w) if rho is None else rho
    vals, vecs = np.linalg.eigh(w)
    p = _t(k, vals / rho) / _t(k, 1.0 / rho)
    return np.asarray(vecs @ (p[:, None] * (vecs.T @ x)))


def _x(n: int, k: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64)


# -- the polynomial ----------------------------------------------------------------------


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("steps", STEPS)
def test_mix_is_the_chebyshev_polynomial_of_w(name: str, steps: int) -> None:
    topo = TOPOLOGIES[name]()
    w = topo.weights(1).dense()
    comm = ChebyshevCommunicator(SimCommunicator(topo), steps)
    assert comm.lambda2 == pytest.approx(_slem(w), abs=1e-12)
    x = _x(topo.num_nodes)
    got = comm.mix(x, t=1)
    assert got.dtype == torch.float64 and got.shape == x.shape
    np.testing.assert_allclose(got.numpy(), _reference(w, steps, x.numpy()), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "topo", [ring(16), torus(16), ring(200)], ids=["ring16-dense", "torus16", "ring200-sparse"]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_step_is_plain_mixing_bit_for_bit(topo: Topology, dtype: torch.dtype) -> None:
    x = _x(topo.num_nodes, k=5).to(dtype)
    got = ChebyshevCommunicator(SimCommunicator(topo), 1).mix(x, t=1)
    assert torch.equal(got, SimCommunicator(topo).mix(x, t=1))


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_the_average_is_preserved(name: str) -> None:
    topo = TOPOLOGIES[name]()
    x = _x(topo.num_nodes, k=4, seed=1) + 10.0
    for steps in range(1, 9):
        got = ChebyshevCommunicator(SimCommunicator(topo), steps).mix(x, t=1)
        torch.testing.assert_close(got.mean(dim=0), x.mean(dim=0), rtol=0, atol=1e-13)


def _ring_mode(n: int) -> np.ndarray:
    """Eigenvector ``cos(2 pi i / n)`` of a Metropolis-Hastings ring: ``lambda_2``."""
    return np.cos(2 * np.pi * np.arange(n) / n)


def test_the_slowest_modes_contract_by_one_over_t_k() -> None:
    # ring(16): the slowest mode is lambda_2 = 1/3 + 2/3 cos(2 pi / 16) > 0;
    # torus(4x4): both ends, +0.6 (cos(2 pi c / 4)) and -0.6 ((-1)^(r + c)), are slowest
    r, c = np.divmod(np.arange(16), 4)
    cases = [
        (ring(16), _ring_mode(16), 1),
        (torus(16), np.cos(2 * np.pi * c / 4), 1),
        (torus(16), (-1.0) ** (r + c), -1),
    ]
    for topo, v, sign in cases:
        rho = _slem(topo.weights(1).dense())
        v = v / np.linalg.norm(v)
        for steps in STEPS:
            comm = ChebyshevCommunicator(SimCommunicator(topo), steps)
            got = comm.mix(torch.as_tensor(v)[:, None], t=1).squeeze(1).numpy()
            factor = 1.0 / float(_t(steps, 1.0 / rho))
            # P_K(+-rho) = (+-1)^K / T_K(1 / rho): the mode is scaled, not rotated
            np.testing.assert_allclose(got, sign**steps * factor * v, rtol=0, atol=1e-13)
            assert np.linalg.norm(got) == pytest.approx(factor, rel=1e-12)
            assert comm.contraction == pytest.approx(factor, rel=1e-12)


# -- the closed forms --------------------------------------------------------------------


def test_contraction_closed_form_and_bound() -> None:
    for rho in (0.01, 0.3, 0.6, 0.9, 0.99, 0.999, 0.9999):
        gap = 1.0 - rho
        for steps in range(0, 40):
            exact = 1.0 / float(_t(steps, 1.0 / rho))
            got = chebyshev_contraction(rho, steps)
            assert got == pytest.approx(exact, rel=1e-10)
            assert got <= 2.0 * (1.0 - math.sqrt(gap)) ** steps + 1e-15
            assert got <= 1.0
    assert chebyshev_contraction(0.0, 1) == 0.0  # W = J: one step is exact consensus
    assert chebyshev_contraction(1.0, 7) == 1.0  # no gap, no contraction
    assert chebyshev_contraction(0.5, 0) == 1.0  # P_0 = 1


@pytest.mark.parametrize("gap", [1e-4, 3e-3, 0.05, 0.4, 0.9])
@pytest.mark.parametrize("target", [0.5, 1e-2, 1e-6, 1e-12])
def test_steps_for_is_the_smallest_sufficient_k(gap: float, target: float) -> None:
    rho = 1.0 - gap
    steps = chebyshev_steps_for(gap, target)
    assert steps >= 1
    assert 1.0 / float(_t(steps, 1.0 / rho)) <= target * (1 + 1e-9)
    if steps > 1:
        assert 1.0 / float(_t(steps - 1, 1.0 / rho)) > target * (1 - 1e-9)
    assert steps <= math.ceil(math.log(2.0 / target) / math.sqrt(gap))
    plain = math.ceil(math.log(target) / math.log(rho))
    assert steps <= plain


def test_steps_for_edges() -> None:
    assert chebyshev_steps_for(1.0, 1e-9) == 1
    with pytest.raises(ValueError, match=r"gap must be in \(0, 1\]"):
        chebyshev_steps_for(0.0, 0.1)
    with pytest.raises(ValueError, match=r"target must be in \(0, 1\)"):
        chebyshev_steps_for(0.1, 1.0)


# -- accounting and delegation -----------------------------------------------------------


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_stats_count_k_plain_mixes(name: str) -> None:
    topo = TOPOLOGIES[name]()
    x = _x(topo.num_nodes, k=7)
    plain = SimCommunicator(topo)
    plain.mix(x, t=1)
    one = plain.stats
    for steps in range(1, 6):
        comm = accelerate(SimCommunicator(topo), steps)
        comm.mix(x, t=1)
        assert comm.stats is comm.inner.stats
        assert comm.stats.messages == steps * one.messages
        assert comm.stats.bytes == steps * one.bytes
        assert comm.stats.rounds == steps * one.rounds
        np.testing.assert_array_equal(comm.stats.bytes_per_node, steps * one.bytes_per_node)
        before = comm.stats.bytes
        comm.all_reduce(x, accounted=False)
        assert comm.stats.bytes == before  # metric traffic is not counted
        torch.testing.assert_close(comm.all_reduce(x), x.mean(dim=0), rtol=0, atol=0)


def test_the_wrapper_declares_what_it_keeps_and_forwards_nothing_else() -> None:
    """No ``__getattr__``: the topology (a declared capability) and the transport members
    are the inner communicator's; one plain step's ``weights``/``kernel`` are not offered."""
    inner = SimCommunicator(ring(8), kernel="sparse")
    comm = accelerate(inner, 3)
    assert comm.num_nodes == 8 and comm.node_ids is inner.node_ids
    assert isinstance(comm, Topological) and comm.topology is inner.topology
    assert isinstance(comm, Replicable) and not isinstance(comm, Transport)
    assert comm.metrics() == {}
    comm.close()
    for plain_step in ("weights", "kernel", "apply"):
        assert not hasattr(comm, plain_step)
    assert isinstance(accelerate(ring(8), 2).inner, SimCommunicator)  # a topology is wrapped


# -- validation --------------------------------------------------------------------------


def test_a_directed_topology_is_rejected() -> None:
    topo = exponential(8, directed=True)
    for lambda2 in (None, 0.5):
        with pytest.raises(ValueError, match="symmetric doubly stochastic") as err:
            ChebyshevCommunicator(SimCommunicator(topo), 3, lambda2=lambda2)
        assert topo.name in str(err.value)


def test_a_time_varying_topology_needs_an_explicit_lambda2() -> None:
    topo = RandomMatching(ring(8), seed=0)
    with pytest.raises(ValueError, match=r"time-varying.*pass lambda2 explicitly"):
        ChebyshevCommunicator(SimCommunicator(topo), 2)
    comm = ChebyshevCommunicator(SimCommunicator(topo), 3, lambda2=0.9)
    x = _x(8)
    for t in (1, 2, 5):  # every call uses the W_t of its own round
        w = topo.weights(t).dense()
        np.testing.assert_allclose(
            comm.mix(x, t).numpy(), _reference(w, 3, x.numpy(), rho=0.9), rtol=0, atol=1e-12
        )
    # one-peer exponential graphs are directed at every round: rejected even with lambda2
    with pytest.raises(ValueError, match="symmetric doubly stochastic"):
        ChebyshevCommunicator(SimCommunicator(OnePeerExponential(8)), 2, lambda2=0.5)


def test_stale_mixing_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"exactly W_t @ x.*staleness=1"):
        ChebyshevCommunicator(DelayedCommunicator(ring(8), delay=1), 2)
    x = _x(8)
    undelayed = ChebyshevCommunicator(DelayedCommunicator(ring(8), delay=0), 2)
    assert torch.equal(undelayed.mix(x, 1), accelerate(ring(8), 2).mix(x, 1))


@pytest.mark.parametrize("steps", [0, -1, 1.5, True, "2"])
def test_bad_steps(steps: object) -> None:
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        ChebyshevCommunicator(SimCommunicator(ring(8)), steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("lambda2", [-0.1, 1.5, math.nan, True])
def test_bad_lambda2(lambda2: float) -> None:
    with pytest.raises(ValueError, match=r"lambda2 must be"):
        ChebyshevCommunicator(SimCommunicator(ring(8)), 2, lambda2=lambda2)


# -- consensus and composition -----------------------------------------------------------


def test_ring64_eight_accelerated_steps_beat_sixty_plain_ones() -> None:
    topo = ring(64)
    rho = 1.0 / 3.0 + 2.0 / 3.0 * math.cos(2 * math.pi / 64)  # lambda_2 of the MH ring
    assert _slem(topo.weights(1).dense()) == pytest.approx(rho, abs=1e-14)
    cheb = 1.0 / float(_t(8, 1.0 / rho))  # 0.824
    assert cheb < rho**60  # 8 accelerated steps do the work of 60 plain ones (0.9747 for 8)

    v = torch.as_tensor(_ring_mode(64) / np.linalg.norm(_ring_mode(64)))[:, None]
    plain = SimCommunicator(topo)
    y = v
    for _ in range(8):
        y = plain.mix(y, t=1)
    fast = accelerate(SimCommunicator(topo), 8)
    z = fast.mix(v, t=1)
    assert float(y.norm()) == pytest.approx(rho**8, rel=1e-12)
    assert float(z.norm()) == pytest.approx(cheb, rel=1e-12)
    assert fast.stats.messages == plain.stats.messages  # the same traffic

    # any start: the disagreement contracts at least by the closed-form factors
    x = _x(64, k=4, seed=3)
    dev = x - x.mean(dim=0)
    y = x
    for _ in range(8):
        y = plain.mix(y, t=1)
    z = fast.mix(x, t=1)
    assert float((y - y.mean(dim=0)).norm()) <= rho**8 * float(dev.norm()) * (1 + 1e-12)
    assert float((z - z.mean(dim=0)).norm()) <= cheb * float(dev.norm()) * (1 + 1e-12)


def test_nested_acceleration_is_the_composed_polynomial() -> None:
    topo = ring(16)
    w = topo.weights(1).dense()
    inner = ChebyshevCommunicator(SimCommunicator(topo), 2)
    outer = ChebyshevCommunicator(inner, 3)
    assert outer.lambda2 == inner.contraction
    x = _x(16)
    p2 = _reference(w, 2, np.eye(16))  # P_2(W), symmetric, SLEM = inner.contraction
    want = _reference(p2, 3, x.numpy(), rho=inner.contraction)
    np.testing.assert_allclose(outer.mix(x, 1).numpy(), want, rtol=0, atol=1e-12)
    assert outer.stats.rounds == 6


# -- replica batches ---------------------------------------------------------------------


@pytest.mark.parametrize("topo", [ring(16), ring(200)], ids=["dense", "sparse"])
@pytest.mark.parametrize("steps", [1, 4])
def test_replicas_equal_single_runs_bit_for_bit(topo: Topology, steps: int) -> None:
    n, replicas, k = topo.num_nodes, 3, 5
    single = accelerate(SimCommunicator(topo), steps)
    runs = [_x(n, k, seed=r) for r in range(replicas)]
    stacked = torch.stack(runs, dim=1).reshape(n * replicas, k)  # node-major: row i R + r
    for batch in (
        single.replicated(replicas),
        accelerate(ReplicatedCommunicator(SimCommunicator(topo), replicas), steps),
    ):
        assert isinstance(batch.inner, ReplicatedCommunicator)
        assert batch.lambda2 == single.lambda2
        out = batch.mix(stacked, t=1)
        for r, x in enumerate(runs):
            assert torch.equal(batch.inner.replica_rows(out, r), single.mix(x, t=1))
        plain = SimCommunicator(topo)
        plain.mix(runs[0], t=1)
        assert batch.stats.messages == steps * plain.stats.messages  # one replica's traffic


def test_replicated_needs_the_simulator() -> None:
    comm = ChebyshevCommunicator(DelayedCommunicator(ring(8), delay=0), 2)
    with pytest.raises(ValueError, match="replica batch runs in the simulator"):
        comm.replicated(2)


def test_train_runs_through_the_accelerated_communicator() -> None:
    from decent.algorithms import DSGD
    from decent.engine import train
    from decent.tasks import LeastSquares

    task = LeastSquares(num_nodes=8, dim=4, noise=0.1, seed=0)
    plain = train(DSGD(lr=0.05), task, SimCommunicator(ring(8)), rounds=6, eval_every=3)
    fast = train(DSGD(lr=0.05), task, accelerate(ring(8), 3), rounds=6, eval_every=3)
    assert fast.status == "finished"
    assert fast.final["comm/messages"] == 3 * plain.final["comm/messages"]
    assert fast.final["comm/bytes"] == 3 * plain.final["comm/bytes"]
    assert fast.final["consensus/dist2"] < plain.final["consensus/dist2"]
