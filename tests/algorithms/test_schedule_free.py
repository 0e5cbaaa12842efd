"""Decentralized schedule-free SGD against DAT-SGD, D-SGD, a hand-unrolled step and its
centralized counterpart, in float64 on the same draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decent.algorithms import (
    DATSGD,
    DSGD,
    AlgorithmError,
    AnytimeSGD,
    ScheduleFreeDSGD,
    ScheduleFreeSGD,
)
from decent.comm import SimCommunicator
from decent.engine import GradientOracle, train
from decent.tasks import LeastSquares, digits, mlp
from decent.topology import complete, from_matrix, ring

N, T = 6, 40


def _task(n: int = N) -> LeastSquares:
    return LeastSquares(num_nodes=n, dim=5, noise=0.3, heterogeneity=0.5, seed=3, batch_size=2)


def _run(algo, topo, task=None, rounds=T):
    res = train(
        algo,
        task or _task(topo.num_nodes),
        SimCommunicator(topo),
        rounds=rounds,
        seed=1,
        eval_every=rounds,
        per_node_eval=False,
    )
    assert res.status == "finished"
    return res


@pytest.mark.parametrize("weight_power", [1.0, 0.5])
def test_beta_one_is_dat_sgd(weight_power):
    a = _run(ScheduleFreeDSGD(lr=0.01, beta=1.0, weight_power=weight_power), ring(N))
    b = _run(DATSGD(lr=0.01, weight_power=weight_power), ring(N))
    torch.testing.assert_close(a.state.z, b.state.z, rtol=0, atol=1e-12)
    assert a.state.weight_sum == b.state.weight_sum
    torch.testing.assert_close(a.output, b.output, rtol=0, atol=1e-12)


def test_beta_zero_iterate_is_dsgd():
    """Gradients at z: z follows D-SGD (ATC) and x is z's running average (weights 1)."""
    sf = ScheduleFreeDSGD(lr=0.05, beta=0.0, weight_power=0.0)
    task, comm = _task(), SimCommunicator(ring(N))
    a = _run(sf, ring(N), task=task)
    b = _run(DSGD(lr=0.05), ring(N), task=task)
    torch.testing.assert_close(a.state.w, b.state.x, rtol=0, atol=1e-12)
    # x: the gossiped running average of the z_{t+1/2}, recomputed from D-SGD's run
    oracle = GradientOracle(task)
    dsgd = DSGD(lr=0.05)
    state = dsgd.init(task.init_params(1).expand(N, -1).clone())
    x = torch.zeros_like(state.x)
    for t in range(1, T + 1):
        grads, _ = oracle(state.x, task.sample(comm.node_ids, t, 1))
        half = state.x - 0.05 * grads
        x = comm.mix((t - 1) / t * x + half / t, t)
        state = dsgd.update(state, grads, comm, t)
    torch.testing.assert_close(a.output, x, rtol=0, atol=1e-12)


def test_beta_zero_with_anytime_weights_is_dsgd_with_a_growing_step():
    a = _run(ScheduleFreeDSGD(lr=0.002, beta=0.0, weight_power=1.0), ring(N))
    b = _run(DSGD(lr=lambda t: 0.002 * t), ring(N))
    torch.testing.assert_close(a.state.w, b.state.x, rtol=0, atol=1e-12)


def test_complete_graph_equals_centralized_schedule_free():
    for beta in (0.0, 0.3, 0.9, 1.0):
        a = _run(ScheduleFreeDSGD(lr=0.01, beta=beta), complete(N))
        b = _run(ScheduleFreeSGD(lr=0.01, beta=beta), complete(N))
        torch.testing.assert_close(a.state.z, b.state.z, rtol=0, atol=1e-12)


def test_centralized_beta_one_is_anytime_sgd():
    a = _run(ScheduleFreeSGD(lr=0.01, beta=1.0), ring(N))
    b = _run(AnytimeSGD(lr=0.01), ring(N))
    torch.testing.assert_close(a.state.z, b.state.z, rtol=0, atol=1e-12)


W = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
Z0 = np.array([[1.0, -2.0], [1.0, -2.0], [1.0, -2.0]])


def _grad(y):
    """A fixed nonlinear gradient field, different per node: g_i(y) = (i + 1) y^3 - c_i."""
    c = np.array([[0.3, 1.0], [-0.7, 2.0], [1.1, 0.5]])
    return (np.arange(1, 4)[:, None]) * y**3 - c


def test_two_rounds_on_a_ring_by_hand():
    eta, beta = 0.05, 0.7
    algo = ScheduleFreeDSGD(lr=eta, beta=beta)
    comm = SimCommunicator(from_matrix(W))
    s = algo.init(torch.tensor(Z0))
    for t in (1, 2):
        y = algo.query(s, t)
        s = algo.update(s, torch.tensor(_grad(y.numpy())), comm, t)
    # round 1: alpha_1 = 1, A_1 = 1; y_1 = z_1 = x_1
    z, x = Z0, Z0
    y = (1 - beta) * z + beta * x  # type: ignore[assignment]
    z_half = z - eta * 1 * _grad(y)
    x_half = 0.0 * x + 1.0 * z_half
    z, x = W @ z_half, W @ x_half
    # round 2: alpha_2 = 2, A_2 = 3 (after round 1 z = x; from now on they differ)
    y = (1 - beta) * z + beta * x
    z_half = z - eta * 2 * _grad(y)
    x_half = (1 / 3) * x + (2 / 3) * z_half
    z, x = W @ z_half, W @ x_half
    np.testing.assert_allclose(s.w.numpy(), z, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.x.numpy(), x, rtol=0, atol=1e-15)
    # round 3's query point is strictly between z and x
    y3 = (1 - beta) * z + beta * x
    np.testing.assert_allclose(algo.query(s, 3).numpy(), y3, rtol=0, atol=1e-15)
    assert not np.allclose(z, x)
    assert s.weight_sum == 3.0
    assert comm.stats.bytes == 2 * 6 * (2 * 2 * 8)  # 2 rounds, 6 directed edges, 2d float64


def test_neural_network_replicas_run_and_match_dat_sgd_at_beta_one():
    data = digits(seed=0)
    task = mlp(data, 8, "dirichlet", hidden=(8,), batch_size=4, seed=0)
    a = _run(ScheduleFreeDSGD(lr=0.3 / 20, beta=1.0), ring(8), task=task, rounds=20)
    b = _run(DATSGD(lr=0.3 / 20), ring(8), task=task, rounds=20)
    torch.testing.assert_close(a.output, b.output, rtol=0, atol=1e-12)


def test_beta_outside_the_unit_interval_names_the_field():
    with pytest.raises(AlgorithmError, match=r"schedule_free_dsgd.beta must be .* <= 1.0, got 1.5"):
        ScheduleFreeDSGD(lr=0.1, beta=1.5)
