"""Smoke test of ``python -m benchmarks.modules`` and its FLOP count (no timing asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks package lives at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import modules as bench  # noqa: E402


def test_flops_of_an_mlp_node_step_are_its_products() -> None:
    """Forward and weight gradients 2 B (784 x 128 + 128 x 10) each, plus the second
    layer's input gradient 2 B x 128 x 10 (the first layer's input needs none)."""
    torch.manual_seed(0)
    x, y = torch.randn(bench.BATCH, 784), torch.randint(0, 10, (bench.BATCH,))
    b = bench.BATCH
    expected = 2 * b * (2 * (784 * 128 + 128 * 10) + 128 * 10)
    assert bench.node_step_flops(bench._mlp(), x, y) == expected


def test_flops_of_the_cnn_node_step_are_its_products() -> None:
    """Each convolution's forward and weight gradient 2 B C' C k L', the input gradient of
    all but the first; the head's three products 2 B x 16 x 10."""
    b = bench.BATCH
    x, y = torch.randn(b, 40), torch.randint(0, 10, (b,))
    conv = [2 * b * 16 * 1 * 5 * 40, 2 * b * 16 * 80 * 20, 2 * b * 16 * 80 * 10]
    expected = 2 * sum(conv) + sum(conv[1:]) + 3 * 2 * b * 16 * 10
    assert bench.node_step_flops(bench._cnn(), x, y) == expected


def test_a_tiny_case_runs_every_path() -> None:
    torch.manual_seed(0)
    rows = {
        "oracle (batched closed form)",
        "vmap(grad(loss)) (autograd=True)",
        "its products alone, as bmm",
    }
    out = bench.case("MLP", bench._mlp(), 784, m=2, blocks=1, reps=1)
    assert set(out["rows"]) == rows
    assert all(steps > 0 and 0 < frac for steps, _, frac in out["rows"].values())
    cnn = bench.case("CNN", bench._cnn(), 40, m=2, blocks=1, reps=1)
    assert set(cnn["rows"]) == rows | {"torch's grouped convolution (oneDNN)"}


def test_the_grouped_convolution_baseline_is_every_nodes_gradient() -> None:
    """The baseline the CNN's closed form is timed against computes the same thing: each
    node's minibatch gradient, against ``vmap(grad(loss))`` in float64."""
    m = 3
    data = bench.random_classification(256, 40, 10, seed=1).to(dtype=torch.float64)
    task = bench.ModuleTask(bench._cnn(), data, bench.iid(data.labels, m, seed=0), batch_size=8)
    torch.manual_seed(1)
    params = task.init_params(0).expand(m, -1) + 0.1 * torch.randn(m, task.dim, dtype=torch.float64)
    batch = task.sample(torch.arange(m), 1, 0)
    expected, _ = bench.vmap(bench.grad_and_value(task.loss))(params, batch)
    got = bench.grouped_conv(task)(params, batch)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
