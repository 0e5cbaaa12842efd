"""AD-PSGD on the simulated network's clock: the events, their order, the clock, the faults.

The passes the communicator hands out are checked against applying the events one at a
time in time order (a plain Python loop); the clock against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import decent
from decent.algorithms import ADPSGD, AlgorithmError
from decent.comm import SimCommunicator
from decent.comm.network import (
    ComputeModel,
    DelayModel,
    FaultModel,
    LinkModel,
    NetworkCommunicator,
    NetworkError,
)
from decent.tasks import LeastSquares
from decent.topology import erdos_renyi, exponential, ring, torus


def _rand(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("faults", [FaultModel(), FaultModel(drop=0.2, crashes={3: 9})])
def test_the_passes_are_the_events_one_by_one_in_time_order(faults: FaultModel) -> None:
    n, d, lr = 14, 3, 0.1
    topo = erdos_renyi(n, 0.3, seed=2)
    compute = ComputeModel("lognormal", sigma=0.8)
    net = NetworkCommunicator(topo, compute=compute, link=LinkModel(0.05), faults=faults, seed=1)
    algo = ADPSGD(lr=lr)
    state = algo.init(_rand(n, d, 0))
    x = state.x.clone()
    read = state.read.clone()
    events = 0
    for t in range(1, 41):
        grads = _rand(n, d, 100 + t)
        net.begin_round(t)
        # the twin draws the same round (same seed): its events drive the reference loop
        if t == 1:
            twin = NetworkCommunicator(
                topo, compute=compute, link=LinkModel(0.05), faults=faults, seed=1
            )
        twin.begin_round(t)
        rnd = twin.pairwise(x, t)
        assert list(rnd.times) == sorted(rnd.times)
        for i, j in zip(rnd.nodes.tolist(), rnd.partners.tolist(), strict=True):
            if j >= 0:
                mean = (x[i] + x[j]) / 2
                x[j] = mean
                x[i] = mean - lr * grads[i]
            else:
                x[i] = x[i] - lr * grads[i]
            read[i] = x[i]
        events += len(rnd.nodes)
        state = algo.update(state, grads, net, t)
        torch.testing.assert_close(state.x, x, rtol=0, atol=1e-14)
        torch.testing.assert_close(state.read, read, rtol=0, atol=1e-14)
    assert net.metrics()["grad_evals"] == events > 0


def test_constant_compute_gives_the_closed_form_clock() -> None:
    n, latency = 8, 0.1
    net = NetworkCommunicator(ring(n), link=LinkModel(latency))
    x = torch.zeros(n, 2, dtype=torch.float64)
    step = 1 + 2 * latency  # a gradient and a message each way
    for t in range(1, 21):
        net.begin_round(t)
        rnd = net.pairwise(x, t)
        if t % 2:  # a round is half a step: every node finishes in the even ones
            assert rnd.nodes.size == 0
        else:
            k = t // 2
            assert sorted(rnd.nodes.tolist()) == list(range(n))
            np.testing.assert_allclose(rnd.times, k * step - 2 * latency, rtol=0, atol=1e-12)
        m = net.metrics()
        assert m["time/sim"] == pytest.approx(t * step / 2)
        assert m["grad_evals"] == n * (t // 2)


def test_a_slow_node_takes_fewer_steps_and_nobody_waits_for_it() -> None:
    n = 10
    compute = ComputeModel(slow_nodes=(4,), slow_factor=5.0)
    net = NetworkCommunicator(ring(n), compute=compute)
    x = torch.zeros(n, 1, dtype=torch.float64)
    counts = np.zeros(n)
    for t in range(1, 401):
        net.begin_round(t)
        counts += np.bincount(net.pairwise(x, t).nodes, minlength=n)
    fast = np.delete(counts, 4)
    assert fast.min() == fast.max()  # everyone else keeps the same pace
    assert counts[4] == pytest.approx(fast[0] / 5, abs=1)


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_pairwise_averaging_keeps_the_mean_and_reaches_consensus(drop: float) -> None:
    n = 16
    net = NetworkCommunicator(torus(n), compute=ComputeModel("lognormal"), faults=FaultModel(drop))
    algo = ADPSGD(lr=0.0)
    state = algo.init(_rand(n, 4, 3))
    mean = state.x.mean(dim=0)
    zero = torch.zeros(n, 4, dtype=torch.float64)
    for t in range(1, 301):
        net.begin_round(t)
        state = algo.update(state, zero, net, t)
    torch.testing.assert_close(state.x.mean(dim=0), mean, rtol=0, atol=1e-13)
    assert float((state.x - mean).square().sum()) < 1e-10
    m = net.metrics()
    if drop:
        assert m["faults/dropped"] > 0
    # an exchange is a message each way: bytes are whole messages of 4 float64
    assert net.stats.bytes == net.stats.messages * 32


def test_a_crashed_node_takes_no_part_and_its_nan_reaches_nobody() -> None:
    n = 8
    net = NetworkCommunicator(
        ring(n), compute=ComputeModel("lognormal"), faults=FaultModel(crashes={2: 1})
    )
    algo = ADPSGD(lr=0.1)
    x = _rand(n, 2, 0)
    x[2] = math.nan
    state = algo.init(x)
    for t in range(1, 101):
        net.begin_round(t)
        rnd = net.pairwise(state.x, t)
        assert 2 not in rnd.nodes and 2 not in rnd.partners
    net = NetworkCommunicator(
        ring(n), compute=ComputeModel("lognormal"), faults=FaultModel(crashes={2: 1})
    )
    for t in range(1, 101):
        net.begin_round(t)
        state = algo.update(state, torch.zeros(n, 2, dtype=torch.float64), net, t)
    assert not state.x[[0, 1, 3, 4, 5, 6, 7]].isnan().any()


def test_ad_psgd_trains_and_reproduces_from_its_seed() -> None:
    n = 16
    task = LeastSquares(n, dim=6, heterogeneity=1.0)

    def run(seed: int):
        net = NetworkCommunicator(ring(n), compute=ComputeModel("straggler", p=0.1), seed=seed)
        return decent.train(ADPSGD(lr=0.05), task, net, rounds=400, seed=seed, eval_every=100)

    a, b, c = run(0), run(0), run(1)
    assert a.output is not None and b.output is not None and c.output is not None
    assert torch.equal(a.output, b.output) and not torch.equal(a.output, c.output)
    first, last = a.records[0], a.records[-1]
    assert last["eval/subopt@mean"] < first["eval/subopt@mean"] / 50
    # grad_evals counts the gradients used: about half the nodes per round
    assert 0.3 * 400 * n < last["grad_evals"] < 0.6 * 400 * n


def test_ad_psgd_refuses_what_it_cannot_run() -> None:
    x = torch.zeros(4, 1, dtype=torch.float64)
    algo = ADPSGD(lr=0.1)
    with pytest.raises(AlgorithmError, match="ad_psgd runs on a simulated network's clock"):
        algo.update(algo.init(x), x, SimCommunicator(ring(4)), 1)
    directed = NetworkCommunicator(exponential(8, directed=True))
    with pytest.raises(NetworkError, match="undirected"):
        directed.pairwise(torch.zeros(8, 1, dtype=torch.float64), 1)
    delayed = NetworkCommunicator(ring(4), delays=DelayModel(2))
    with pytest.raises(NetworkError, match=r"delays\.max_delay must be 0"):
        delayed.pairwise(x, 1)
