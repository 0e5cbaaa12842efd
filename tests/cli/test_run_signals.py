"""``decent run`` stopped by a signal: nothing is left "running", nothing recorded is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decent.results import Store
from decent.run import faults

CONFIG = """
study = "sig"
rounds = 40
eval_every = 5
[topology]
kind = "ring"
num_nodes = 4
[algorithm]
kind = "dsgd"
lr = 0.05
[task]
kind = "least_squares"
dim = 3
"""


def _held_run(tmp_path: Path, spawn) -> tuple[subprocess.Popen, Path, Path]:
    """Start ``decent run`` and wait until it holds at round 12 (records up to 10 logged)."""
    cfg, out, hold = tmp_path / "sig.toml", tmp_path / "res", tmp_path / "hold"
    cfg.write_text(CONFIG)
    env = dict(os.environ, **{faults.HOLD_ENV: f"12:{hold}"})
    cmd = [sys.executable, "-m", "decent.cli", "run", str(cfg), "--out", str(out)]
    proc = spawn([*cmd, "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(hold.glob("held-*")):
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read().decode() if proc.stdout else "ended early")
        assert time.monotonic() < deadline, "the run never reached the hold"
        time.sleep(0.05)
    return proc, cfg, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signalled_run_reads_interrupted_and_a_rerun_restarts_it(tmp_path, sig, spawn, cli):
    proc, cfg, out = _held_run(tmp_path, spawn)
    proc.send_signal(sig)
    output = proc.communicate(timeout=60)[0].decode()
    assert "Traceback" not in output, output
    if sig != signal.SIGKILL:
        assert proc.returncode == 130, output
        assert "interrupted" in output
    with Store(out, readonly=True) as store:
        runs = store.runs("sig")
        rec = store.records("sig", metrics=["eval/loss@mean"])
    assert runs["status"].tolist() == ["interrupted"]  # SIGKILL: its process is gone
    if sig != signal.SIGKILL:  # the handler committed every evaluation before exiting
        assert sorted(rec["round"]) == [0, 5, 10]
    rerun = cli("run", cfg, "--out", out, "--no-progress")  # in this process: no start-up
    assert rerun.exit_code == 0, rerun.output
    with Store(out, readonly=True) as store:
        runs = store.runs("sig")
        rec = store.records("sig", metrics=["eval/loss@mean"])
    assert runs["status"].tolist() == ["finished"]
    assert sorted(rec["round"]) == list(range(0, 41, 5))  # restarted: each round once
