"""A CNN on MNIST-1D trained by N ranks with DecentralizedDataParallel (or all-reduce).

    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_mnist1d.py --algorithm dat_sgd
    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_mnist1d.py --algorithm dsgd
    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_mnist1d.py --algorithm allreduce
    decent launch --nproc 8 examples/ddp_mnist1d.py -- --algorithm dsgd  # the same, decent's launcher

MNIST-1D is generated procedurally by ``mnist1d.data.make_dataset`` (no download). Each rank
trains on its own shard (samples ``rank::world``) with momentum and weight decay; the test
accuracy of the exact network average is printed by rank 0 as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

import decent
from decent.algorithms import Cosine, Warmup

ALGORITHMS: dict[str, Callable[[float, int], Any]] = {
    # the step on w is eta * t: eta = 20 lr / steps makes the last step 20 lr (tune eta * T);
    # run without momentum (--momentum 0 is its default): with it, it diverged here
    "dat_sgd": lambda lr, steps: decent.DATSGD(lr=Warmup(20 * lr / steps, 20)),
    "dsgd": lambda lr, steps: decent.DSGD(lr=Warmup(Cosine(lr, total=steps), 20)),
    "allreduce": lambda lr, steps: decent.MinibatchSGD(lr=Warmup(Cosine(lr, total=steps), 20)),
}


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 32, 5, padding=2),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Conv1d(32, 32, 5, padding=2, stride=2),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Conv1d(32, 32, 5, padding=2, stride=2),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Flatten(),
        nn.Linear(32 * 10, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="dat_sgd")
    parser.add_argument("--topology", default="ring")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--momentum", type=float, help="default 0.9; 0 for dat_sgd")
    args = parser.parse_args()
    if args.momentum is None:
        args.momentum = 0.0 if args.algorithm == "dat_sgd" else 0.9

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)

    spec = get_dataset_args()
    spec.num_samples = args.samples
    data = make_dataset(spec)  # procedural, the same on every rank (seed 42)
    x = torch.tensor(data["x"], dtype=torch.float32)[rank::world]
    y = torch.tensor(data["y"], dtype=torch.int64)[rank::world]
    x_test = torch.tensor(data["x_test"], dtype=torch.float32)
    y_test = torch.tensor(data["y_test"], dtype=torch.int64)

    torch.manual_seed(0)
    topology = args.topology if world >= 3 else "complete"
    model = decent.DecentralizedDataParallel(
        cnn(),
        algorithm=ALGORITHMS[args.algorithm](args.lr, args.steps),
        topology=topology,
        transforms=[decent.weight_decay(5e-4)]
        + ([decent.momentum(args.momentum)] if args.momentum > 0 else []),
    )
    gen = torch.Generator().manual_seed(1000 + rank)
    start = time.perf_counter()
    model.train()
    for _ in range(args.steps):
        idx = torch.randint(0, len(y), (args.batch,), generator=gen)
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        model.step()
    with model.averaged() as net:
        net.eval()
        with torch.no_grad():
            logits = net(x_test)
        accuracy = (logits.argmax(1) == y_test).float().mean().item()
        loss = F.cross_entropy(logits, y_test).item()
    if rank == 0:
        print(
            json.dumps(
                {
                    "example": "mnist1d",
                    **model.config,
                    "steps": args.steps,
                    "test_accuracy": round(accuracy, 4),
                    "test_loss": round(loss, 4),
                    "seconds": round(time.perf_counter() - start, 1),
                }
            ),
            flush=True,
        )
    model.close()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
