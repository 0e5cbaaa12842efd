"""Smoke test of ``python -m benchmarks.robustness``: it runs and prints every row.

Timings are never asserted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_command_prints_every_row(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written notes.\n")
    cmd = [sys.executable, "-m", "benchmarks.robustness", "--quick", "--nodes", "64"]
    proc = subprocess.run(
        [*cmd, "--write", "--out", str(doc)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in (
        "| CHOCO step, QSGD 2 bit |",
        "| median, alie attack |",
        "| CHOCO-SGD top-k 10%, ring |",
    ):
        assert row in proc.stdout
    text = doc.read_text()
    assert "Hand-written notes." in text and "<!-- robustness:end -->" in text
