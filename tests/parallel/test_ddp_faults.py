"""A killed rank's neighbours continue: the wrapper on the fault-tolerant gossip transport.

4 gloo ranks on a ring train D-SGD through ``DecentralizedDataParallel(...,
comm=GossipCommunicator(ring(4), failure_timeout=...))``; the victim SIGKILLs itself before
its step ``CRASH_STEP``. The survivors detect it, drop its edges and finish every step; their
``averaged()`` is one network average over the survivors, the same on each of them.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np
import pytest
from dist_harness import run_group

pytestmark = pytest.mark.dist

N = 4
STEPS = 10
CRASH_STEP = 4
TIMEOUT_S = 2.0


def _worker(rank: int, world: int, victim: int) -> dict[str, Any]:
    import torch
    from torch import nn

    import decent
    from decent.comm.gossip import GossipCommunicator
    from decent.topology import ring

    torch.manual_seed(0)
    net = nn.Linear(3, 2).to(torch.float64)
    comm = GossipCommunicator(ring(world), failure_timeout=TIMEOUT_S)
    model = decent.DecentralizedDataParallel(net, decent.DSGD(lr=0.1), comm=comm)
    torch.manual_seed(rank)
    target = torch.randn(2, dtype=torch.float64) + rank  # heterogeneous data
    for t in range(1, STEPS + 1):
        if rank == victim and t == CRASH_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        x = torch.randn(4, 3, dtype=torch.float64)
        model.zero_grad()
        (model(x) - target).square().mean().backward()
        model.step()
    with model.averaged() as avg:
        averaged = [p.detach().clone().numpy() for p in avg.parameters()]
    own = [p.detach().clone().numpy() for p in model.parameters()]
    alive = comm.alive_ranks()
    model.close()
    return {"step": model.step_count, "averaged": averaged, "own": own, "alive": alive}


@pytest.mark.parametrize("victim", range(N))
def test_survivors_of_a_killed_rank_finish(victim: int) -> None:
    results = run_group(_worker, N, victim, may_die=[victim], timeout=120)
    assert results[victim] is None
    survivors = [r for i, r in enumerate(results) if i != victim]
    for r in survivors:
        assert r["step"] == STEPS
        assert sorted(r["alive"]) == [i for i in range(N) if i != victim]
        assert all(np.isfinite(p).all() for p in r["own"])
        for a, b in zip(r["averaged"], survivors[0]["averaged"], strict=True):
            np.testing.assert_array_equal(a, b)
    # the average is of the survivors' own parameters (the dead rank's are not in it)
    for k in range(len(survivors[0]["own"])):
        mean = np.mean([r["own"][k] for r in survivors], axis=0)
        np.testing.assert_allclose(survivors[0]["averaged"][k], mean, rtol=0, atol=1e-12)
