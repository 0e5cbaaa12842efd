"""Parts of ``python -m benchmarks.engine`` that are not timings: the targets' verdicts, the
roofline counts, and the busy neighbour it starts and stops (timings are never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the benchmarks package lives at the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks import engine as bench  # noqa: E402


def test_targets_table_gives_each_target_its_number_and_verdict() -> None:
    results = {
        "ls D-SGD float32 vs loop": 1.2,
        "ls D-SGD float32 roofline": 0.1,
        "busy Python loop D-SGD": 1.5,
        "busy torch process D-SGD": 2.5,
        "overhead 64": 25.0,
        "grid": 3.0,
    }
    rows = "\n".join(bench.targets_table(results))
    assert "| 1.20x, 10.0% | **met** / missed |" in rows
    assert "D-SGD 1.5x" in rows and "D-SGD 2.5x" in rows
    assert rows.count("beside a busy") == 2
    assert "| 25 us (n = 1: nan us) | **met** |" in rows
    assert "| 3.0x | missed |" in rows
    assert "nanx, nan% | missed / missed" in rows  # a target not measured is never met


def test_roofline_counts_bytes_and_flops_of_a_node_step() -> None:
    nbytes, flops = bench.ls_roofline(d=20, item=4, degree=2, message=20)
    assert nbytes == 4 * (2 * 21 + 2 * 20 + 2 * 20)
    assert flops == 2 * 20 + 2 * 20 + 20 + 20 + 2 * 3 * 20


def test_the_busy_neighbour_runs_until_killed() -> None:
    proc = bench._busy(bench.BUSY_PY)
    try:
        assert proc.poll() is None  # still spinning after its start-up second
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode is not None
