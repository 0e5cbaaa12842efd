"""A replica batch computes, for every replica, exactly what the single run computes.

Bit for bit in float64: the state, the output and the records (but wall time) of every
replica equal those of :func:`decent.train` with that replica's seed, step size and task,
for every algorithm, for tasks that differ in their scalar parameters, and for dataset
tasks, on sizes that leave partial vectors. One exception, measured and stated: a loss
with transcendental functions evaluated in closed form (the logistic stream's sigmoid and
softplus) agrees to about 1e-16 per step, not bitwise, because torch's vectorized ``exp``
rounds differently in a kernel's vector body and in its scalar tail, so the last bit
depends on where a value sits in the tensor. A diverged replica is recorded as diverged
and stopped; the others go on.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from decent.algorithms import (
    ALGORITHMS,
    DATSGD,
    DSGD,
    AnytimeSGD,
    Cosine,
    GradientTracking,
    InverseSqrt,
    LocalSGD,
    MinibatchSGD,
)
from decent.comm import SimCommunicator
from decent.comm.sim import MixedReplicatedCommunicator, ReplicatedCommunicator
from decent.engine import DivergenceWarning, History, train, train_replicas
from decent.engine.replicas import ReplicaError
from decent.tasks import LeastSquares, LogisticPopulation, LogisticRegressionStream, digits, mlp
from decent.topology import (
    OnePeerExponential,
    StaticTopology,
    complete,
    exponential,
    random_regular,
    ring,
    torus,
)

N, ROUNDS = 8, 30


def _same_records(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for key in ra:
            if key == "train/loss":  # a mean over the round's rows, summed in another order
                assert ra[key] == pytest.approx(rb[key], rel=1e-14), key
            elif key != "time/wall_s":  # metrics of the (bit-identical) models: exact
                assert ra[key] == rb[key] or (math.isnan(ra[key]) and math.isnan(rb[key])), key


def _equal(a: torch.Tensor, b: torch.Tensor, exact: bool) -> None:
    if exact:
        assert torch.equal(a, b), float((a - b).abs().max())
    else:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _check(algorithms, tasks, seeds, topology, exact=True, **kw):
    """``topology``: every replica's, or a list of each replica's (replicas on one graph
    share its communicator)."""
    topologies = topology if isinstance(topology, list) else [topology] * len(algorithms)
    comms = {id(t): SimCommunicator(t) for t in topologies}
    batched = train_replicas(
        algorithms,
        tasks,
        [comms[id(t)] for t in topologies] if isinstance(topology, list) else comms[id(topology)],
        rounds=ROUNDS,
        seeds=seeds,
        eval_every=10,
        per_node_eval="every",
        **kw,
    )
    assert len(batched) == len(algorithms)
    for algo, task, seed, topo, got in zip(
        algorithms, tasks, seeds, topologies, batched, strict=True
    ):
        alone = train(
            algo,
            task,
            SimCommunicator(topo),
            rounds=ROUNDS,
            seed=seed,
            eval_every=10,
            per_node_eval="every",
            **kw,
        )
        assert got.status == alone.status == "finished"
        assert got.output is not None and alone.output is not None
        _equal(got.output, alone.output, exact)  # bit for bit
        for mine, theirs in zip(got.state, alone.state, strict=True):
            if isinstance(theirs, torch.Tensor):
                _equal(mine, theirs, exact)
            else:
                assert mine == theirs
        if exact:
            _same_records(got.records, alone.records)
        assert got.info is not None and alone.info is not None
        assert got.info.topology == alone.info.topology == topo.name
    return batched


# a method on a simulated network's clock (AD-PSGD) runs one replica at a time
@pytest.mark.parametrize("kind", [k for k, cls in ALGORITHMS.items() if not cls.needs_clock])
def test_every_algorithm_replica_equals_its_single_run(kind: str) -> None:
    cls: Any = ALGORITHMS[kind]
    scale = 1.0 / ROUNDS if cls.horizon_scaled else 1.0
    algorithms = [cls(lr=lr * scale) for lr in (0.01, 0.05, 0.03, 0.05)]
    # 7 nodes, 5 dimensions, 3 replicas: no size is a multiple of a vector width
    task = LeastSquares(7, dim=5, heterogeneity=1.0, hessian_heterogeneity=0.5, batch_size=3)
    _check(algorithms[:3], [task] * 3, [0, 1, 2], ring(7))
    task = LeastSquares(N, dim=4, heterogeneity=1.0, hessian_heterogeneity=0.5, batch_size=2)
    _check(algorithms, [task] * 4, [0, 1, 2, 2], ring(N))


def test_tasks_that_differ_in_their_parameters_and_schedules() -> None:
    tasks = [
        LeastSquares(N, dim=3, heterogeneity=h, noise=s, seed=k, hessian_heterogeneity=0.3)
        for h, s, k in ((0.0, 0.1, 0), (1.0, 0.5, 1), (2.0, 0.2, 2))
    ]
    algorithms = [DSGD(lr=0.05), DSGD(lr=InverseSqrt(0.1)), DSGD(lr=Cosine(0.08, ROUNDS))]
    _check(algorithms, tasks, [3, 4, 5], ring(N))


def test_logistic_stream_and_gradient_tracking_on_a_time_varying_graph() -> None:
    tasks = [
        LogisticRegressionStream(N, dim=4, heterogeneity=h, batch_size=3, seed=k, eval_samples=256)
        for h, k in ((1.0, 0), (2.0, 1))
    ]
    _check(
        [GradientTracking(lr=0.1), GradientTracking(lr=0.2)],
        tasks,
        [0, 1],
        OnePeerExponential(N),
    )


def test_population_logistic_with_components_bit_for_bit() -> None:
    """Sigmoids go through positionless kernels, so the replica rows, at other places in
    their tensors than in a single run, get the same bits."""
    tasks = [
        LogisticPopulation(N, dim=5, heterogeneity=h, components=2 * N, batch_size=3)
        for h in (0.5, 1.5)
    ]
    _check(
        [DSGD(lr=0.3), DSGD(lr=0.1), DSGD(lr=0.2)],
        [tasks[0], tasks[1], tasks[0]],
        [0, 1, 2],
        ring(N),
    )


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement"])
def test_dataset_task_replicas_differ_in_seed(sampling: str) -> None:
    data = digits(seed=0)
    tasks = [
        mlp(data, N, "dirichlet", hidden=(8,), batch_size=4, seed=0, sampling=sampling)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    _check([DATSGD(lr=0.3 / ROUNDS)] * 3, tasks, [0, 1, 2], ring(N))


def test_a_diverged_replica_stops_alone() -> None:
    task = LeastSquares(N, dim=4, heterogeneity=1.0)
    algorithms = [DSGD(lr=0.05), DSGD(lr=5.0), DSGD(lr=0.02)]
    hist = [History(), History(), History()]
    with pytest.warns(DivergenceWarning, match="dsgd with lr=5.0"):
        out = train_replicas(
            algorithms,
            [task] * 3,
            SimCommunicator(ring(N)),
            rounds=200,
            seeds=[0, 0, 1],
            eval_every=20,
            callbacks=[[h] for h in hist],
        )
    assert [r.status for r in out] == ["finished", "diverged", "finished"]
    assert out[1].rounds_completed < 200 and "lr=5.0" in (out[1].message or "")
    # the survivors are untouched by their neighbour's blow-up
    for r in (0, 2):
        alone = train(
            algorithms[r],
            task,
            SimCommunicator(ring(N)),
            rounds=200,
            seed=[0, 0, 1][r],
            eval_every=20,
        )
        got = out[r].output
        assert got is not None and alone.output is not None
        assert torch.equal(got, alone.output)
        assert len(hist[r].records) == len(alone.records)


def test_replicas_must_share_structure() -> None:
    task = LeastSquares(N, dim=4)
    comm = SimCommunicator(ring(N))
    with pytest.raises(ReplicaError, match="differ only in lr"):
        train_replicas(
            [DSGD(lr=0.1), DSGD(lr=0.1, variant="cta")], [task] * 2, comm, rounds=3, seeds=[0, 1]
        )
    with pytest.raises(ReplicaError, match="share the algorithm"):
        train_replicas([DSGD(lr=0.1), DATSGD(lr=0.1)], [task] * 2, comm, rounds=3, seeds=[0, 1])
    with pytest.raises(ReplicaError, match="must share"):
        train_replicas(
            [DSGD(lr=0.1)] * 2, [task, LeastSquares(N, dim=5)], comm, rounds=3, seeds=[0, 1]
        )


def test_replicated_mixing_is_block_diagonal_without_a_big_matrix() -> None:
    topo = torus(9)
    comm = ReplicatedCommunicator(SimCommunicator(topo), replicas=3)
    x = torch.randn(27, 5, generator=torch.Generator().manual_seed(0))
    mixed = comm.mix(x, 1)
    w = torch.as_tensor(topo.weights(1).dense())
    for r in range(3):
        torch.testing.assert_close(
            comm.replica_rows(mixed, r), w @ comm.replica_rows(x, r), rtol=0, atol=1e-14
        )
    single = SimCommunicator(topo)
    single.mix(x[:9], 1)
    assert comm.stats.bytes == single.stats.bytes  # one replica's traffic
    mean = comm.all_reduce(x, "mean")
    for r in range(3):
        assert torch.equal(comm.replica_rows(mean, r), comm.replica_rows(x, r).mean(0).expand(9, 5))


def test_centralized_methods_reduce_per_replica() -> None:
    task = LeastSquares(N, dim=3, heterogeneity=1.0)
    algos = [MinibatchSGD(lr=0.05), MinibatchSGD(lr=0.1)]
    _check(algos, [task] * 2, [0, 1], ring(N))
    _check([LocalSGD(lr=0.05, local_steps=3)] * 2, [task] * 2, [0, 1], ring(N))
    _check([AnytimeSGD(lr=0.3 / ROUNDS)] * 2, [task] * 2, [0, 5], ring(N))


@pytest.mark.parametrize(
    "topo",
    [ring(8), torus(9), torus(16), exponential(64), ring(300), complete(7), complete(1024)],
    ids=lambda t: t.name,
)
@pytest.mark.parametrize("width", [1, 3, 20])
@pytest.mark.parametrize("replicas", [2, 5])
def test_replicated_mixing_is_each_single_mix_bit_for_bit(topo, width, replicas) -> None:
    """Dense BLAS products are not column-invariant (nor is bmm the same kernel as mm): a
    stacked ``W @ x`` may differ from a replica's own product in the last bit, and so may a
    product written at an offset not 64-byte aligned (torus(3x3), width 3). The replicated
    mix must not, on any kernel (dense for small graphs, CSR for large)."""
    n = topo.num_nodes
    comm = ReplicatedCommunicator(SimCommunicator(topo), replicas=replicas)
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(n * replicas, width, generator=gen, dtype=torch.float64)
    mixed = comm.mix(x, 1)
    for r in range(replicas):
        alone = SimCommunicator(topo).mix(comm.replica_rows(x, r).contiguous(), 1)
        assert torch.equal(comm.replica_rows(mixed, r), alone), (r, topo.name)


def test_component_tasks_and_output_averages_replica_equals_single_run() -> None:
    tasks = [
        LeastSquares(
            N,
            dim=3,
            heterogeneity=h,
            noise=s,
            seed=k,
            hessian_heterogeneity=0.4,
            batch_size=3,
            components=4 * N,
        )
        for h, s, k in ((0.5, 0.1, 0), (1.0, 0.5, 1), (2.0, 0.2, 2))
    ]
    algorithms = [DATSGD(lr=0.05 / ROUNDS), DATSGD(lr=0.1 / ROUNDS), DATSGD(lr=0.02 / ROUNDS)]
    got = _check(algorithms, tasks, [3, 4, 5], ring(N), averages=("tail", "weighted"))
    assert "eval/subopt@tail" in got[0].records[-1]


def _graphs(n: int) -> list[Any]:
    """Every static graph kind of the scaling studies at ``n`` nodes (kernels: mean for the
    complete graph, dense or CSR for the others, by size)."""
    return [ring(n), torus(n), random_regular(n, 4, seed=0), exponential(n), complete(n)]


@pytest.mark.parametrize("kind", ["dsgd", "dat_sgd", "gradient_tracking", "minibatch_sgd"])
def test_replicas_on_different_graphs_equal_their_single_runs(kind: str) -> None:
    """One batch over every graph of a size, in an interleaved order: each replica's state,
    output and records (per-node evaluation, consensus distance, its own graph's traffic)
    equal its single run on its own graph, bit for bit."""
    cls: Any = ALGORITHMS[kind]
    scale = 1.0 / ROUNDS if cls.horizon_scaled else 1.0
    for n, dim in ((16, 5), (144, 3)):  # 144: CSR products; 16: dense and mean
        ring_, torus_, regular, expo, full = _graphs(n)
        topologies = [ring_, full, torus_, ring_, regular, expo, full, torus_]
        lrs = [0.01, 0.05, 0.03, 0.05, 0.02, 0.04, 0.01, 0.05]
        task = LeastSquares(n, dim=dim, heterogeneity=1.0, hessian_heterogeneity=0.5, batch_size=3)
        got = _check(
            [cls(lr=lr * scale) for lr in lrs],
            [task] * len(lrs),
            [0, 1, 2, 3, 4, 5, 6, 7],
            topologies,
            averages=("tail", "weighted"),
        )
        last = got[0].records[-1]
        assert {"consensus/dist2", "eval/subopt@node_max", "comm/bytes"} <= set(last), sorted(last)
        if kind != "minibatch_sgd":  # gossip: each graph's own traffic, not a shared count
            assert got[0].records[-1]["comm/bytes"] != got[1].records[-1]["comm/bytes"]


def test_mixed_topology_mixing_is_each_single_mix_bit_for_bit() -> None:
    for n in (9, 64, 300):
        graphs = [g for g in _graphs(n) if g.name.split("(")[0] != "torus" or n != 300]
        order = [graphs[i % len(graphs)] for i in (0, 3, 1, 0, 2, 4, 1)]
        comms = {id(g): SimCommunicator(g) for g in graphs}
        comm = MixedReplicatedCommunicator([comms[id(g)] for g in order])
        for width in (1, 3, 20):
            x = torch.randn(n * len(order), width, dtype=torch.float64)
            mixed = comm.mix(x, 1).view(n, len(order), width)
            mean = comm.all_reduce(x, accounted=False).view(n, len(order), width)
            for r, g in enumerate(order):
                rows = x.view(n, len(order), width)[:, r].contiguous()
                assert torch.equal(mixed[:, r], SimCommunicator(g).mix(rows, 1)), (n, g.name)
                assert torch.equal(mean[:, r], rows.mean(0).expand(n, width))
        assert comm.replica_stats(0) is comm.replica_stats(3)  # the same graph: one count
        alone = SimCommunicator(order[0])
        for width in (1, 3, 20):
            alone.mix(torch.zeros(n, width, dtype=torch.float64), 1)
        assert comm.replica_stats(0).bytes == alone.stats.bytes


def test_mixed_topologies_need_static_graphs_of_one_size() -> None:
    with pytest.raises(ValueError, match="same num_nodes"):
        MixedReplicatedCommunicator([SimCommunicator(ring(8)), SimCommunicator(ring(9))])
    with pytest.raises(ValueError, match="time-varying"):
        MixedReplicatedCommunicator(
            [SimCommunicator(ring(8)), SimCommunicator(OnePeerExponential(8))]
        )


MEAN_SIZES = ((2, 1, 3), (4, 100, 22), (64, 200, 7), (1024, 3, 5), (4096, 100, 2))
"""(n, k, R) of the bit-for-bit mean test."""


@pytest.fixture(scope="module")
def complete_graphs() -> dict[int, StaticTopology]:
    """``complete(n)`` for every ``n`` of :data:`MEAN_SIZES`, built once: ``complete(4096)``
    alone takes seconds (8.4 million edges), and both thread counts read the same graphs."""
    return {n: complete(n) for n, _, _ in MEAN_SIZES}


@pytest.mark.parametrize("threads", [1, 2])
def test_replicated_means_are_each_single_mean_bit_for_bit(
    threads: int, complete_graphs: dict[int, StaticTopology]
) -> None:
    """The exact average (W = J) and the mean all-reduce of R replicas reduce one
    (R, n, k) copy at once; every replica's mean equals its single run's, bit for bit."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n, k, r in MEAN_SIZES:
            graph = complete_graphs[n]
            x = torch.randn(
                n * r, k, dtype=torch.float64, generator=torch.Generator().manual_seed(n)
            )
            comm = ReplicatedCommunicator(SimCommunicator(graph), replicas=r)
            mixed, mean = comm.mix(x, 1), comm.all_reduce(x, accounted=False)
            for i in range(r):
                rows = comm.replica_rows(x, i).contiguous()
                assert torch.equal(comm.replica_rows(mixed, i), SimCommunicator(graph).mix(rows, 1))
                assert torch.equal(comm.replica_rows(mean, i), rows.mean(dim=0).expand(n, k))
    finally:
        torch.set_num_threads(saved)
