"""The vmapped gradient path of ModuleTask against the machine's ``bmm`` ceiling, in one run.

Run from the repository root, in the project's virtual environment::

    python -m benchmarks.modules                 # M = 64, ~1 min on a quiet machine
    python -m benchmarks.modules --nodes 64 256  # more values of M
    python -m benchmarks.modules --quick         # smoke run

What it measures (one thread, float32, batch 32 per node, M nodes; every rate is the median
of timed blocks, and the variants of a row are timed in turn, block after block, so drift in
the machine's load hits them alike; the load average is printed with the table):

* **ceiling**: ``torch.bmm`` of 8 pairs of 512 x 512 matrices, the machine's batched-matmul
  rate on shapes that suit it.
* **own shapes**: the model's forward and backward products alone, as ``bmm`` on its
  per-node shapes ((32 x 784) x (784 x 128) for the MLP's first layer, batched M times):
  what the ceiling is for products this small.
* **gradient oracle**: ``GradientOracle(task)(params, batch)``, all M nodes' gradients and
  losses in one call, the way the round loop calls it (for the MLP the batched closed form
  ``ModuleTask._mlp_grad_and_loss``; for the CNN ``vmap(grad(loss))``), and the previous
  path for every module, ``vmap(grad(task.loss))`` on the flat ``(d,)`` vector.

FLOPs per node-step are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
node's forward and backward through the real module (the matmuls and convolutions; the
elementwise work is not counted), so "of ceiling" is achieved FLOP/s over ceiling FLOP/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap
from torch.utils.flop_counter import FlopCounterMode

from decent.engine import GradientOracle
from decent.tasks import ModuleTask, iid, random_classification

BATCH = 32


def _time(fn: Callable[[], Any], reps: int) -> float:
    """CPU seconds of this process per call: the best of ``reps`` calls (after a warm-up).

    Process CPU time, not wall time: on a machine shared with other work, wall time counts
    the slices the scheduler gives to others (one thread, so CPU time is the work done);
    contention for caches and memory bandwidth still shows.
    """
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def interleaved(fns: dict[str, Callable[[], Any]], blocks: int, reps: int) -> dict[str, float]:
    """Seconds per call of each ``fn``, timed in turn ``blocks`` times; the medians."""
    seen: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            seen[k].append(_time(fn, reps))
    return {k: statistics.median(v) for k, v in seen.items()}


def node_step_flops(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one node's forward and backward (matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(module(x), y).backward()
    module.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


class _CNN(nn.Module):
    """A 3-layer Conv1d + GroupNorm CNN on 40 features, as issue 29's MNIST-1D pilot."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(1, 32, 5, padding=2),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1, stride=2),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=1, stride=2),
            nn.GroupNorm(4, 32),
            nn.ReLU(),
        )
        self.head = nn.Linear(32 * 10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x.unsqueeze(-2))
        return self.head(h.flatten(-2))


def own_shapes(module: nn.Module, m: int) -> Callable[[], Any] | None:
    """The MLP's products alone, as bmm on its per-node shapes (None for other models)."""
    if any(isinstance(s, nn.modules.conv._ConvNd) for s in module.modules()):
        return None
    linears = [s for s in module.modules() if isinstance(s, nn.Linear)]
    mats = []
    for i, lin in enumerate(linears):
        k, n = lin.in_features, lin.out_features
        x = torch.randn(m, BATCH, k)
        w = torch.randn(m, k, n)
        dz = torch.randn(m, BATCH, n)
        mats.append((x, w, dz, i > 0))

    def run() -> None:
        for x, w, dz, input_grad in mats:
            torch.bmm(x, w)  # forward
            torch.bmm(x.transpose(1, 2), dz)  # weight gradient
            if input_grad:
                torch.bmm(dz, w.transpose(1, 2))  # input gradient

    return run


def case(name: str, module: nn.Module, features: int, m: int, blocks: int, reps: int) -> dict:
    data = random_classification(max(2048, 4 * m * BATCH), features, 10, seed=0)
    data = data.to(dtype=torch.float32)
    task = ModuleTask(module, data, iid(data.labels, m, seed=0), batch_size=BATCH)
    oracle = GradientOracle(task)
    flat = vmap(grad_and_value(task.loss))
    params = task.init_params(0).expand(m, -1).clone()
    batch = task.sample(torch.arange(m), 1, 0)
    flops = node_step_flops(task.module, batch[0][0], batch[1][0]) * m
    a, b = torch.randn(8, 512, 512), torch.randn(8, 512, 512)
    fns: dict[str, Callable[[], Any]] = {
        "ceiling": lambda: torch.bmm(a, b),
        "oracle": lambda: oracle(params, batch),
        "vmap(grad(loss)) (the previous path)": lambda: flat(params, batch),
    }
    shapes = own_shapes(module, m)
    if shapes is not None:
        fns["own shapes (bmm alone)"] = shapes
    secs = interleaved(fns, blocks, reps)
    ceiling = 2 * 8 * 512**3 / secs.pop("ceiling")
    rows = {}
    for key, s in secs.items():
        rate = flops / s
        rows[key] = (m / s, rate / 1e9, rate / ceiling)
    return {
        "name": name,
        "m": m,
        "d": task.dim,
        "flops": flops / m,
        "ceiling": ceiling,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (~15 s)")
    parser.add_argument(
        "--nodes", type=int, nargs="+", default=[64], help="values of M (default: 64)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    blocks, reps = (1, 2) if args.quick else (3, 3)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, 1 thread, float32, batch {BATCH}; load average {load:.1f}")
    sizes = args.nodes
    results = []
    for m in sizes:
        torch.manual_seed(0)
        results.append(case("MLP 784-128-10", _mlp(), 784, m, blocks, reps))
        torch.manual_seed(0)
        results.append(case("CNN Conv1d+GroupNorm (40 features)", _CNN(), 40, m, blocks, reps))
    print()
    print(
        "| model | M | MFLOP per node-step | bmm ceiling GFLOP/s | path | node-steps/s | GFLOP/s | of ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for key, (steps, gf, frac) in r["rows"].items():
            print(
                f"| {r['name']} | {r['m']} | {r['flops'] / 1e6:.1f} | {r['ceiling'] / 1e9:.1f} | "
                f"{key} | {steps:,.0f} | {gf:.1f} | {100 * frac:.0f}% |"
            )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
