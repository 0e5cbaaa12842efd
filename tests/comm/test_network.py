"""The simulated network: clock, drops, link failures and crashes.

The clock is checked against closed forms and against an independent per-node event loop;
the faults against what they must and must not do to the values."""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

import numpy as np
import pytest
import torch

import decent
from decent.comm import SimCommunicator
from decent.comm.network import (
    ComputeModel,
    FaultModel,
    LinkModel,
    NetworkCommunicator,
    NetworkError,
)
from decent.comm.network.clock import edges as matrix_entries
from decent.tasks import LeastSquares
from decent.topology import erdos_renyi, ring, torus

METHODS: dict[str, Any] = {
    "dsgd": lambda: decent.DSGD(lr=0.05),
    "dat_sgd": lambda: decent.DATSGD(lr=0.05 / 60),
    "gradient_tracking": lambda: decent.GradientTracking(lr=0.02),
}


def _train(comm, method: str = "dsgd", rounds: int = 60, seed: int = 0):
    task = LeastSquares(comm.num_nodes, dim=6, heterogeneity=1.0)
    return decent.train(METHODS[method](), task, comm, rounds=rounds, seed=seed, eval_every=20)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_clock_without_faults_changes_nothing_bit_for_bit(method: str) -> None:
    plain = _train(SimCommunicator(ring(12)), method)
    clocked = NetworkCommunicator(
        ring(12),
        compute=ComputeModel("lognormal", sigma=1.0, slow_nodes=(3,), slow_factor=4.0),
        link=LinkModel(latency=0.01, bandwidth=1e5),
    )
    timed = _train(clocked, method)
    assert torch.equal(plain.output, timed.output)
    for a, b in zip(plain.records, timed.records, strict=True):
        for key, value in a.items():
            if key != "time/wall_s":
                assert b[key] == value, key
    times = [r["time/sim"] for r in timed.records]
    assert times[0] == 0.0 and all(b > a for a, b in itertools.pairwise(times))


def test_gossip_and_all_reduce_times_match_their_closed_forms() -> None:
    n, rounds, latency, bandwidth, d = 8, 30, 0.25, 1000.0, 6
    link = LinkModel(latency=latency, bandwidth=bandwidth)
    message = d * 8  # float64
    gossip = _train(NetworkCommunicator(ring(n), link=link), "dsgd", rounds)
    assert gossip.records[-1]["time/sim"] == pytest.approx(rounds * (1 + link.time(message)))
    # DAT-SGD gossips [w | x]: one message of twice the size per round
    dat = _train(NetworkCommunicator(ring(n), link=link), "dat_sgd", rounds)
    assert dat.records[-1]["time/sim"] == pytest.approx(rounds * (1 + link.time(2 * message)))
    task = LeastSquares(n, dim=d, heterogeneity=1.0)
    mb = decent.train(
        decent.MinibatchSGD(lr=0.05), task, NetworkCommunicator(ring(n), link=link), rounds=rounds
    )
    ring_all_reduce = 2 * (n - 1) * latency + 2 * (n - 1) / n * message / bandwidth
    assert mb.records[-1]["time/sim"] == pytest.approx(rounds * (1 + ring_all_reduce))


def _event_loop_clock(w: np.ndarray, compute: list[np.ndarray], link: float) -> np.ndarray:
    """The clock by hand: node by node, neighbour by neighbour (one mix per round)."""
    n = w.shape[0]
    clock = np.zeros(n)
    for times in compute:
        ready = [clock[i] + times[i] for i in range(n)]
        new = list(ready)
        for i in range(n):
            for j in range(n):
                if j != i and w[i, j] != 0:
                    new[i] = max(new[i], ready[j] + link)
        clock = np.array(new)
    return clock


def test_the_clock_is_the_per_node_event_loop_on_a_random_graph_with_stragglers() -> None:
    topo = erdos_renyi(10, 0.3, seed=4)
    compute = ComputeModel("straggler", mean=0.5, p=0.2, slowdown=7.0)
    net = NetworkCommunicator(topo, compute=compute, link=LinkModel(latency=0.1), seed=9)
    x = torch.zeros(10, 3, dtype=torch.float64)
    for t in range(1, 26):
        net.begin_round(t)
        x = net.mix(x, t)
    draws = [compute.draw(9, t, 10) for t in range(1, 26)]
    assert any((d > 0.5).any() for d in draws)  # some stragglers were drawn
    expected = _event_loop_clock(topo.weights(1).dense(), draws, 0.1)
    np.testing.assert_allclose(net.clock, expected, rtol=1e-12)


def test_one_persistently_slow_node_sets_the_pace_of_a_connected_gossip_network() -> None:
    compute = ComputeModel(slow_nodes=(0,), slow_factor=5.0)
    net = NetworkCommunicator(ring(9), compute=compute)
    x = torch.zeros(9, 1, dtype=torch.float64)
    for t in range(1, 101):
        x = net.mix(x, t)
    # after the slow node's delay has spread (diameter 4), every node waits on it each round
    assert net.metrics()["time/sim"] == pytest.approx(100 * 5.0)
    assert net.clock.min() >= 100 * 5.0 - 4 * 5.0


def test_lognormal_compute_keeps_its_mean() -> None:
    draws = ComputeModel("lognormal", mean=2.0, sigma=0.8).draw(1, 1, 200_000)
    # mean exp(sigma Z - sigma^2 / 2) = 1; the standard error of the mean is ~0.0021 here
    assert draws.mean() == pytest.approx(2.0, abs=0.012)


def test_the_same_seed_reproduces_the_same_faulty_run_and_another_seed_does_not() -> None:
    faults = FaultModel(drop=0.2, link_fail=0.1, link_recover=0.5, crashes={2: 15})

    def run(seed: int):
        return _train(NetworkCommunicator(torus(16), faults=faults, seed=seed), "dsgd")

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.output, b.output)
    assert a.records[-1]["faults/dropped"] == b.records[-1]["faults/dropped"]
    assert not torch.equal(a.output, c.output)


def test_a_crashed_node_never_reaches_anyone_after_its_crash() -> None:
    net = NetworkCommunicator(ring(6), faults=FaultModel(crashes={2: 4}))
    marked = torch.zeros(6, 2, dtype=torch.float64)
    marked[2] = 1.0
    before = net.mix(marked, 3)  # round 3: node 2 is alive, its neighbours take its value
    assert (before[[1, 3]] > 0).all() and (before[[0, 4, 5]] == 0).all()
    poisoned = torch.zeros(6, 2, dtype=torch.float64)
    poisoned[2] = math.nan  # NaN, not a marker: a zeroed weight would still spread it
    for t in (4, 5, 6):
        after = net.mix(poisoned, t)
        assert not after[[0, 1, 3, 4, 5]].isnan().any()
        assert after[2].isnan().all()  # it keeps its own value: nothing moves it
    m = net.metrics()
    assert m["faults/alive_nodes"] == 5 and m["faults/crashed/node2/round"] == 4
    # messages to and from a crashed node are not sent: ring(6) has 12, minus 4 touching 2
    assert net.stats.messages == 12 + 3 * 8


def test_drops_are_counted_never_charged_and_keep_each_row_stochastic() -> None:
    n, rounds = 20, 40
    net = NetworkCommunicator(torus(n), faults=FaultModel(drop=0.3), seed=3)
    edges = torus(n).weights(1).num_messages
    x = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ones = torch.ones(n, 1, dtype=torch.float64)
    for t in range(1, rounds + 1):
        mixed = net.mix(ones, t)
        torch.testing.assert_close(mixed, ones, rtol=0, atol=1e-15)  # rows sum to one
    dropped = net.metrics()["faults/dropped"]
    assert 0.2 * rounds * edges < dropped < 0.4 * rounds * edges
    assert net.stats.messages + dropped == rounds * edges
    assert net.stats.bytes == net.stats.messages * 8  # only delivered messages are charged
    assert int(net.stats.bytes_per_node.sum()) == net.stats.bytes
    # the weight of a lost message stays with its receiver: an explicit check of one round
    net2 = NetworkCommunicator(torus(n), faults=FaultModel(drop=0.3), seed=3)
    matrix = torus(n).weights(1)
    w = matrix.dense()
    dst, src, _, _ = matrix_entries(net2.inner.weights(1))
    lost = net2.losses.lost(matrix, 1, dst, src)
    assert lost.any()
    w_eff = w.copy()
    for i, j in zip(dst[lost], src[lost], strict=True):
        w_eff[i, i] += w_eff[i, j]
        w_eff[i, j] = 0.0
    got = net2.mix(x, 1)
    torch.testing.assert_close(got, torch.as_tensor(w_eff) @ x, rtol=0, atol=1e-14)


def test_a_failed_link_is_down_both_ways_and_recovers() -> None:
    topo = ring(10)
    net = NetworkCommunicator(topo, faults=FaultModel(link_fail=0.3, link_recover=0.4), seed=5)
    w = topo.weights(1)
    dst, src, _, _ = matrix_entries(w)
    pattern = [net.losses.lost(w, t, dst, src) for t in range(1, 200)]
    index = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(dst, src, strict=True))}
    for lost in pattern:
        for (i, j), k in index.items():
            assert lost[k] == lost[index[(j, i)]]
    stack = np.array(pattern)
    down = stack.mean()
    assert 0.3 < down < 0.6  # stationary 0.3 / (0.3 + 0.4) = 0.43
    # recoveries happen: every link is seen both up and down
    assert stack.any(axis=0).all() and (~stack).any(axis=0).all()


def test_all_reduce_and_every_metric_are_over_live_nodes() -> None:
    net = NetworkCommunicator(ring(4), faults=FaultModel(crashes={1: 1}))
    net.begin_round(1)
    x = torch.tensor([[1.0], [100.0], [3.0], [5.0]], dtype=torch.float64)
    assert net.all_reduce(x, "mean").item() == 3.0
    assert net.all_reduce(x, "max", accounted=False).item() == 5.0


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: FaultModel(drop=1.5), "faults.drop"),
        (lambda: FaultModel(drop=-0.1), "faults.drop"),
        (lambda: FaultModel(link_fail=0.2, link_recover=0.0), "faults.link_recover"),
        (lambda: FaultModel(crashes={0: 0}), "faults.crashes"),
        (lambda: ComputeModel("gamma"), "compute.kind"),  # type: ignore[arg-type]
        (lambda: ComputeModel(p=2.0), "compute.p"),
        (lambda: ComputeModel(mean=0.0), "compute.mean"),
        (lambda: ComputeModel(slowdown=0.5), "compute.slowdown"),
        (lambda: LinkModel(latency=-1.0), "link.latency"),
        (lambda: LinkModel(bandwidth=0.0), "link.bandwidth"),
        (lambda: NetworkCommunicator(ring(4), faults=FaultModel(crashes={7: 3})), "crashes"),
        (
            lambda: NetworkCommunicator(ring(3), faults=FaultModel(crashes={0: 1, 1: 2, 2: 3})),
            "crashes",
        ),
        (lambda: NetworkCommunicator(ring(4), compute=ComputeModel(slow_nodes=(9,))), "slow"),
        # a join of a node that never existed
        (lambda: NetworkCommunicator(ring(4), faults=FaultModel(joins={4: 3})), "faults.joins"),
        (lambda: FaultModel(joins={0: 0}), r"faults.joins\[0\]"),
        (lambda: FaultModel(crashes={1: 5}, joins={1: 9}), "never comes back"),
        (lambda: FaultModel(leaves={1: 5}, joins={1: 5}), "same round"),
        # every live node isolated: the ring's 0 and 2 are not neighbours once 1 and 3 leave
        (
            lambda: NetworkCommunicator(ring(4), faults=FaultModel(leaves={1: 3, 3: 5})),
            "disconnects every node at round 5",
        ),
        # a joiner whose neighbours are all away has nobody to pull its state from
        (
            lambda: NetworkCommunicator(
                ring(5), faults=FaultModel(leaves={0: 2, 2: 2}, joins={1: 4, 0: 9, 2: 9})
            ),
            r"faults.joins\[1\] = 4: none of node 1's neighbours",
        ),
        (
            lambda: NetworkCommunicator(ring(3), faults=FaultModel(leaves={0: 2, 1: 2, 2: 3})),
            "no node alive at round 3",
        ),
    ],
)
def test_bad_network_input_names_the_field(build, field: str) -> None:
    with pytest.raises(NetworkError, match=field):
        build()


@pytest.mark.parametrize("method", ["dsgd", "dat_sgd", "minibatch_sgd"])
def test_the_clock_alone_is_the_clock_of_a_training_run(method: str) -> None:
    from decent.comm.network import simulate_clock

    compute = ComputeModel("straggler", p=0.2, slowdown=6.0)
    link = LinkModel(latency=0.05, bandwidth=2000.0)
    topo = torus(16)
    task = LeastSquares(16, dim=6, heterogeneity=1.0)
    algorithm: Any = {
        "dsgd": decent.DSGD(lr=0.05),
        "dat_sgd": decent.DATSGD(lr=0.001),
        "minibatch_sgd": decent.MinibatchSGD(lr=0.05),
    }[method]
    net = NetworkCommunicator(topo, compute=compute, link=link, seed=4)
    run = decent.train(algorithm, task, net, rounds=40, seed=4, eval_every=8)
    message = 6 * 8 * (2 if method == "dat_sgd" else 1)
    pattern: Literal["gossip", "all_reduce"] = (
        "all_reduce" if method == "minibatch_sgd" else "gossip"
    )
    alone = simulate_clock(topo, 40, message, pattern=pattern, compute=compute, link=link, seed=4)
    for record in run.records[1:]:
        assert record["time/sim"] == alone[int(record["round"]) - 1]


# -- bounded-delay gossip --------------------------------------------------------------


def test_a_constant_delay_is_the_delayed_communicator_the_overlap_mode_is_checked_against() -> None:
    from decent.comm import DelayedCommunicator
    from decent.comm.network import DelayModel

    for method in ("dsgd", "dat_sgd"):
        twin = _train(DelayedCommunicator(ring(12), delay=2), method)
        net = NetworkCommunicator(ring(12), delays=DelayModel(2, "constant"))
        ours = _train(net, method)
        torch.testing.assert_close(ours.output, twin.output, rtol=0, atol=1e-13)
        assert net.delay_max == 2


@pytest.mark.parametrize("kind", ["clock", "uniform", "constant"])
def test_delays_never_exceed_their_bound_and_the_seed_fixes_them(kind: str) -> None:
    from decent.comm.network import DelayModel

    def run(seed: int) -> tuple[NetworkCommunicator, decent.RunResult]:
        net = NetworkCommunicator(
            torus(16),
            compute=ComputeModel("straggler", p=0.3, slowdown=8.0),
            link=LinkModel(latency=0.3),
            delays=DelayModel(3, kind),  # type: ignore[arg-type]
            seed=seed,
        )
        return net, _train(net, "dsgd", rounds=50, seed=seed)

    (a, ra), (b, rb) = run(5), run(5)
    assert ra.output is not None and rb.output is not None
    assert torch.equal(ra.output, rb.output) and a.delay_sum == b.delay_sum
    assert 0 <= a.delay_max <= 3
    assert ra.records[-1]["delay/max"] <= 3
    if kind != "constant":
        assert 0 < ra.records[-1]["delay/mean"] < 3  # some messages are stale, not all


def test_bounded_staleness_mixes_the_newest_message_that_arrived_and_beats_waiting() -> None:
    """One slow node on a path of three, by hand: the others stop waiting for it."""
    from decent.comm.network import DelayModel
    from decent.topology import from_edges

    path = lambda n: from_edges(n, [(0, 1), (1, 2)])  # noqa: E731  (the path 0 - 1 - 2)
    compute = ComputeModel(slow_nodes=(0,), slow_factor=3.0)
    sync = NetworkCommunicator(path(3), compute=compute)
    stale = NetworkCommunicator(path(3), compute=compute, delays=DelayModel(2, "clock"))
    x = torch.zeros(3, 1, dtype=torch.float64)
    for t in range(1, 4):
        sync.mix(x + t, t)
        got = stale.mix(x + t, t)
    # node 0 computes 3 per round, nodes 1 and 2 compute 1; no latency; a node sends when
    # it is ready (s) and then waits (c). By hand:
    # round 1 (nothing older, everyone needs round 1): s = 3, 1, 1; c = 3, 3, 1
    # round 2 (needs round 1): s = 6, 4, 2; node 1 has node 0's round 1 (sent at 3) and
    #   node 2's (at 1), node 2 has node 1's (at 1): c = 6, 4, 2
    # round 3 (needs round 1): s = 9, 5, 3; node 1's newest from node 0 is round 1 (its
    #   round 2 and 3 were sent at 6 and 9 > 5), from node 2 round 3 (at 3 <= 5); node 2's
    #   newest from node 1 is round 1 (at 1; rounds 2, 3 at 4, 5 > 3): c = 9, 5, 3.
    # Waiting for everything instead: c = 9, 9, 7.
    np.testing.assert_allclose(stale.clock, [9.0, 5.0, 3.0])
    np.testing.assert_allclose(sync.clock, [9.0, 9.0, 7.0])
    w = path(3).weights(1).dense()
    expected_node1 = w[1, 1] * 3 + w[1, 0] * 1 + w[1, 2] * 3
    assert got[1].item() == pytest.approx(expected_node1)
    assert got[0].item() == pytest.approx(w[0, 0] * 3 + w[0, 1] * 3)
    assert got[2].item() == pytest.approx(w[2, 2] * 3 + w[2, 1] * 1)


def test_bad_delay_input_names_the_field() -> None:
    from decent.comm.network import DelayModel

    with pytest.raises(NetworkError, match=r"delays\.max_delay"):
        DelayModel(-1)
    with pytest.raises(NetworkError, match=r"delays\.kind"):
        DelayModel(2, "poisson")  # type: ignore[arg-type]
    from decent.topology import OnePeerExponential

    with pytest.raises(NetworkError, match="needs a static topology"):
        NetworkCommunicator(
            OnePeerExponential(8), delays=DelayModel(1), faults=FaultModel(drop=0.1)
        )


def _delayed_reference(
    w: np.ndarray,
    xs: dict[int, np.ndarray],
    tau: dict[tuple[int, int], int],
    lost: dict[tuple[int, int, int], bool],
    alive: np.ndarray,
    t: int,
) -> np.ndarray:
    """``y_i = W_ii x_i(t) + sum_j W_ij x_j(t - tau_ij)`` over the delivered messages of
    live pairs; the rest of each live row's weight on its diagonal; a dead row keeps x_i."""
    n = w.shape[0]
    x = xs[t]
    y = np.zeros_like(x)
    for i in range(n):
        if not alive[i]:
            y[i] = x[i]
            continue
        y[i] = w[i, i] * x[i]
        for j in range(n):
            if j == i or w[i, j] == 0:
                continue
            age = tau[(i, j)]
            if alive[j] and not lost[(t - age, i, j)]:
                y[i] += w[i, j] * xs[t - age][j]
            else:
                y[i] += w[i, j] * x[i]
    return y


@pytest.mark.parametrize("kind", ["uniform", "constant"])
def test_delays_with_drops_and_a_crash_match_a_loop_over_messages(kind: str) -> None:
    """Each mixed value is the delayed message that was delivered; a lost message is never
    mixed later, its weight stays with the receiver, and a crashed node reaches nobody."""
    from decent.comm.network import DelayModel
    from decent.comm.network.models import DELAY_STREAM

    n, depth, rounds = 9, 3, 12
    topo = torus(n)
    w = topo.weights(1).dense()
    faults = FaultModel(drop=0.3, crashes={5: 7})
    delays = DelayModel(depth, kind)  # type: ignore[arg-type]
    net = NetworkCommunicator(topo, faults=faults, delays=delays, seed=4)
    twin = NetworkCommunicator(topo, faults=faults, seed=4)  # the same draws
    dst, src, _, _ = matrix_entries(topo.weights(1))
    xs = {t: np.random.default_rng(t).standard_normal((n, 2)) for t in range(1, rounds + 1)}
    lost: dict[tuple[int, int, int], bool] = {}
    for t in range(1, rounds + 1):
        if t >= 7:
            xs[t][5] = math.nan  # crashed at 7: whatever it holds must reach nobody
        net.begin_round(t)
        drawn = twin.losses.lost(topo.weights(1), t, dst, src)
        for k, (i, j) in enumerate(zip(dst.tolist(), src.tolist(), strict=True)):
            lost[(t, i, j)] = bool(drawn[k])
        oldest = min(depth, t - 1)
        if kind == "constant":
            ages = np.full(dst.shape[0], oldest)
        else:
            u = twin.draws.uniforms(DELAY_STREAM, t, dst.shape[0])
            ages = np.minimum((u * (depth + 1)).astype(np.int64), oldest)
        tau = {(int(i), int(j)): int(a) for i, j, a in zip(dst, src, ages, strict=True)}
        got = net.mix(torch.as_tensor(xs[t]), t).numpy()
        alive = net.alive.copy()
        want = _delayed_reference(w, xs, tau, lost, alive, t)
        np.testing.assert_allclose(got[alive], want[alive], rtol=0, atol=1e-13)
        assert not np.isnan(got[alive]).any()
    m = net.metrics()
    assert m["faults/dropped"] > 0 and m["faults/alive_nodes"] == n - 1
    assert 0 < net.delay_max <= depth


def test_bounded_staleness_with_drops_keeps_rows_stochastic_and_within_the_bound() -> None:
    from decent.comm.network import DelayModel

    n = 16
    net = NetworkCommunicator(
        torus(n),
        compute=ComputeModel("straggler", p=0.2, slowdown=5.0),
        link=LinkModel(latency=0.1),
        faults=FaultModel(drop=0.2, link_fail=0.1, link_recover=0.5, crashes={3: 5}),
        delays=DelayModel(3, "clock"),
        seed=1,
    )
    ones = torch.ones(n, 1, dtype=torch.float64)
    for t in range(1, 40):
        net.begin_round(t)
        torch.testing.assert_close(net.mix(ones, t), ones, rtol=0, atol=1e-15)
    m = net.metrics()
    assert 0 < m["delay/mean"] <= m["delay/max"] <= 3 and m["faults/dropped"] > 0


# -- leaving and joining ---------------------------------------------------------------


def _effective(w: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """``W'``: a dead node's row is ``e_i``; a live row's weights on dead nodes go to its
    diagonal."""
    out = w * alive[None, :] * alive[:, None]
    out[np.diag_indices_from(out)] += (w * ~alive[None, :]).sum(axis=1) * alive
    out[~alive] = 0.0
    out[~alive, ~alive] = 1.0
    return out


def test_a_joining_node_pulls_its_neighbours_state_hand_unrolled() -> None:
    """D-SGD with a leave, a rejoin and a late join against a numpy loop that builds each
    round's ``W'`` and copies the joiners' rows by hand."""
    from decent.engine.oracle import GradientOracle

    n, rounds, lr, seed = 6, 30, 0.05, 3
    topo = ring(n)
    faults = FaultModel(leaves={2: 8}, joins={2: 15, 4: 11})
    net = NetworkCommunicator(topo, faults=faults)
    task = LeastSquares(n, dim=5, heterogeneity=1.0)
    run = decent.train(decent.DSGD(lr=lr), task, net, rounds=rounds, seed=seed, eval_every=5)

    oracle = GradientOracle(task)
    nodes = torch.arange(n)
    x = task.init_params(seed).to(torch.float64).expand(n, -1).clone()
    w = topo.weights(1).dense()
    alive = np.ones(n, dtype=bool)
    alive[4] = False  # joins at 11 without leaving first: absent from the start
    for t in range(1, rounds + 1):
        if t == 8:
            alive[2] = False
        if t == 11:  # node 4's neighbours are 3 and 5, weight 1/3 each: the smaller id
            x[4] = x[3]
            alive[4] = True
        if t == 15:  # node 2's neighbours 1 and 3 tie: node 1
            x[2] = x[1]
            alive[2] = True
        g, _ = oracle(x, task.sample(nodes, t, seed))
        x = torch.as_tensor(_effective(w, alive)) @ (x - lr * g)
    torch.testing.assert_close(run.output, x, rtol=0, atol=1e-13)
    assert net.pulled == {4: 3, 2: 1}
    alive_at = {int(r["round"]): r["faults/alive_nodes"] for r in run.records}
    assert alive_at == {0: 5, 5: 5, 10: 4, 15: 6, 20: 6, 25: 6, 30: 6}
    last = run.records[-1]
    assert last["faults/left/node2/round"] == 8 and last["faults/joined/node2/round"] == 15
    assert last["faults/joined/node4/round"] == 11 and "faults/left/node4/round" not in last


@pytest.mark.parametrize("method", [*sorted(METHODS), "ad_psgd"])
def test_a_joiner_starts_from_every_state_tensor_of_its_neighbour(method: str) -> None:
    """After the pull, the joiner's rows of every node-stacked state tensor (DAT-SGD's w
    and x, gradient tracking's tracker) are its neighbour's."""
    seen: dict[str, Any] = {}
    net = NetworkCommunicator(ring(8), faults=FaultModel(joins={5: 6}))
    algorithm = decent.ADPSGD(lr=0.05) if method == "ad_psgd" else METHODS[method]()
    original = algorithm.update

    def update(state, grads, comm, t):
        if t == 6:
            seen["state"] = [f.clone() for f in state if isinstance(f, torch.Tensor)]
        return original(state, grads, comm, t)

    object.__setattr__(algorithm, "update", update)
    task = LeastSquares(8, dim=4, heterogeneity=1.0)
    run = decent.train(algorithm, task, net, rounds=12, seed=1, eval_every=4)
    assert run.status == "finished" and run.output is not None
    assert torch.isfinite(run.output).all()
    for f in seen["state"]:
        if f.shape[:1] == (8,):
            assert torch.equal(f[5], f[4])  # node 5 pulled from node 4 (ties: smaller id)


def test_an_absent_node_never_reaches_anyone_before_it_joins() -> None:
    net = NetworkCommunicator(ring(6), faults=FaultModel(joins={2: 4}))
    poisoned = torch.zeros(6, 2, dtype=torch.float64)
    poisoned[2] = math.nan
    for t in (1, 2, 3):
        net.begin_round(t)
        out = net.mix(poisoned, t)
        assert not out[[0, 1, 3, 4, 5]].isnan().any()
    assert net.begin_round(4) == [(2, 1)]
    assert net.clock[2] == net.clock[1]  # it joins at its source's time


def test_drops_and_a_dead_node_together_give_the_hand_built_matrix() -> None:
    n = 16
    net = NetworkCommunicator(torus(n), faults=FaultModel(drop=0.3, crashes={5: 1}), seed=2)
    net.begin_round(1)
    matrix = torus(n).weights(1)
    dst, src, _, _ = matrix_entries(matrix)
    twin = NetworkCommunicator(torus(n), faults=FaultModel(drop=0.3, crashes={5: 1}), seed=2)
    lost = twin.losses.lost(matrix, 1, dst, src)
    alive = np.ones(n, dtype=bool)
    alive[5] = False
    w_eff = _effective(matrix.dense(), alive)
    for i, j in zip(dst[lost], src[lost], strict=True):
        if alive[i] and alive[j]:
            w_eff[i, i] += w_eff[i, j]
            w_eff[i, j] = 0.0
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[5] = math.nan
    got = net.mix(x, 1)
    keep = torch.as_tensor(alive)
    expect = torch.as_tensor(w_eff[alive][:, alive]) @ x[keep]
    torch.testing.assert_close(got[keep], expect, rtol=0, atol=1e-14)
    assert got[5].isnan().all()


def test_a_given_delay_schedule_is_replayed_and_checked() -> None:
    from decent.comm import DelayedCommunicator
    from decent.comm.network import DelayModel

    # a schedule of D everywhere (clipped at the first rounds) is the constant kind
    def always(t: int, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
        return np.full(dst.shape[0], min(2, t - 1))

    given = _train(NetworkCommunicator(ring(12), delays=DelayModel(2, "given", schedule=always)))
    twin = _train(DelayedCommunicator(ring(12), delay=2))
    torch.testing.assert_close(given.output, twin.output, rtol=0, atol=1e-13)
    with pytest.raises(NetworkError, match=r"delays\.schedule is needed"):
        DelayModel(2, "given")
    with pytest.raises(NetworkError, match=r"delays\.schedule is needed"):
        DelayModel(2, "clock", schedule=always)

    def too_old(t: int, dst: np.ndarray, src: np.ndarray) -> np.ndarray:
        return np.full(dst.shape[0], 3)

    net = NetworkCommunicator(ring(4), delays=DelayModel(3, "given", schedule=too_old))
    x = torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(NetworkError, match=r"integer delays in 0\.\.0 at round 1"):
        net.mix(x, 1)
