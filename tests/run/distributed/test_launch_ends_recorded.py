"""A distributed launch always ends recorded, whatever stops it.

Ctrl-C / SIGTERM of ``decent launch`` (sync mode), SIGKILL of one rank (sync mode) and
SIGKILL of the launcher itself (fault-tolerant mode, the launcher hosts the rendezvous
store): the run ends ``interrupted`` or ``failed`` with the reason as one line, every
record already written is kept, nothing prints a traceback, and a rerun finishes it.
The ranks hold at round 12 (:mod:`decent.run.faults`) so each signal lands mid-run
whatever the machine's speed; two ranks keep each launch small.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.results import Store
from decent.run import faults

pytestmark = pytest.mark.dist

CONFIG = """
study = "ends"
rounds = 30
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


def _launch(tmp_path: Path, spawn, env: dict[str, str], *extra: str) -> subprocess.Popen:
    cfg = tmp_path / "ends.toml"
    cfg.write_text(CONFIG)
    cmd = [sys.executable, "-m", "decent.cli", "launch", "--nproc", "2", str(cfg)]
    cmd += ["--out", str(tmp_path / "res"), *extra]
    return spawn(
        cmd,
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the fixture kills orphaned ranks too
    )


def _wait_held(proc: subprocess.Popen, hold: Path, n: int = 2) -> None:
    deadline = time.monotonic() + 180
    while len(list(hold.glob("held-*"))) < n:
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read().decode() if proc.stdout else "ended early")
        assert time.monotonic() < deadline, "the ranks never reached the hold"
        time.sleep(0.05)


def _run(tmp_path: Path) -> tuple[str, str | None, list[int]]:
    with Store(tmp_path / "res", readonly=True) as store:
        runs = store.runs("ends")
        rec = store.records("ends", metrics=["eval/loss@mean"])
    assert len(runs) == 1
    return str(runs.iloc[0]["status"]), runs.iloc[0]["error"], sorted(rec["round"])


def _rerun_finishes(tmp_path: Path) -> None:
    """``decent launch`` again, from this process (the ranks are fresh processes as ever):
    the run restarts and finishes."""
    args = ["launch", "--nproc", "2", str(tmp_path / "ends.toml"), "--out", str(tmp_path / "res")]
    rerun = CliRunner().invoke(app, args, catch_exceptions=False)
    assert rerun.exit_code == 0, rerun.output
    status, _, rounds = _run(tmp_path)
    assert status == "finished" and rounds == list(range(0, 31, 5))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_sync_launch_is_recorded_interrupted(tmp_path, spawn, sig) -> None:
    hold = tmp_path / "hold"
    proc = _launch(tmp_path, spawn, {faults.HOLD_ENV: f"12:{hold}"})
    _wait_held(proc, hold)
    if sig == signal.SIGINT:  # a terminal's Ctrl-C reaches the whole process group
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "Traceback" not in output, output
    assert "interrupted: the run is marked 'interrupted' in the store" in output
    status, error, rounds = _run(tmp_path)
    assert status == "interrupted", error
    assert rounds == [0, 5, 10]  # every evaluation before the signal was committed
    _rerun_finishes(tmp_path)


def test_a_killed_rank_ends_a_sync_launch_recorded_failed(tmp_path, spawn) -> None:
    proc = _launch(tmp_path, spawn, {faults.KILL_ENV: "1:12:KILL"})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert "decent launch: rank 1 died (SIGKILL)" in output
    assert "the run is recorded 'failed'" in output
    status, error, rounds = _run(tmp_path)
    assert status == "failed"
    assert str(error).startswith("rank 1 died (SIGKILL)") and "\n" not in str(error), error
    assert rounds == [0, 5, 10]  # rank 0 committed what it had before it stopped
    _rerun_finishes(tmp_path)


def test_a_killed_launcher_ends_a_fault_tolerant_run_recorded(tmp_path, spawn) -> None:
    hold = tmp_path / "hold"
    proc = _launch(
        tmp_path,
        spawn,
        {faults.HOLD_ENV: f"12:{hold}"},
        "--mode",
        "fault_tolerant",
        "--failure-timeout",
        "2",
    )
    _wait_held(proc, hold)
    ranks = psutil.Process(proc.pid).children()
    assert len(ranks) == 2
    proc.kill()  # the launcher and its rendezvous store
    output = proc.communicate(timeout=120)[0].decode()  # EOF: every rank closed the pipe
    _gone, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive, "ranks outlived their launcher"
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "decent launch (rank" in line]
    assert len(lines) == 2 and all("the launcher (pid" in line for line in lines), output
    status, error, rounds = _run(tmp_path)
    assert status == "failed" and str(error).startswith("the launcher (pid"), error
    assert "\n" not in str(error)
    assert rounds == [0, 5, 10]
