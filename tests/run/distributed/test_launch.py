"""``decent launch``: ranks on loopback, one writer, the same numbers as the simulator.

Also the launcher's failure policy: in ``fault_tolerant`` mode a rank that dies (SIGKILL)
or hangs (SIGSTOP) does not end the run; in the other modes the first failure ends all.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.config import build, load_config
from decent.results import Store
from decent.run import train_experiment
from decent.run.distributed.launch import free_port, run_local

pytestmark = pytest.mark.dist

CONFIG = """
study = "launch-test"
rounds = 30
eval_every = 10

[topology]
kind = "ring"
num_nodes = 6

[algorithm]
kind = "dat_sgd"
lr = 0.003

[task]
kind = "least_squares"
dim = 4
batch_size = 2
heterogeneity = 1.0
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("launch") / "tiny.toml"
    path.write_text(CONFIG)
    return path


def test_launch_records_the_simulator_numbers(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "res"
    # 4 ranks hold 2, 2, 1, 1 of the 6 nodes
    res = CliRunner().invoke(app, ["launch", "--nproc", "4", str(config_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    store = Store(out)
    runs = store.runs("launch-test")
    assert len(runs) == 1  # one writer
    run = runs.iloc[0]
    assert run["status"] == "finished"
    assert run["backend"] == "dist" and int(run["dist.world_size"]) == 4
    table = store.final("launch-test")
    final = dict(zip(table["metric"], table["value"], strict=True))
    sim = train_experiment(build(load_config(config_file)))
    for key, value in sim.final.items():
        if key.startswith("time/") or key == "round":
            continue
        assert final[key] == pytest.approx(value, rel=0, abs=1e-10), key
    records = store.records("launch-test")
    assert sorted(set(records["round"])) == [0, 10, 20, 30]


def test_more_ranks_than_nodes_fails_before_starting(config_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["launch", "--nproc", "8", str(config_file), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "world_size=8" in res.output and "--nproc 6" in res.output


def test_a_busy_port_fails_before_starting(config_file: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = CliRunner().invoke(
            app,
            [
                "launch",
                "--nproc",
                "2",
                str(config_file),
                "--port",
                str(port),
                "--out",
                str(tmp_path),
            ],
        )
    assert res.exit_code == 2
    assert f"--port {port} is in use" in res.output


def test_a_bad_mode_is_a_user_error(config_file: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["launch", "--nproc", "2", str(config_file), "--mode", "fast"])
    assert res.exit_code == 2 and "sync, overlap, stale, fault_tolerant" in res.output


CRASH_CONFIG = """
study = "launch-crash"
rounds = 40
eval_every = 10

[topology]
kind = "ring"
num_nodes = 4

[algorithm]
kind = "dsgd"
lr = 0.05

[task]
kind = "least_squares"
dim = 3
batch_size = 2
heterogeneity = 1.0
"""

ROUNDS, EVALS = 40, (0, 10, 20, 30, 40)
# every victim killed once, at an early, a middle and a late round, and two stops (only the
# heartbeat can tell); rank 0 is the recorder: the lowest survivor takes the recording over.
# Each launch costs ~10 s on 2 cores, mostly 4 torch imports.
CRASHES = [
    ("KILL", 1, 2),
    ("KILL", 2, 15),
    ("KILL", 3, 38),
    ("STOP", 1, 38),
    ("STOP", 2, 15),
    ("KILL", 0, 15),
    ("STOP", 0, 25),
]


@pytest.mark.parametrize(
    ("sig", "victim", "crash_round"), CRASHES, ids=[f"{s}-rank{v}-round{r}" for s, v, r in CRASHES]
)
def test_fault_tolerant_launch_survives_a_dead_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: str, victim: int, crash_round: int
) -> None:
    """A rank of 4 SIGKILLs (SIGSTOPs) itself: the other three finish and the run is recorded.

    When the victim is rank 0 (the recorder), the lowest surviving rank resumes the
    recording: nothing recorded before is lost and the run ends finished.
    """
    config = tmp_path / "crash.toml"
    config.write_text(CRASH_CONFIG)
    out = tmp_path / "res"
    monkeypatch.setenv("DECENT_TEST_KILL_AT", f"{victim}:{crash_round}:{sig}")
    args = ["launch", "--nproc", "4", str(config), "--out", str(out)]
    args += ["--mode", "fault_tolerant", "--failure-timeout", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    how = "died (SIGKILL)" if sig == "KILL" else "was stopped and killed by the launcher"
    lost = [line for line in res.output.splitlines() if line.startswith("decent launch: rank")]
    assert len(lost) == 1 and f"rank {victim} {how}" in lost[0], res.output  # nobody else
    assert "launch finished: 3 of 4 ranks survived (mode fault_tolerant)" in res.output
    store = Store(out, readonly=True)
    runs = store.runs("launch-crash")
    assert list(runs["status"]) == ["finished"]
    assert int(runs.iloc[0]["dist.world_size"]) == 4
    table = store.final("launch-crash")
    final = dict(zip(table["metric"], table["value"], strict=True))
    assert final["dist/alive_nodes"] == 3.0 and final["dist/alive_ranks"] == 3.0
    assert crash_round <= final[f"dist/left/rank{victim}/round"] <= crash_round + 3
    assert final["rounds_completed"] == ROUNDS
    records = store.records("launch-crash")
    alive = records[records["metric"] == "dist/alive_nodes"].sort_values("round")
    assert list(alive["round"]) == list(EVALS)  # every evaluation recorded, none lost
    # the victim stops after its update of crash_round, before that round's evaluation
    assert list(alive["value"]) == [4.0 if t < crash_round else 3.0 for t in EVALS]
    loss = records[records["metric"] == "eval/loss@mean"]
    assert sorted(loss["round"]) == list(EVALS)


# a rank without torch: rank 2 fails (exit 3) or stops itself; the others sleep (1.5 s in
# fault-tolerant mode; in sync mode longer than the launcher's grace, so it ends them)
_TOY = """
import os, signal, sys, time
rank = int(os.environ["RANK"])
assert os.environ["WORLD_SIZE"] == "3" and os.environ["MASTER_ADDR"] == "127.0.0.1"
if rank == 2:
    if sys.argv[1] == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    sys.exit(3)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize(
    ("mode", "how", "code", "others"),
    [
        ("sync", "fail", 1, "fail-fast"),  # like torchrun: the first failure ends the rest
        ("fault_tolerant", "fail", 0, ""),  # the others finish; rank 0 finished: success
        ("fault_tolerant", "stop", 0, ""),  # the stopped rank is killed once the others exit
    ],
)
def test_the_local_launcher_failure_policy(mode: str, how: str, code: int, others: str) -> None:
    start = time.monotonic()
    sleep = "1.5" if mode == "fault_tolerant" else "60"
    res = run_local(3, [sys.executable, "-c", _TOY, how, sleep], port=free_port(), mode=mode)
    assert time.monotonic() - start < 10.0
    assert res.returncode == code
    victim = res.ranks[2]
    if how == "fail":
        assert victim.returncode == 3 and victim.killed_by_launcher == ""
        assert "failed (exit code 3)" in victim.describe()
    else:
        assert victim.killed_by_launcher == "stopped" and victim.signal == "SIGKILL"
    for r in res.ranks[:2]:
        assert r.killed_by_launcher == others
        assert (r.returncode == 0) == (others == "")
    assert [r.rank for r in res.left] == ([0, 1, 2] if others else [2])
    assert [r.rank for r in res.survivors] == ([] if others else [0, 1])
    assert res.summary() == f"{len(res.survivors)} of 3 ranks survived"


def test_a_local_launch_listens_on_loopback_only(tmp_path: Path, config_file: Path, spawn) -> None:
    """Every listening socket of the launcher and its ranks is bound to 127.0.0.1.

    The ranks hold at round 5 (decent.run.faults) so the sockets are inspected while the
    run is in flight; the launcher's c10d store used to listen on every interface.
    """
    import os
    import subprocess

    import psutil

    from decent.run import faults

    hold = tmp_path / "hold"
    env = dict(os.environ, **{faults.HOLD_ENV: f"5:{hold}"})
    cmd = [sys.executable, "-m", "decent.cli", "launch", "--nproc", "2", str(config_file)]
    cmd += ["--out", str(tmp_path / "res")]
    proc = spawn(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(list(hold.glob("held-*"))) < 2:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the ranks never reached the hold"
            time.sleep(0.05)
        launcher = psutil.Process(proc.pid)
        family = [launcher, *launcher.children(recursive=True)]
        listening = [
            (p.pid, c.laddr)
            for p in family
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, "found no listening socket at all"
        wide = [(pid, addr) for pid, addr in listening if addr.ip not in ("127.0.0.1", "::1")]
        assert not wide, f"sockets listening beyond loopback: {wide}"
    finally:
        (hold / "release").touch()
        out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out


def test_the_rank_and_torchrun_command_lines() -> None:
    from decent.run.distributed.launch import torchrun_command, worker_command

    rank = [
        "c.toml", "--out", "res", "--set", "rounds=5", "--set", "dist.mode='stale'",
        "--study", "s",
    ]  # fmt: skip
    options: dict[str, Any] = dict(
        overrides=["rounds=5", "dist.mode='stale'"], out="res", study="s"
    )
    assert worker_command("c.toml", **options) == [
        sys.executable, "-m", "decent.run.distributed.worker", *rank, "--no-force"
    ]  # fmt: skip
    assert torchrun_command(4, "c.toml", port=29500, force=True, **options) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
        "4", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:29500", "--local-addr",
        "127.0.0.1", "-m", "decent.run.distributed.worker", *rank,
    ]  # fmt: skip
