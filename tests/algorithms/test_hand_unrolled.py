"""One or two rounds of each method unrolled by hand on 3 nodes (numpy, float64)."""

from __future__ import annotations

import numpy as np
import torch

from decent.algorithms import DATSGD, DSGD, AnytimeSGD, GradientTracking, MinibatchSGD
from decent.comm import SimCommunicator
from decent.topology import from_matrix

W = np.array([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
X0 = np.array([[1.0, -2.0], [1.0, -2.0], [1.0, -2.0]])
G1 = np.array([[0.3, 1.0], [-0.7, 2.0], [1.1, 0.5]])
G2 = np.array([[-0.2, 0.4], [0.9, -1.3], [0.05, 0.6]])


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def test_dat_sgd_two_rounds_by_hand():
    eta = 0.1
    algo = DATSGD(lr=eta)
    comm = SimCommunicator(from_matrix(W))
    s = algo.init(_t(X0))
    s = algo.update(s, _t(G1), comm, 1)
    s = algo.update(s, _t(G2), comm, 2)
    # round 1: alpha_1 = 1, A_0 = 0, A_1 = 1
    w_half = X0 - eta * 1 * G1
    x_half = 0.0 * X0 + 1.0 * w_half
    w, x = W @ w_half, W @ x_half
    # round 2: alpha_2 = 2, A_1 = 1, A_2 = 3
    w_half = w - eta * 2 * G2
    x_half = (1 / 3) * x + (2 / 3) * w_half
    w, x = W @ w_half, W @ x_half
    np.testing.assert_allclose(s.w.numpy(), w, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.x.numpy(), x, rtol=0, atol=1e-15)
    assert s.weight_sum == 3.0
    assert comm.stats.bytes == 2 * 6 * (2 * 2 * 8)  # 2 rounds, 6 directed edges, 2d float64


def test_dat_sgd_weight_power_zero_is_uniform_averaging():
    eta = 0.1
    algo = DATSGD(lr=eta, weight_power=0.0)
    comm = SimCommunicator(from_matrix(np.eye(3), require_connected_graph=False))
    s = algo.update(algo.update(algo.init(_t(X0)), _t(G1), comm, 1), _t(G2), comm, 2)
    w1 = X0 - eta * G1
    w2 = w1 - eta * G2
    np.testing.assert_allclose(s.x.numpy(), (w1 + w2) / 2, rtol=0, atol=1e-15)


def test_dsgd_atc_and_cta_by_hand():
    eta = 0.2
    comm = SimCommunicator(from_matrix(W))
    x0 = X0 + np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    atc = DSGD(lr=eta, variant="atc")
    cta = DSGD(lr=eta, variant="cta")
    np.testing.assert_allclose(
        atc.update(atc.init(_t(x0)), _t(G1), comm, 1).x.numpy(), W @ (x0 - eta * G1), atol=1e-15
    )
    np.testing.assert_allclose(
        cta.update(cta.init(_t(x0)), _t(G1), comm, 1).x.numpy(), W @ x0 - eta * G1, atol=1e-15
    )


def test_gradient_tracking_two_rounds_by_hand():
    eta = 0.1
    comm = SimCommunicator(from_matrix(W))
    algo = GradientTracking(lr=eta)
    s = algo.update(algo.update(algo.init(_t(X0)), _t(G1), comm, 1), _t(G2), comm, 2)
    y1 = G1
    x2 = W @ (X0 - eta * y1)
    y2 = W @ y1 + G2 - G1
    x3 = W @ (x2 - eta * y2)
    np.testing.assert_allclose(s.x.numpy(), x3, rtol=0, atol=1e-15)
    np.testing.assert_allclose(s.z[:, 2:].numpy(), W @ y2, rtol=0, atol=1e-15)


def test_centralized_methods_by_hand():
    eta = 0.1
    comm = SimCommunicator(from_matrix(W))
    mb = MinibatchSGD(lr=eta)
    np.testing.assert_allclose(
        mb.update(mb.init(_t(X0)), _t(G1), comm, 1).x.numpy(), X0 - eta * G1.mean(0), atol=1e-15
    )
    at = AnytimeSGD(lr=eta)
    s = at.update(at.update(at.init(_t(X0)), _t(G1), comm, 1), _t(G2), comm, 2)
    w1 = X0 - eta * G1.mean(0)
    w2 = w1 - eta * 2 * G2.mean(0)
    np.testing.assert_allclose(s.x.numpy(), (1 * w1 + 2 * w2) / 3, rtol=0, atol=1e-15)
    # all-reduce accounting: 2 rounds of a ring all-reduce of d float64 among 3 nodes
    assert comm.stats.rounds == 1 + 2
