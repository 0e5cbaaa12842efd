"""Sweeps: parallel workers, resume after Ctrl-C and after SIGKILL, nothing finished lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decent.config import load_config
from decent.results import Store
from decent.run import run_sweep

GRID_2X2 = """
[sweep]
seeds = [0, 1]
[sweep.grid]
"algorithm.lr" = [0.02, 0.05]
"""


def statuses(out: Path, study: str) -> dict[str, str]:
    if not (out / "decent.sqlite").is_file():
        return {}
    with Store(out) as store:
        runs = store.runs(study)
    return dict(zip(runs["run_id"], runs["status"], strict=False))


def finished_at(out: Path, study: str) -> dict[str, str]:
    with Store(out) as store:
        runs = store.runs(study)
    return {
        r: f
        for r, f, s in zip(runs["run_id"], runs["finished_at"], runs["status"], strict=False)
        if s == "finished"
    }


def test_sweep_2x2_with_2_workers_stores_all_then_skips(cli, small_config, tmp_path):
    cfg = small_config("grid", GRID_2X2)
    out = tmp_path / "res"
    res = cli("sweep", cfg, "--workers", "2", "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    st = statuses(out, "grid")
    assert len(st) == 4 and set(st.values()) == {"finished"}
    configs = Store(out).configs("grid")
    assert sorted((c["algorithm"]["lr"], c["seed"]) for c in configs.values()) == [
        (0.02, 0),
        (0.02, 1),
        (0.05, 0),
        (0.05, 1),
    ]
    before = finished_at(out, "grid")
    res = cli("sweep", cfg, "--workers", "2", "--out", out, "--no-progress")
    assert res.exit_code == 0
    assert "4" in res.output.split("skipped (already done)")[1]  # the summary table
    assert finished_at(out, "grid") == before  # nothing was run again


def test_inline_sweep_reports_each_run(small_config, tmp_path):
    cfg = load_config(small_config("inline", GRID_2X2), ["sweep.seeds=[0]"])
    seen = []
    summary = run_sweep(cfg, tmp_path / "res", workers=1, progress=False, on_done=seen.append)
    assert summary.ok and summary.count("finished") == 2 and len(seen) == 2
    again = run_sweep(cfg, tmp_path / "res", workers=1, progress=False)
    assert again.count("skipped") == 2


SLOW_GRID = """
[sweep]
seeds = [0, 1, 2]
[sweep.grid]
"algorithm.lr" = [0.01, 0.02]
"""


def _start(cfg: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "decent.cli",
            "sweep",
            str(cfg),
            "--workers",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _wait_for_finished(proc: subprocess.Popen, out: Path, study: str, count: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if sum(s == "finished" for s in statuses(out, study).values()) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"sweep ended early:\n{proc.stdout.read().decode()}")
        time.sleep(0.2)
    pytest.fail("no run finished in time")


@pytest.mark.slow
def test_interrupted_and_killed_sweeps_resume_with_nothing_lost(cli, small_config, tmp_path):
    cfg = small_config("slow", SLOW_GRID, rounds=1500, eval_every=100)
    out = tmp_path / "res"

    # 1. Ctrl-C (SIGINT to the whole process group, as a terminal does)
    proc = _start(cfg, out)
    _wait_for_finished(proc, out, "slow", 1)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    st = statuses(out, "slow")
    assert "running" not in st.values(), st  # every started run is finished or interrupted
    done_1 = finished_at(out, "slow")
    assert done_1

    # 2. SIGKILL of everything (parent and workers) mid-sweep
    proc = _start(cfg, out)
    _wait_for_finished(proc, out, "slow", len(done_1) + 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    done_2 = finished_at(out, "slow")
    assert {k: done_2[k] for k in done_1} == done_1  # finished runs untouched

    # 3. resume (in this process, to keep the test short): only unfinished runs are redone
    summary = run_sweep(load_config(cfg), out, workers=1, progress=False)
    assert summary.ok and summary.count("skipped") == len(done_2)
    st = statuses(out, "slow")
    assert len(st) == 6 and set(st.values()) == {"finished"}
    done_3 = finished_at(out, "slow")
    assert {k: done_3[k] for k in done_2} == done_2
    with Store(out) as store:
        rec = store.records("slow", metrics=["eval/loss@mean"])
    assert (rec.groupby("run_id")["round"].max() == 1500).all()
    assert (rec.groupby("run_id")["round"].nunique() == 16).all()  # rounds 0, 100, ..., 1500
