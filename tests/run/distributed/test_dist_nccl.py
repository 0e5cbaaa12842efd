"""The same DistCommunicator code path on CUDA tensors with NCCL (skipped without CUDA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from dist_cases import StaticTopology, initial_values, random_w
from dist_harness import run_group

pytestmark = [
    pytest.mark.dist,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and NCCL"),
]


def _nccl_worker(rank: int, world_size: int, n: int) -> dict[str, Any]:
    from decent.comm.dist import DistCommunicator

    device = torch.device("cuda", rank)
    topo = StaticTopology(random_w(n, 9))
    comm = DistCommunicator(topo, nodes_per_rank=n // world_size, device=device)
    x = torch.as_tensor(initial_values(n, 4)[comm.node_ids.numpy()], device=device)
    rows = [comm.mix(x, 1).cpu().numpy()]
    mean = comm.all_reduce(x, "mean").cpu().numpy()
    return {"node_ids": comm.node_ids.tolist(), "rows": rows, "mean": mean}


def test_nccl_mix_and_all_reduce_match_dense() -> None:
    # NCCL refuses two ranks on one GPU, so use as many ranks as GPUs (at most 2)
    world = min(2, torch.cuda.device_count())
    n = 3 * world
    results = run_group(_nccl_worker, world, n, backend="nccl")
    x = initial_values(n, 4)
    want = random_w(n, 9) @ x
    for r in results:
        np.testing.assert_allclose(r["rows"][0], want[r["node_ids"]], rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["mean"], x.mean(0), rtol=0, atol=1e-12)
