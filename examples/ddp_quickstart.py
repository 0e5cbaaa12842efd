"""Quick start of decent.DecentralizedDataParallel: a small CNN with BatchNorm and dropout,
DAT-SGD with momentum and weight decay, a warm-up into a cosine schedule, bf16 autocast and
gradient clipping, in a plain training loop. Start it with any of

    python examples/ddp_quickstart.py                                  # one process
    python -m torch.distributed.run --nproc_per_node 4 examples/ddp_quickstart.py
    decent launch --nproc 4 examples/ddp_quickstart.py

(docs/parallel.md shows the same code.)
"""

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import decent
from decent.algorithms import Cosine, Warmup

if not dist.is_initialized():
    if "RANK" in os.environ:  # started by torchrun or `decent launch --nproc N`
        dist.init_process_group("gloo")
    else:  # one process, to try it out
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
rank, world = dist.get_rank(), dist.get_world_size()

net = nn.Sequential(
    nn.Conv1d(1, 8, 5, padding=2),
    nn.BatchNorm1d(8),
    nn.ReLU(),
    nn.Dropout(0.1),
    nn.AdaptiveAvgPool1d(4),
    nn.Flatten(),
    nn.Linear(32, 3),
)
steps = 30
model = decent.DecentralizedDataParallel(
    net,
    algorithm=decent.DATSGD(lr=Warmup(Cosine(0.002, total=steps), steps=5)),
    topology="ring" if world >= 3 else "complete",
    transforms=[decent.momentum(0.9), decent.weight_decay(5e-4)],
)

gen = torch.Generator().manual_seed(rank)  # each rank its own data


def batch(n=32):
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.randn(n, 1, 20, generator=gen) + y[:, None, None].float()
    return x, y


model.train()
for _ in range(steps):
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    model.step()

x, y = batch(256)
with model.averaged() as averaged_net:
    averaged_net.eval()
    accuracy = (averaged_net(x).argmax(1) == y).float().mean().item()
model.train()
print(f"rank {rank}: {model.config}, test accuracy {accuracy:.2f}")
model.close()
dist.barrier()
dist.destroy_process_group()
