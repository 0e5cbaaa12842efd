"""Sweeps: parallel workers, resume after Ctrl-C and after SIGKILL, nothing finished lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from decent.config import expand, load_config
from decent.results import Store
from decent.run import RunOutcome, faults, run_sweep

GRID_2X2 = """
[sweep]
seeds = [0, 1]
[sweep.grid]
"algorithm.lr" = [0.02, 0.05]
"""


def statuses(out: Path, study: str) -> dict[str, str]:
    if not (out / "decent.sqlite").is_file():
        return {}
    with Store(out, readonly=True) as store:
        runs = store.runs(study)
    return dict(zip(runs["run_id"], runs["status"], strict=False))


def finished_at(out: Path, study: str) -> dict[str, str]:
    with Store(out, readonly=True) as store:
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
    seen: list[RunOutcome] = []
    summary = run_sweep(cfg, tmp_path / "res", workers=1, progress=False, on_done=seen.append)
    assert summary.ok and summary.count("finished") == 2 and len(seen) == 2
    again = run_sweep(cfg, tmp_path / "res", workers=1, progress=False)
    assert again.count("skipped") == 2


HOLD_GRID = """
[sweep]
seeds = [0, 1, 2]
[sweep.grid]
"algorithm.lr" = [0.01, 0.02]
"""
ROUNDS, EVERY, HOLD_ROUND, HELD_SEED = 40, 10, 5, 2


def _start(spawn, cfg: Path, out: Path, hold: Path) -> subprocess.Popen:
    """``decent sweep`` with 2 workers in a new session; runs of seed 2 hold at round 5."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env[faults.HOLD_ENV] = f"{HOLD_ROUND}:{hold}:{HELD_SEED}"
    cmd = [
        sys.executable,
        "-m",
        "decent.cli",
        "sweep",
        str(cfg),
        "--workers",
        "2",
        "--replicas",
        "1",
    ]
    cmd += ["--out", str(out), "--no-progress"]
    return spawn(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _held(proc: subprocess.Popen, hold: Path, count: int) -> list[int]:
    """Wait until ``count`` runs announce they are held; return their worker pids.

    The grid order and the hold make the state exact whatever the machine's speed: the
    worker holding seed 2's first run is blocked, so the other runs the rest of the grid up
    to seed 2's second run. Then runs (lr, seed) = (., 0), (., 1) are finished and both
    seed-2 runs are in flight. (The deadline only guards against a hang.)
    """
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        held = sorted(hold.glob("held-*"))
        if len(held) >= count:
            return [int(p.name.split("-")[1]) for p in held]
        if proc.poll() is not None:
            assert proc.stdout is not None  # started with stdout=PIPE
            pytest.fail(f"sweep ended early:\n{proc.stdout.read().decode()}")
        time.sleep(0.05)
    pytest.fail("the runs never reached the hold")


def _gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alive = [
            p
            for p in pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return
        time.sleep(0.05)
    pytest.fail(f"workers {pids} outlived their sweep")


def _check_resume(cfg: Path, out: Path, before: dict[str, str], monkeypatch) -> None:
    """Resume in this process: only the unfinished runs run; nothing lost or doubled."""
    monkeypatch.delenv(faults.HOLD_ENV, raising=False)
    summary = run_sweep(load_config(cfg), out, workers=1, progress=False, replicas=1)
    assert summary.ok and summary.count("skipped") == len(before)
    assert summary.count("finished") == 6 - len(before)
    st = statuses(out, "hold")
    assert len(st) == 6 and set(st.values()) == {"finished"}
    done = finished_at(out, "hold")
    assert {k: done[k] for k in before} == before  # finished runs untouched
    with Store(out, readonly=True) as store:
        runs = store.runs("hold")
        rec = store.records("hold")
    assert runs["config_hash"].nunique() == 6  # one run per grid point, none duplicated
    counts = rec.groupby(["run_id", "metric"])["round"].agg(["count", "nunique", "max"])
    assert (counts["count"] == counts["nunique"]).all()  # no round recorded twice
    loss = rec[rec["metric"] == "eval/loss@mean"].groupby("run_id")["round"]
    assert (loss.max() == ROUNDS).all() and (loss.nunique() == ROUNDS // EVERY + 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL-parent", "SIGKILL-worker"])
def test_a_stopped_sweep_resumes_with_nothing_lost(how, small_config, tmp_path, monkeypatch, spawn):
    cfg = small_config("hold", HOLD_GRID, rounds=ROUNDS, eval_every=EVERY)
    out, hold = tmp_path / "res", tmp_path / "hold"
    proc = _start(spawn, cfg, out, hold)
    workers = _held(proc, hold, 2)
    st = statuses(out, "hold")
    assert sorted(st.values()) == ["finished"] * 4 + ["running"] * 2, st
    before = finished_at(out, "hold")
    if how == "SIGINT":  # Ctrl-C in a terminal reaches the whole process group
        os.killpg(proc.pid, signal.SIGINT)
    elif how == "SIGTERM":  # e.g. a job scheduler stopping the sweep
        os.kill(proc.pid, signal.SIGTERM)
    elif how == "SIGKILL-parent":
        os.kill(proc.pid, signal.SIGKILL)
    else:  # one worker dies; the other is released and finishes its run
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while "failed" not in statuses(out, "hold").values() and time.monotonic() < deadline:
            time.sleep(0.05)
        (hold / "release").touch()
    output = proc.communicate(timeout=120)[0].decode()
    assert "Traceback" not in output, output
    st = statuses(out, "hold")
    if how in ("SIGINT", "SIGTERM"):
        assert proc.returncode == 130, output
        assert sorted(st.values()) == ["finished"] * 4 + ["interrupted"] * 2, st
    elif how == "SIGKILL-parent":
        _gone(workers)  # the workers notice their parent is gone and exit
        # left "running" by dead processes: read back as interrupted
        assert sorted(statuses(out, "hold").values()) == ["finished"] * 4 + ["interrupted"] * 2
    else:
        assert proc.returncode == 1, output
        assert sorted(st.values()) == ["failed"] + ["finished"] * 5, st
        assert "worker died" in output
    _check_resume(cfg, out, finished_at(out, "hold"), monkeypatch)
    assert {k: v for k, v in finished_at(out, "hold").items() if k in before} == before


BATCH_GRID = """
[sweep]
seeds = [0, 1, 2]
[sweep.grid]
"algorithm.lr" = [0.02, 0.05]
"task.heterogeneity" = [0.0, 1.0]
"topology.kind" = ["ring", "complete", "random_matching"]
"""


def test_a_replica_batched_sweep_stores_what_separate_runs_store(small_config, tmp_path):
    """36 points in 2 batches (the two static graphs share one, the time-varying one has its
    own) give the 36 runs of 36 separate processes."""
    from decent.run import batches
    from decent.run.single import replica_key

    cfg = load_config(small_config("batch", BATCH_GRID, rounds=30, eval_every=10))
    points = expand(cfg)
    groups = batches(points, list(range(len(points))), None)
    assert sorted(len(g) for g in groups) == [12, 24]
    assert len({replica_key(points[g[0]].config) for g in groups}) == 2
    mixed = next(g for g in groups if len(g) == 24)
    assert {points[i].config.topology.kind for i in mixed} == {"ring", "complete"}
    batched = run_sweep(cfg, tmp_path / "b", workers=1, progress=False)
    alone = run_sweep(cfg, tmp_path / "a", workers=1, progress=False, replicas=1)
    assert batched.count("finished") == alone.count("finished") == 36
    with Store(tmp_path / "b", readonly=True) as b, Store(tmp_path / "a", readonly=True) as a:
        rb, ra = b.records("batch"), a.records("batch")
        assert sorted(b.runs("batch")["run_id"]) == sorted(a.runs("batch")["run_id"])
    keep = ~ra["metric"].isin(["time/wall_s", "train/loss"])
    left = ra[keep].sort_values(["run_id", "metric", "round"])["value"].to_numpy()
    right = (
        rb[~rb["metric"].isin(["time/wall_s", "train/loss"])]
        .sort_values(["run_id", "metric", "round"])["value"]
        .to_numpy()
    )
    assert (left == right).all()  # every recorded metric, bit for bit
    # a rerun skips every replica
    again = run_sweep(cfg, tmp_path / "b", workers=1, progress=False)
    assert again.count("skipped") == 36


@pytest.mark.slow
def test_an_interrupted_replica_batch_resumes(small_config, tmp_path, monkeypatch, spawn):
    """Ctrl-C while a batch is held marks all of its replicas interrupted; a rerun redoes them."""
    cfg = small_config("hold", HOLD_GRID, rounds=ROUNDS, eval_every=EVERY)
    out, hold = tmp_path / "res", tmp_path / "hold"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env[faults.HOLD_ENV] = f"{HOLD_ROUND}:{hold}"
    cmd = [sys.executable, "-m", "decent.cli", "sweep", str(cfg), "--workers", "1"]
    proc = spawn(
        [*cmd, "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    _held(proc, hold, 1)  # one batch of 6 replicas: its first replica's hold stops them all
    assert sorted(statuses(out, "hold").values()) == ["running"] * 6
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130 and "Traceback" not in output, output
    assert sorted(statuses(out, "hold").values()) == ["interrupted"] * 6
    _check_resume(cfg, out, {}, monkeypatch)


@pytest.mark.parametrize("ignore", [True, False])
def test_workers_keep_the_warnings_the_caller_ignores(ignore, tmp_path, capfd) -> None:
    """A study that silences a warning category (TaskWarning for its small shards) is not
    flooded by the same warning from every spawned worker; without the filter it shows."""
    import warnings

    from decent.config import loads_config
    from decent.run import run_points
    from decent.tasks.models import TaskWarning

    configs = [
        loads_config(
            f'study = "w"\nseed = {seed}\nrounds = 2\n[topology]\nkind = "ring"\n'
            'num_nodes = 64\n[algorithm]\nkind = "dsgd"\nlr = 0.1\n[task]\nkind = "mlp"\n'
            'batch_size = 64\n[task.dataset]\nkind = "digits"\n'
        )
        for seed in (0, 1)
    ]
    with warnings.catch_warnings():
        if ignore:
            warnings.simplefilter("ignore", TaskWarning)
        summary = run_points(configs, tmp_path, workers=2, progress=False, replicas=1)
    assert summary.ok
    assert ("TaskWarning" in capfd.readouterr().err) is not ignore


def test_static_graphs_of_one_size_share_a_replica_key() -> None:
    """Plain gossip on static graphs of one size may share a batch; Chebyshev gossip,
    time-varying graphs, compressed methods and other sizes keep one graph per batch."""
    from decent.config import ExperimentConfig
    from decent.run.single import mixes_any_topology, replica_key

    def key(kind: str, n: int = 16, method: str = "dsgd", **extra: object) -> str:
        raw = {
            "study": "keys",
            "rounds": 5,
            "topology": {"kind": kind, "num_nodes": n},
            "algorithm": {"kind": method, "lr": 0.1},
            "task": {"kind": "least_squares", "dim": 3},
            **extra,
        }
        return replica_key(ExperimentConfig.model_validate(raw))

    static = {key(k) for k in ("ring", "torus", "exponential", "complete")}
    assert len(static) == 1
    assert key("ring", 32) not in static
    assert key("one_peer_exponential") not in static
    assert key("ring", chebyshev_steps=2) != key("torus", chebyshev_steps=2)
    assert key("ring", method="choco_sgd") != key("torus", method="choco_sgd")
    assert key("ring", method="dat_sgd") == key("complete", method="dat_sgd")
    cfg = ExperimentConfig.model_validate(
        {
            "study": "keys",
            "rounds": 5,
            "topology": {"kind": "ring", "num_nodes": 8},
            "algorithm": {"kind": "dsgd", "lr": 0.1},
            "task": {"kind": "least_squares", "dim": 3},
        }
    )
    assert mixes_any_topology(cfg)


def test_batches_split_evenly_and_share_small_graphs() -> None:
    """A key's runs split into equal batches (never 64 + 2); runs on different graphs share
    a batch only where it makes fewer batches of a small state (SMALL_VALUES)."""
    from decent.config import ExperimentConfig, SweepPoint
    from decent.run import batches
    from decent.run.sweep import SMALL_VALUES, shared_size

    def points(n: int, count: int, kinds: tuple[str, ...] = ("ring",)) -> list[SweepPoint]:
        return [
            SweepPoint(
                ExperimentConfig.model_validate(
                    {
                        "study": "split",
                        "seed": s,
                        "rounds": 5,
                        "topology": {"kind": kind, "num_nodes": n},
                        "algorithm": {"kind": "dsgd", "lr": 0.1},
                        "task": {"kind": "least_squares", "dim": 100},
                    }
                ),
                {},
            )
            for kind in kinds
            for s in range(count)
        ]

    def sizes(pts: list[SweepPoint], replicas: int | None = None) -> list[int]:
        return [len(g) for g in batches(pts, list(range(len(pts))), replicas)]

    assert sizes(points(4096, 66)) == [33, 33]
    assert sizes(points(4096, 66), 30) == [22, 22, 22]
    assert len(sizes(points(4096, 66), 1)) == 66
    three = ("ring", "exponential", "complete")
    assert shared_size(points(4, 1)[0].config) == SMALL_VALUES // 400
    assert sizes(points(4, 22, three)) == [66]  # one batch of three graphs
    groups = batches(points(16, 22, (*three, "torus")), list(range(88)), None)
    assert [len(g) for g in groups] == [30, 30, 28]  # 40 x 16 x 100 values at most: 3, not 4
    assert sizes(points(64, 22, three)) == [22, 22, 22]  # too big to share: one per graph
