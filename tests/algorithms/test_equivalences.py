"""Algorithms against independent references, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decent.algorithms import (
    DATSGD,
    DSGD,
    AnytimeSGD,
    GradientTracking,
    LocalSGD,
    MinibatchSGD,
)
from decent.comm import SimCommunicator
from decent.engine import GradientOracle, train
from decent.tasks import LeastSquares
from decent.topology import complete, from_matrix, ring, torus

N = 6
T = 40


def _task(heterogeneity: float = 0.5, n: int = N) -> LeastSquares:
    return LeastSquares(num_nodes=n, dim=5, noise=0.3, heterogeneity=heterogeneity, seed=3)


def _run(algo, topo, task=None, rounds=T, seed=1):
    task = task or _task(n=topo.num_nodes)
    res = train(
        algo,
        task,
        SimCommunicator(topo),
        rounds=rounds,
        seed=seed,
        eval_every=rounds,
        per_node_eval=False,
    )
    assert res.status == "finished"
    return res.output


def test_dsgd_atc_on_complete_graph_equals_minibatch_sgd():
    a = _run(DSGD(lr=0.1, variant="atc"), complete(N))
    b = _run(MinibatchSGD(lr=0.1), complete(N))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_dat_sgd_on_complete_graph_equals_anytime_sgd():
    a = _run(DATSGD(lr=0.01), complete(N))
    b = _run(AnytimeSGD(lr=0.01), complete(N))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_local_sgd_with_one_step_equals_minibatch_sgd():
    a = _run(LocalSGD(lr=0.1, local_steps=1), ring(N))
    b = _run(MinibatchSGD(lr=0.1), ring(N))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_local_dsgd_on_complete_graph_equals_local_sgd():
    a = _run(DSGD(lr=0.1, local_steps=4), complete(N))
    b = _run(LocalSGD(lr=0.1, local_steps=4), complete(N))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "algo",
    [
        DSGD(lr=0.1),
        DSGD(lr=0.1, variant="cta"),
        DATSGD(lr=0.01),
        GradientTracking(lr=0.1),
        DSGD(lr=0.1, local_steps=3),
        DATSGD(lr=0.01, local_steps=3),
    ],
    ids=["dsgd-atc", "dsgd-cta", "dat_sgd", "gt", "dsgd-local3", "dat_sgd-local3"],
)
def test_identity_mixing_equals_independent_runs(algo):
    """W = I: every node runs the single-node method on its own data."""
    task = _task()
    joint = _run(algo, from_matrix(np.eye(N), require_connected_graph=False), task=task)
    oracle = GradientOracle(task)
    solo_comm = SimCommunicator(from_matrix(np.eye(1), require_connected_graph=False))
    x0 = task.init_params(1)
    for i in range(N):
        state = algo.init(x0[None, :].clone())
        node = torch.tensor([i])
        for t in range(1, T + 1):
            grads, _ = oracle(algo.query(state, t), task.sample(node, t, 1))
            state = algo.update(state, grads, solo_comm, t)
        torch.testing.assert_close(joint[i], algo.output(state)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "algo",
    [
        DSGD(lr=0.0),
        DSGD(lr=0.0, variant="cta"),
        DATSGD(lr=0.0),
        GradientTracking(lr=0.0),
        MinibatchSGD(lr=0.0),
        AnytimeSGD(lr=0.0),
        LocalSGD(lr=0.0, local_steps=2),
    ],
)
def test_zero_learning_rate_changes_nothing(algo):
    task = _task()
    out = _run(algo, torus(9, rows=3, cols=3), task=LeastSquares(num_nodes=9, dim=5, seed=3))
    x0 = task.init_params(1)
    torch.testing.assert_close(out, x0.expand_as(out), rtol=0, atol=0)


class _PermutedTask:
    """Node ``perm[i]`` of this task gets node ``i``'s data."""

    def __init__(self, task, perm):
        self._task = task
        self._inv = torch.as_tensor(np.argsort(perm))
        for name in ("name", "num_nodes", "dim", "dtype", "optimum"):
            setattr(self, name, getattr(task, name))

    def init_params(self, seed):
        return self._task.init_params(seed)

    def loss(self, params, batch):
        return self._task.loss(params, batch)

    def sample(self, nodes, t, seed):
        return self._task.sample(self._inv[nodes], t, seed)

    def evaluate(self, params):
        return self._task.evaluate(params)


@pytest.mark.parametrize("algo", [DSGD(lr=0.1), DATSGD(lr=0.01), GradientTracking(lr=0.05)])
def test_permuting_nodes_with_w_permutes_the_result(algo):
    rng = np.random.default_rng(0)
    topo = ring(N)
    w = topo.weights(1).dense()
    # a non-symmetric-looking but valid graph: ring plus a chord, MH weights
    perm = rng.permutation(N)
    p = np.eye(N)[perm]  # p @ x moves row i to row perm^{-1}... use explicit index form
    w_perm = np.empty_like(w)
    w_perm[np.ix_(perm, perm)] = w  # node perm[i] plays node i
    task = _task()
    base = _run(algo, topo, task=task)
    permuted = _run(algo, from_matrix(w_perm), task=_PermutedTask(task, perm))
    torch.testing.assert_close(permuted[torch.as_tensor(perm)], base, rtol=0, atol=1e-12)
    assert p.shape == (N, N)


def test_gossip_preserves_the_mean_with_doubly_stochastic_w():
    torch.manual_seed(0)
    for topo in (ring(16), torus(16), complete(16)):
        comm = SimCommunicator(topo)
        x = torch.randn(16, 7)
        y = comm.mix(x, 1)
        torch.testing.assert_close(y.mean(0), x.mean(0), rtol=0, atol=1e-14)


def test_gradient_tracking_tracks_the_mean_gradient():
    """With doubly stochastic W, mean(y_t) = mean(g_t) at every round."""
    task = _task(heterogeneity=2.0)
    algo = GradientTracking(lr=0.05)
    comm = SimCommunicator(ring(N))
    oracle = GradientOracle(task)
    state = algo.init(task.init_params(0).expand(N, -1).clone())
    for t in range(1, 15):
        grads, _ = oracle(algo.query(state, t), task.sample(comm.node_ids, t, 0))
        state = algo.update(state, grads, comm, t)
        d = grads.shape[1]
        # z[:, d:] holds W y_t; its mean equals mean(y_t) = mean(g_t)
        torch.testing.assert_close(state.z[:, d:].mean(0), grads.mean(0), rtol=0, atol=1e-12)
