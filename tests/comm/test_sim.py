"""The simulator communicator: kernels agree with dense W @ X, accounting is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decent.comm import CommStats, SimCommunicator
from decent.topology import complete, erdos_renyi, exponential, random_regular, ring, torus


@pytest.mark.parametrize(
    "topo",
    [ring(10), torus(16), exponential(12), complete(7), erdos_renyi(20, 0.3, seed=1)],
    ids=lambda t: t.name,
)
@pytest.mark.parametrize("kernel", ["auto", "dense", "sparse"])
def test_kernels_equal_dense_reference(topo, kernel):
    comm = SimCommunicator(topo, kernel=kernel)
    x = torch.randn(topo.num_nodes, 5, generator=torch.Generator().manual_seed(0))
    ref = torch.as_tensor(topo.weights(1).dense() @ x.numpy())
    torch.testing.assert_close(comm.mix(x, 1), ref, rtol=0, atol=1e-14)


def test_mean_kernel_for_complete_graph_and_its_guard():
    x = torch.randn(8, 3)
    comm = SimCommunicator(complete(8))
    torch.testing.assert_close(comm.mix(x, 1), x.mean(0).expand(8, 3), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="W = J"):
        SimCommunicator(ring(8), kernel="mean").mix(x, 1)


def test_kernel_argument_is_validated():
    with pytest.raises(ValueError, match="kernel must be one of"):
        SimCommunicator(ring(4), kernel="fast")  # type: ignore[arg-type]


def test_mix_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(num_nodes, k\) = \(5, k\)"):
        SimCommunicator(ring(5)).mix(torch.zeros(4, 2), 1)


def test_accounting_counts_directed_edges_and_payload():
    n, d = 12, 9
    comm = SimCommunicator(ring(n))
    comm.mix(torch.zeros(n, d), 1)
    comm.mix(torch.zeros(n, 2 * d), 2)
    # a ring: every node sends to 2 neighbours; 8 bytes per float64 value
    assert comm.stats.messages == 2 * 2 * n
    assert comm.stats.bytes == 2 * n * 8 * (d + 2 * d)
    np.testing.assert_array_equal(comm.stats.bytes_per_node, np.full(n, 2 * 8 * 3 * d))
    assert comm.stats.rounds == 2


def test_all_reduce_ops_and_ring_all_reduce_accounting():
    x = torch.tensor([[1.0, 5.0], [3.0, -1.0], [2.0, 2.0], [0.0, 0.0]])
    comm = SimCommunicator(ring(4))
    torch.testing.assert_close(comm.all_reduce(x, "mean"), torch.tensor([1.5, 1.5]))
    torch.testing.assert_close(comm.all_reduce(x, "sum", accounted=False), torch.tensor([6.0, 6.0]))
    torch.testing.assert_close(
        comm.all_reduce(x, "min", accounted=False), torch.tensor([0.0, -1.0])
    )
    torch.testing.assert_close(comm.all_reduce(x, "max", accounted=False), torch.tensor([3.0, 5.0]))
    # one accounted ring all-reduce of 16 bytes among 4 nodes: 2 * 3 chunks of 4 bytes each
    assert comm.stats.bytes_per_node.tolist() == [24, 24, 24, 24]
    assert comm.stats.rounds == 1
    with pytest.raises(ValueError, match="op must be one of"):
        comm.all_reduce(x, "prod")  # type: ignore[arg-type]


def test_comm_stats_summary_names():
    s = CommStats(num_nodes=3)
    s.add_gossip(np.array([1, 2, 0]), 10)
    assert s.summary() == {
        "comm/messages": 3.0,
        "comm/bytes": 30.0,
        "comm/bytes_per_node_mean": 10.0,
        "comm/bytes_per_node_max": 20.0,
        "comm/rounds": 1.0,
    }


@pytest.mark.parametrize(
    "topo",
    [ring(130), torus(256), exponential(200), random_regular(300, 4, seed=0)],
    ids=lambda t: t.name,
)
@pytest.mark.parametrize("width", [1, 5, 20, 200])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_replicas_through_one_kron_product_match_each_replica_alone(topo, width, dtype):
    """Replicas mixed by one CSR product of W ⊗ I_R give each replica's own product's bits."""
    from decent.comm.sim import ReplicatedCommunicator

    replicas, n = 3, topo.num_nodes
    gen = torch.Generator().manual_seed(width)
    x = torch.randn(n * replicas, width, dtype=dtype, generator=gen)
    got = ReplicatedCommunicator(SimCommunicator(topo), replicas).mix(x, 1).view(n, replicas, -1)
    for r in range(replicas):
        alone = SimCommunicator(topo).mix(x.view(n, replicas, -1)[:, r].contiguous(), 1)
        assert torch.equal(got[:, r], alone)


def test_delayed_communicator_closes_the_one_it_wraps() -> None:
    from decent.comm import DelayedCommunicator

    closed: list[bool] = []

    class Closing(SimCommunicator):
        def close(self) -> None:
            closed.append(True)

    c = DelayedCommunicator(Closing(ring(4)), delay=1)
    c.mix(torch.ones(4, 2, dtype=torch.float64), 1)
    c.close()
    assert closed == [True]
