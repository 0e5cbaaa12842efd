"""Smoke test of ``python -m benchmarks.simulator`` and the per-node baseline's math.

Timings are never asserted: only that the command runs end to end on a tiny configuration,
prints every expected row, and updates its section of the doc without touching others.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks package lives at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import simulator as bench  # noqa: E402


def test_quick_command_prints_every_row(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Simulator\n\nHand-written notes.\n\n## Distributed\n\nKeep.\n"
    )
    args = ["--quick", "--sizes", "9", "--gossip-nodes", "9", "--reps", "1", "--no-profile"]
    cmd = [sys.executable, "-m", "benchmarks.simulator", *args, "--write", "--out", str(doc)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for header in ("### Targets", "### Throughput", "### FLOP efficiency", "### Gossip share"):
        assert header in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for workload in bench.WORKLOADS.values():
        assert any(r.startswith(f"| {workload.label} | 9 |") for r in rows), workload.label
        for topology in ("ring(9)", "torus(3x3)", "exponential(9)"):
            for algorithm in ("D-SGD", "DAT-SGD"):
                prefix = f"| {workload.label} | {topology} |"
                assert any(r.startswith(prefix) and f"| {algorithm} |" in r for r in rows)
    assert any(r.startswith("| 9 | dsgd_eager |") for r in rows)  # FLOP efficiency row
    assert any(r.startswith("| gossip share, M=9") for r in rows)
    assert "load average" in out
    text = doc.read_text()
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    assert "Hand-written notes." in text and "## Distributed\n\nKeep." in text
    assert text.index("## Simulator") < text.index(bench.BEGIN) < text.index("## Distributed")


def test_write_doc_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "b.md"
    bench.write_doc(doc, "first\n")
    bench.write_doc(doc, "second\n")
    text = doc.read_text()
    assert "second" in text and "first" not in text and text.count("## Simulator") == 1


def test_per_node_loop_is_dsgd_atc() -> None:
    """One nn.Module + torch.optim.SGD per node, then W @ X, equals the simulator's D-SGD."""
    m = 5
    workload = bench.WORKLOADS["digits_mlp"]
    data = workload.data().to(dtype=torch.float64)
    part = bench.shards(len(data), m)
    from decent.tasks import mlp
    from decent.topology import ring

    task = mlp(data, m, part, hidden=(64,), batch_size=bench.BATCH)

    def batches(node: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = task.sample(torch.tensor([node]), t, bench.SEED)
        return x[0], y[0]

    loop = bench.LoopRunner(
        workload, task.init_params(bench.SEED), part, ring(m), batches=batches, dtype=torch.float64
    )
    from decent.algorithms import DSGD

    sim = bench.SimRunner(task, DSGD(lr=bench.LR), ring(m), compile=False)
    for _ in range(2):
        loop.step()
        sim.step()
    torch.testing.assert_close(loop.stacked(), sim.state.x, rtol=1e-12, atol=1e-12)


def test_flop_count_matches_hand_count() -> None:
    required, convention = bench.WORKLOADS["mlp784"].flops_per_node_step(32)
    assert required == 2 * 32 * (2 * (784 * 128 + 128 * 10) + 128 * 10)
    assert convention == 6 * 32 * (784 * 128 + 128 * 10)
    assert bench.WORKLOADS["mlp784"].dim == 784 * 128 + 128 + 128 * 10 + 10
