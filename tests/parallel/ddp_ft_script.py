"""A user's script trained by ``DecentralizedDataParallel`` in fault-tolerant mode; one rank dies.

Imported by ``test_ddp_faults`` (``train`` on the gloo harness, mode passed explicitly) and run
as a script by ``decent launch --nproc 4 ddp_ft_script.py --mode fault_tolerant
--failure-timeout 2 -- VICTIM DIR`` (the mode then comes from the launcher). D-SGD on a ring
of 4, a linear model, heterogeneous targets; the victim SIGKILLs itself before its step
``CRASH_STEP``. Every rank records, per step, its query point before the step, its gradient,
its parameters after and which neighbours' values (of which round) its mix used; the victim
writes its records to ``DIR/victim.json`` just before it dies, so the test can replay every
survivor's every step; run as a script, each survivor writes its own to ``DIR/rank-R.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

STEPS, CRASH_STEP, LR = 10, 4, 0.1


def train(
    rank: int,
    world: int,
    victim: int,
    path: str,
    mode: str | None = None,
    timeout: float | None = None,
    chebyshev: int = 0,
) -> dict[str, Any]:
    import torch
    from torch import nn

    import decent
    from decent.comm import accelerate
    from decent.comm.gossip import GossipCommunicator
    from decent.topology import ring

    f64 = torch.float64
    torch.manual_seed(0)
    net = nn.Linear(3, 2).to(f64)
    comm = None
    if chebyshev:  # K accelerated exchanges a step over the fault-tolerant transport
        comm = accelerate(GossipCommunicator(ring(world), failure_timeout=timeout), chebyshev)
    model = decent.DecentralizedDataParallel(
        net, decent.DSGD(lr=LR), "ring", mode=mode, failure_timeout=timeout, comm=comm
    )
    torch.manual_seed(rank)
    target = torch.randn(2, dtype=f64) + rank  # heterogeneous data

    def flat(tensors: Any) -> list[float]:
        return torch.cat([p.detach().reshape(-1) for p in tensors]).tolist()

    rec: dict[str, Any] = {"before": [], "grad": [], "after": []}
    for t in range(1, STEPS + 1):
        if rank == victim and t == CRASH_STEP:
            with open(os.path.join(path, "victim.json"), "w") as f:
                json.dump(rec, f)
            os.kill(os.getpid(), signal.SIGKILL)
        x = torch.randn(4, 3, dtype=f64)
        model.zero_grad()
        (model(x) - target).square().mean().backward()
        rec["before"].append(flat(model.parameters()))
        rec["grad"].append(flat(p.grad for p in model.parameters()))
        model.step()
        rec["after"].append(flat(model.parameters()))
    with model.averaged() as avg:
        rec["averaged"] = flat(avg.parameters())
    rec["own"] = flat(model.parameters())
    wrapped: Any = model.comm
    transport = wrapped.inner if chebyshev else wrapped
    rec["alive"] = transport.alive_ranks()
    rec["versions"] = [sorted(used.items()) for used in transport.versions]
    rec["step"] = model.step_count
    rec["mode"] = model.config["mode"]
    model.close()
    return rec


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = train(rank, dist.get_world_size(), int(sys.argv[1]), sys.argv[2])
    with open(os.path.join(sys.argv[2], f"rank-{rank}.json"), "w") as f:  # not stdout:
        json.dump(out, f)  # the ranks share it, and a long line is not written atomically
    dist.destroy_process_group()
