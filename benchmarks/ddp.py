"""DecentralizedDataParallel vs torch DistributedDataParallel vs purely local training.

    OMP_NUM_THREADS=1 python -m benchmarks.ddp [--ranks 4 8] [--steps 12] [--quick]

For each model (a ResNet-style CNN, 1.9M parameters, and a small transformer, 0.8M) and
each world size, every variant runs in a fresh gloo group on localhost (one process per rank,
one thread each) for ``--steps`` timed steps after two warm-up steps:

* ``local``: forward, backward, ``torch.optim.SGD`` step; no communication (the floor);
* ``ddp``: ``torch.nn.parallel.DistributedDataParallel`` (bucketed all-reduce overlapped
  with backward) and SGD;
* ``dsgd``, ``dsgd+overlap``: ``DecentralizedDataParallel`` with D-SGD on a ring, without
  and with the one-step-stale exchange (``overlap=True``);
* ``dat_sgd``, ``dat_sgd+overlap``: DAT-SGD on a ring (twice the message: ``[w | x]``),
  without and with overlap.

Reported per model and world size: median seconds per step on rank 0 (the slowest rank's
median would be similar: every step ends in a collective), the ratio to ``local`` and to
``ddp``, and the peak resident memory of rank 0 over ``ddp``'s. All variants of one table
run in the same invocation, one after another, so their ratios are measured side by side;
on a loaded machine rerun it quiet before reading absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from typing import Any

from benchmarks.distributed import spawn

VARIANTS = ("local", "ddp", "dsgd", "dsgd+overlap", "dat_sgd", "dat_sgd+overlap")
MODELS = ("resnet", "transformer")


def _model(kind: str) -> tuple[Any, Any]:
    """The model and a function ``gen -> (inputs, loss_fn)`` of one batch."""
    import torch
    from torch import nn

    if kind == "resnet":

        class Block(nn.Module):
            def __init__(self, c: int) -> None:
                super().__init__()
                self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
                self.b1 = nn.BatchNorm2d(c)
                self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
                self.b2 = nn.BatchNorm2d(c)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                h = torch.relu(self.b1(self.c1(x)))
                return torch.relu(x + self.b2(self.c2(h)))

        net = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            Block(64),
            nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            Block(128),
            nn.Conv2d(128, 256, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            Block(256),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(256, 10),
        )

        def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.randn(8, 3, 16, 16, generator=gen), torch.randint(
                0, 10, (8,), generator=gen
            )

        return net, batch

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(96, 128)
            layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.1, batch_first=True)
            self.body = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
            self.head = nn.Linear(128, 96)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(self.embed(x))).flatten(0, 1)

    def tokens(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        seq = torch.randint(0, 96, (8, 65), generator=gen)
        return seq[:, :-1], seq[:, 1:].reshape(-1)

    return Tiny(), tokens


def _rank(rank: int, world: int, kind: str, variant: str, steps: int) -> tuple[float, float, int]:
    """One rank's median step time, peak RSS (MB) and the model's parameter count."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import decent
    from decent.parallel import DecentralizedDataParallel

    torch.manual_seed(0)
    net, batch = _model(kind)
    params = sum(p.numel() for p in net.parameters())
    step: Any
    model: Any
    if variant in ("local", "ddp"):
        model = net if variant == "local" else torch.nn.parallel.DistributedDataParallel(net)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step() -> None:
            opt.step()

    else:
        algo = decent.DATSGD(lr=0.001) if variant.startswith("dat") else decent.DSGD(lr=0.01)
        model = DecentralizedDataParallel(net, algo, "ring", overlap=variant.endswith("overlap"))
        step = model.step
    gen = torch.Generator().manual_seed(rank)
    times = []
    for i in range(steps + 2):
        x, y = batch(gen)
        dist.barrier()
        t0 = time.perf_counter()
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    if hasattr(model, "close"):
        model.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return statistics.median(times), rss_mb, params


def measure(kind: str, variant: str, world: int, steps: int) -> tuple[float, float, int]:
    """Rank 0's numbers, on ``world`` gloo ranks started by the distributed benchmark's harness."""
    return spawn(_rank, world, kind, variant, steps)[0]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--quick", action="store_true", help="4 ranks, 4 steps, the CNN only")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.quick:
        args.ranks, args.steps, args.models = [4], 4, ["resnet"]
    print("| model | ranks | variant | s/step | x local | x ddp | peak RSS MB | x ddp RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.models:
        for world in args.ranks:
            rows = {v: measure(kind, v, world, args.steps) for v in VARIANTS}
            local, ddp = rows["local"][0], rows["ddp"][0]
            for v, (sec, rss, params) in rows.items():
                print(
                    f"| {kind} ({params / 1e6:.2f}M) | {world} | {v} | {sec:.4f} | "
                    f"{sec / local:.2f} | {sec / ddp:.2f} | {rss:.0f} | {rss / rows['ddp'][1]:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
