"""ModuleTask's gradient paths (batched closed form, vmap) against the machine's ``bmm``
ceiling, in one run.

Run from the repository root, in the project's virtual environment::

    python -m benchmarks.modules                 # M = 64, ~1 min on a quiet machine
    python -m benchmarks.modules --nodes 64 256  # more values of M
    python -m benchmarks.modules --quick         # smoke run

What it measures (one thread, float32, batch 32 per node, M nodes; every rate is the median
of timed blocks, and the variants of a row are timed in turn, block after block, so drift in
the machine's load hits them alike; the load average is printed with the table):

* **ceiling**: ``torch.bmm`` of 8 pairs of 512 x 512 matrices, the machine's batched-matmul
  rate on shapes that suit it.
* **oracle (batched closed form)**: ``GradientOracle(task)(params, batch)``, all M nodes'
  gradients and losses in one call, the way the round loop calls it: the MLP's
  ``ModuleTask._mlp_grad_and_loss`` and the CNN's ``ModuleTask._cnn_grad_and_loss``
  (the deep study's ``ConvNet1d``: 16 channels, GroupNorm(4), 40 features; and with 32
  channels, the width of issue 29's pilot, 4x the FLOPs per node-step).
* **vmap(grad(loss)) (autograd=True)**: the path without the closed forms,
  ``vmap(grad(task.loss))`` on the flat ``(d,)`` vector (``GradientOracle(task,
  autograd=True)``, and ``cnn1d(autograd=True)``).
* **torch's grouped convolution (oneDNN)**: the best baseline a user would write without a
  closed form: the M nodes as the groups of one ``conv1d`` (input ``(B, M C, L)``, weights
  ``(M C', C, k)``, ``groups=M``), GroupNorm with ``M G`` groups (each node's groups), and
  the backward through ``aten.convolution_backward`` and ``aten.native_group_norm_backward``
  (no autograd tape); its gradients are checked against the oracle's before timing.
* **its products alone, as bmm**: the model's forward and backward products alone, as
  ``bmm`` on its per-node shapes ((32 x 784) x (784 x 128) for the MLP's first layer,
  (16 x 80) x (80 x 32 * 20) for the CNN's second convolution), batched M times: what the
  ceiling is for products this small.

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
from decent.tasks.nets import ConvNet1d

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


def _cnn(channels: int = 16) -> nn.Module:
    """The deep study's MNIST-1D CNN: three Conv1d(k=5, padding=2) + GroupNorm(4) + ReLU
    blocks of 16 channels (strides 1, 2, 2), mean pooling, a linear head; with 32 channels,
    issue 29's pilot CNN (about 30 MFLOP per node-step)."""
    return ConvNet1d(channels, 4, 10)


def grouped_conv(task: ModuleTask) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """Every node's gradient of a :class:`ConvNet1d` through torch's own kernels, the nodes
    as the groups of one convolution per layer (see the module docstring); the task's loss
    (its residual in the logits from ``ModuleTask._losses_and_residual``, as the closed form
    takes it), no ridge. Returns ``(m, d)`` gradients."""
    module = task.module
    assert isinstance(module, ConvNet1d) and task.l2 == 0
    aten = torch.ops.aten
    at = task._offsets()
    layers = list(module.features.named_children())

    def rows(params: torch.Tensor, name: str, numel: int) -> torch.Tensor:
        return params[:, at[name] : at[name] + numel]

    def run(params: torch.Tensor, batch: Any) -> torch.Tensor:
        x = batch[0]
        m, size = x.shape[0], x.shape[1]
        grads = torch.empty_like(params)
        h = x.transpose(0, 1).contiguous()  # (B, m, L): node i's channels are group i
        saved: list[Any] = []
        for name, sub in layers:
            if isinstance(sub, nn.Conv1d):
                out, inp, k = sub.weight.shape
                w = rows(params, f"features.{name}.weight", out * inp * k).reshape(m * out, inp, k)
                b = rows(params, f"features.{name}.bias", out).reshape(m * out)
                stride, pad = [int(sub.stride[0])], [int(sub.padding[0])]  # type: ignore[index]
                saved.append((h, w, stride, pad))
                h = aten.convolution(h, w, b, stride, pad, [1], False, [0], m)
            elif isinstance(sub, nn.GroupNorm):
                c = sub.num_channels
                gamma = rows(params, f"features.{name}.weight", c).reshape(m * c)
                beta = rows(params, f"features.{name}.bias", c).reshape(m * c)
                groups, length = m * sub.num_groups, h.shape[2]
                out_, mean, rstd = aten.native_group_norm(
                    h, gamma, beta, size, m * c, length, groups, sub.eps
                )
                saved.append((h, mean, rstd, gamma, groups))
                h = out_
            else:
                h = torch.relu(h)
                saved.append(h)
        length, width = h.shape[2], h.shape[1] // m
        pooled = h.mean(dim=2).view(size, m, width).transpose(0, 1)  # (m, B, C)
        classes = module.head.out_features
        head = rows(params, "head.weight", classes * width).view(m, classes, width)
        hb = rows(params, "head.bias", classes).view(m, 1, classes)
        logits = torch.baddbmm(hb, pooled, head.transpose(1, 2))
        _, delta = task._losses_and_residual(logits, batch)  # the loss's gradient in logits
        torch.bmm(
            delta.transpose(1, 2),
            pooled,
            out=rows(grads, "head.weight", classes * width).view(m, classes, width),
        )
        torch.sum(delta, dim=1, out=rows(grads, "head.bias", classes))
        dh = torch.bmm(delta, head).div_(length).transpose(0, 1).reshape(size, m * width, 1)
        dh = dh.expand(size, m * width, length)
        for i in range(len(layers) - 1, -1, -1):
            name, sub = layers[i]
            if isinstance(sub, nn.Conv1d):
                h, w, stride, pad = saved[i]
                out = sub.out_channels
                dx, dw, db = aten.convolution_backward(
                    dh, h, w, [m * out], stride, pad, [1], False, [0], m, [i > 0, True, True]
                )
                rows(grads, f"features.{name}.weight", w.numel() // m).copy_(dw.view(m, -1))
                rows(grads, f"features.{name}.bias", out).copy_(db.view(m, out))
                dh = dx
            elif isinstance(sub, nn.GroupNorm):
                h, mean, rstd, gamma, groups = saved[i]
                c = sub.num_channels
                dx, dg, db = aten.native_group_norm_backward(
                    dh, h, mean, rstd, gamma, size, m * c, h.shape[2], groups, [True, True, True]
                )
                rows(grads, f"features.{name}.weight", c).copy_(dg.view(m, c))
                rows(grads, f"features.{name}.bias", c).copy_(db.view(m, c))
                dh = dx
            else:
                dh = aten.threshold_backward(dh, saved[i], 0.0)
        return grads

    return run


def own_shapes(module: nn.Module, m: int, features: int) -> Callable[[], Any]:
    """The model's products alone, as bmm on its per-node shapes, batched M times: for the
    MLP ``(32 x 784) x (784 x 128)`` and the like; for the CNN each convolution's
    ``(C' x C k) x (C k x 32 L')`` forward, weight-gradient and input-gradient products (no
    input gradient for the first layer) and the head's."""
    mats = []  # (left, right) operand pairs
    if isinstance(module, ConvNet1d):
        length = features
        convs = [s for s in module.features if isinstance(s, nn.Conv1d)]
        for i, conv in enumerate(convs):
            (k,), (s,), (p,) = conv.kernel_size, conv.stride, tuple(map(int, conv.padding))
            length = (length + 2 * p - k) // s + 1
            rows, cols = conv.out_channels, conv.in_channels * k
            w, x = torch.randn(m, rows, cols), torch.randn(m, cols, BATCH * length)
            dz = torch.randn(m, rows, BATCH * length)
            mats += [(w, x), (dz, x.transpose(1, 2))]
            if i > 0:
                mats.append((w.transpose(1, 2), dz))
        head = module.head
        w, x = (
            torch.randn(m, head.out_features, head.in_features),
            torch.randn(m, BATCH, head.in_features),
        )
        dz = torch.randn(m, BATCH, head.out_features)
        mats += [(x, w.transpose(1, 2)), (dz.transpose(1, 2), x), (dz, w)]
    else:
        linears = [s for s in module.modules() if isinstance(s, nn.Linear)]
        for i, lin in enumerate(linears):
            k, n = lin.in_features, lin.out_features
            x, w = torch.randn(m, BATCH, k), torch.randn(m, k, n)
            dz = torch.randn(m, BATCH, n)
            mats += [(x, w), (x.transpose(1, 2), dz)]  # forward, weight gradient
            if i > 0:
                mats.append((dz, w.transpose(1, 2)))  # input gradient

    def run() -> None:
        for left, right in mats:
            torch.bmm(left, right)

    return run


def case(name: str, module: nn.Module, features: int, m: int, blocks: int, reps: int) -> dict:
    data = random_classification(max(2048, 4 * m * BATCH), features, 10, seed=0)
    data = data.to(dtype=torch.float32)
    task = ModuleTask(module, data, iid(data.labels, m, seed=0), batch_size=BATCH)
    oracle = GradientOracle(task)
    assert oracle.closed_form, f"{name}: expected the batched closed form"
    flat = vmap(grad_and_value(task.loss))
    params = task.init_params(0).expand(m, -1).clone()
    batch = task.sample(torch.arange(m), 1, 0)
    flops = node_step_flops(task.module, batch[0][0], batch[1][0]) * m
    a, b = torch.randn(8, 512, 512), torch.randn(8, 512, 512)
    fns: dict[str, Callable[[], Any]] = {
        "ceiling": lambda: torch.bmm(a, b),
        "oracle (batched closed form)": lambda: oracle(params, batch),
        "vmap(grad(loss)) (autograd=True)": lambda: flat(params, batch),
        "its products alone, as bmm": own_shapes(task.module, m, features),
    }
    if isinstance(task.module, ConvNet1d):
        baseline = grouped_conv(task)
        mine = oracle(params, batch)[0]
        theirs = baseline(params, batch)
        # oneDNN's float32 convolutions are the less accurate ones (3e-5 against float64 at
        # 64 channels, where the closed form is within 1e-7), so the bound is relative
        bound = 1e-4 * float(mine.abs().max())
        assert torch.allclose(theirs, mine, rtol=1e-3, atol=bound), "grouped conv: wrong gradients"
        fns["torch's grouped convolution (oneDNN)"] = lambda: baseline(params, batch)
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
        results.append(case("CNN ConvNet1d 16 ch (40 features)", _cnn(), 40, m, blocks, reps))
        torch.manual_seed(0)
        results.append(case("CNN ConvNet1d 32 ch (the pilot's)", _cnn(32), 40, m, blocks, reps))
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
