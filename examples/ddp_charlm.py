"""A character-level transformer on Python's own source, trained by N ranks with decent.

    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_charlm.py --algorithm dat_sgd
    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_charlm.py --algorithm dsgd
    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_charlm.py --algorithm allreduce
    python -m torch.distributed.run --nproc_per_node 8 examples/ddp_charlm.py --algorithm schedule_free
    decent launch --nproc 8 examples/ddp_charlm.py -- --algorithm dsgd  # the same, decent's launcher

The text ships with every Python: the standard library's top-level ``.py`` files (in
``sysconfig.get_paths()["stdlib"]``, sorted by name; no download), read as bytes (a
256-symbol vocabulary). Every tenth file is held out as the test text; rank ``r`` trains on
the files ``r::world`` of the rest, so the ranks' data differ (one module's style is not
another's). The model is the simulator's :class:`decent.tasks.nets.CharTransformer` (2
layers, width 64, context 64; ``decent.tasks.nets.char_lm`` trains the same model in the
simulator), trained with Adam preconditioning in front of the decentralized update; rank 0
prints the test loss (nats per character) of the exact network average as one JSON line.
The numbers depend on the Python version, whose standard library is the data.
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

import decent
from decent.algorithms import Cosine, Warmup
from decent.tasks.nets import CharTransformer, read_texts, stdlib_sources

ALGORITHMS: dict[str, Callable[[float, int], Any]] = {
    # DAT-SGD's step on w is eta * t: eta = 2 lr / steps makes the average step lr; its
    # default lr 1e-3 was the best of 3e-4 .. 3e-2 on 8 ranks (README)
    "dat_sgd": lambda lr, steps: decent.DATSGD(lr=2 * lr / steps),
    # experimental: gradient at y = (1 - beta) z + beta x (beta = 1 is DAT-SGD); with Adam
    # the simulator's transformer study chose beta = 0.5 (docs/results/deep.md); the same
    # eta = 2 lr / steps, default lr 3e-2 (the best of 1e-3 .. 0.1 on 8 ranks)
    "schedule_free": lambda lr, steps: decent.algorithms.ScheduleFreeDSGD(
        lr=2 * lr / steps, beta=0.5
    ),
    "dsgd": lambda lr, steps: decent.DSGD(lr=Warmup(Cosine(lr, total=steps), 20)),
    "allreduce": lambda lr, steps: decent.MinibatchSGD(lr=Warmup(Cosine(lr, total=steps), 20)),
}


def stdlib_text(max_chars: int | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The standard library's top-level files as byte tensors: (train files, test text)."""
    codes = read_texts(stdlib_sources(), max_chars)
    train = [c for i, c in enumerate(codes) if i % 10 != 0]
    test = torch.cat([c for i, c in enumerate(codes) if i % 10 == 0])
    return train, test


def windows(
    text: torch.Tensor, starts: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``text[s : s + context]`` and targets shifted by one, per start ``s``."""
    idx = starts.unsqueeze(1) + torch.arange(context + 1)
    chunk = text[idx].long()
    return chunk[:, :-1], chunk[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="dat_sgd")
    parser.add_argument("--topology", default="ring")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--lr", type=float, help="default 3e-2; 1e-3 for dat_sgd")
    parser.add_argument("--test-windows", type=int, default=256)
    parser.add_argument("--max-chars", type=int, help="use at most this many characters per file")
    args = parser.parse_args()
    if args.lr is None:
        args.lr = 1e-3 if args.algorithm == "dat_sgd" else 3e-2

    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)

    files, test = stdlib_text(args.max_chars)
    train = torch.cat(files[rank::world])  # this rank's own modules
    span = args.context + 1
    test_starts = torch.linspace(0, len(test) - span, args.test_windows).long()
    x_test, y_test = windows(test, test_starts, args.context)

    torch.manual_seed(0)
    topology = args.topology if world >= 3 else "complete"
    model = decent.DecentralizedDataParallel(
        CharTransformer(context=args.context),
        algorithm=ALGORITHMS[args.algorithm](args.lr, args.steps),
        topology=topology,
        transforms=[decent.adam()],
    )
    gen = torch.Generator().manual_seed(1000 + rank)
    start = time.perf_counter()
    model.train()
    for _ in range(args.steps):
        x, y = windows(
            train, torch.randint(0, len(train) - span, (args.batch,), generator=gen), args.context
        )
        model.zero_grad()
        F.cross_entropy(model(x).flatten(0, 1), y.reshape(-1)).backward()
        model.step()
    with model.averaged() as net:
        net.eval()
        with torch.no_grad():
            loss = F.cross_entropy(net(x_test).flatten(0, 1), y_test.reshape(-1)).item()
    if rank == 0:
        print(
            json.dumps(
                {
                    "example": "charlm",
                    **model.config,
                    "steps": args.steps,
                    "test_loss": round(loss, 4),
                    "bits_per_char": round(loss / 0.6931471805599453, 4),
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
