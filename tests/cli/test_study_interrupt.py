"""A study command stopped by SIGTERM (a job scheduler, a closed terminal) ends in one line
and exit 130, its runs marked interrupted and resumable, as ``decent sweep`` does."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SPEC = """
tasks = ["digits_mlp"]
methods = ["dsgd"]
topologies = ["ring"]
num_nodes = [4]
alphas = [1.0]
samples = {digits_mlp = 1280000}
evals = 2
seeds = [0]
extensions = 0
lr_grid = [0.1, 0.3]
"""


def _statuses(out: Path) -> list[str]:
    try:
        with sqlite3.connect(out / "decent.sqlite", timeout=5) as conn:
            return [row[0] for row in conn.execute("SELECT status FROM runs")]
    except sqlite3.OperationalError:  # not created yet
        return []


def test_sigterm_stops_a_study_in_one_line_and_marks_its_runs(tmp_path: Path) -> None:
    spec, out = tmp_path / "spec.toml", tmp_path / "out"
    spec.write_text(SPEC)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "decent.cli", "deep", str(spec), "--out", str(out)]
    proc = subprocess.Popen(
        [*command, "--workers", "1", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while "running" not in _statuses(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "running" in _statuses(out), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: finished runs are kept in")
    statuses = _statuses(out)
    assert "interrupted" in statuses and "running" not in statuses
