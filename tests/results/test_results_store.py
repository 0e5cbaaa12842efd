"""Tests of the embedded results store (decent.results)."""

from __future__ import annotations

import importlib.util
import math
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from decent.results import (
    MissingDependencyError,
    ResultsError,
    RunClosedError,
    RunExistsError,
    Store,
    export,
    flatten,
    load,
    run_id_for,
)

METRICS = ("eval/loss@mean", "consensus/dist2", "comm/bytes")


def _config(kind: str = "dat_sgd", seed: int = 0, n: int = 8) -> dict[str, Any]:
    return {
        "algorithm": {"kind": kind, "lr": 0.1},
        "topology": {"kind": "ring", "num_nodes": n},
        "seed": seed,
        "rounds": 100,
    }


def _value(run: int, r: int, j: int) -> float:
    return 1.0 / (1 + r) + 0.01 * run + j


# -- workers for child processes (module level: importable under spawn) -----------------------
def _write_run_worker(path: str, worker: int, rounds: int) -> None:
    store = Store(path)
    with store.start_run("conc", _config(seed=worker), flush_every=7) as run:
        for r in range(rounds):
            run.log(r, {m: _value(worker, r, j) for j, m in enumerate(METRICS)})
        run.finish(final={"eval/loss@mean": _value(worker, rounds - 1, 0)})
    store.close()


def _slow_worker(path: str) -> None:
    store = Store(path)
    run = store.start_run("kill", _config(), flush_every=10, flush_seconds=1e9)
    for r in range(100_000):
        run.log(r, {m: _value(0, r, j) for j, m in enumerate(METRICS)})
        time.sleep(0.001)


def _fork_child_worker(store: Store) -> None:
    with store.start_run("fork", _config(seed=1)) as run:
        run.log(0, {"x": 1.0})


# -- round trip -------------------------------------------------------------------------------
def test_round_trip(tmp_path: Path) -> None:
    cfg = _config()
    with Store(tmp_path) as store:
        assert (tmp_path / "decent.sqlite").exists()
        with store.start_run("s", cfg, name="first") as run:
            assert store.status(run.run_id) == "running"
            for r in range(0, 30, 3):
                run.log(r, {m: _value(0, r, j) for j, m in enumerate(METRICS)})
            run.log(30, {"eval/loss@mean": np.float32(0.5), "train/loss": float("nan")})
            run.finish(final={"eval/loss@mean": 0.5, "nested": {"a": 1}})
        assert run.run_id == run_id_for("s", cfg)
        assert store.is_finished(run.run_id)
        runs = store.runs("s")
        assert len(runs) == 1
        row = runs.iloc[0]
        assert row["status"] == "finished"
        assert row["name"] == "first"
        assert row["algorithm.kind"] == "dat_sgd"
        assert row["topology.num_nodes"] == 8
        assert row["final.eval/loss@mean"] == 0.5
        assert row["final.nested.a"] == 1
        assert row["wall_s"] >= 0
        assert row["package_version"] is not None
        rec = store.records("s")
        assert len(rec) == 10 * 3 + 2
        got = rec[(rec.metric == "consensus/dist2") & (rec["round"] == 9)]["value"].item()
        assert got == _value(0, 9, 1)
        assert rec[(rec.metric == "eval/loss@mean") & (rec["round"] == 30)]["value"].item() == 0.5
        assert math.isnan(rec[rec.metric == "train/loss"]["value"].item())
        assert set(rec["algorithm.kind"]) == {"dat_sgd"}
        sub = store.records(run_ids=[run.run_id], metrics=["comm/bytes"])
        assert list(sub["round"]) == list(range(0, 30, 3))


def test_run_id_is_canonical() -> None:
    a = {"x": (1, 2), "y": {"b": np.int64(2), "a": 1.0}}
    b = {"y": {"a": 1.0, "b": 2}, "x": [1, 2]}
    assert run_id_for("s", a) == run_id_for("s", b)
    assert run_id_for("s", a) != run_id_for("t", a)
    assert run_id_for("s", a) != run_id_for("s", {**b, "x": [2, 1]})
    assert flatten({"a": {"b": 1, "c": {"d": "e"}}, "l": [1]}) == {
        "a.b": 1,
        "a.c.d": "e",
        "l": "[1]",
    }


def test_context_manager_marks_failures(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError, match="boom"), store.start_run("s", _config(seed=1)) as run:
        run.log(0, {"x": 1.0})
        raise RuntimeError("boom")
    assert store.status(run.run_id) == "failed"
    runs = store.runs().set_index("run_id")
    assert "boom" in runs.loc[run.run_id, "error"]
    assert len(store.records(run_ids=[run.run_id])) == 1  # buffered record was committed

    with pytest.raises(KeyboardInterrupt), store.start_run("s", _config(seed=2)) as run2:
        raise KeyboardInterrupt
    assert store.status(run2.run_id) == "interrupted"

    with store.start_run("s", _config(seed=3)) as run3:  # clean exit finishes
        run3.log(0, {"x": 1.0})
    assert store.status(run3.run_id) == "finished"
    with pytest.raises(RunClosedError):
        run3.log(1, {"x": 1.0})
    store.close()


def test_restart_replaces_unfinished_and_protects_finished(tmp_path: Path) -> None:
    store = Store(tmp_path)
    cfg = _config()
    run = store.start_run("s", cfg, flush_every=1)
    for r in range(10):
        run.log(r, {"x": float(r)})
    run.fail("failed", "oops")
    created = store.runs().iloc[0]["created_at"]
    run = store.start_run("s", cfg, flush_every=1)  # same id: old records replaced
    run.log(0, {"x": 42.0})
    run.finish()
    rec = store.records("s")
    assert list(rec["value"]) == [42.0]
    assert store.runs().iloc[0]["created_at"] == created
    assert store.runs().iloc[0]["error"] is None
    with pytest.raises(RunExistsError, match="is_finished"):
        store.start_run("s", cfg)
    run = store.start_run("s", cfg, replace=True)
    run.finish("diverged")
    assert store.is_finished(run.run_id)  # diverged is a complete result
    assert store.delete_run(run.run_id)
    assert not store.delete_run(run.run_id)
    assert len(store.records()) == 0
    store.close()


def test_batching_commits(tmp_path: Path) -> None:
    writer_store = Store(tmp_path)
    reader = Store(tmp_path)
    run = writer_store.start_run("s", _config(), flush_every=5, flush_seconds=1e9)
    for r in range(4):
        run.log(r, {"x": float(r), "y": 1.0})
    assert len(reader.records()) == 0  # nothing committed before the batch is full
    run.log(4, {"x": 4.0, "y": 1.0})
    assert sorted(set(reader.records()["round"])) == [0, 1, 2, 3, 4]
    run.log(5, {"x": 5.0})
    assert len(reader.records()) == 10
    run.flush()
    assert len(reader.records()) == 11
    run.finish()

    timed = writer_store.start_run("s", _config(seed=9), flush_every=10**6, flush_seconds=0.05)
    timed.log(0, {"x": 0.0})
    assert len(reader.records(run_ids=[timed.run_id])) == 0
    time.sleep(0.08)
    timed.log(1, {"x": 1.0})  # time-based flush
    assert len(reader.records(run_ids=[timed.run_id])) == 2
    timed.finish()
    writer_store.close()
    reader.close()


def test_batch_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    run = store.start_run("s", _config(), flush_every=100)
    # Make the database itself reject one row of the batch.
    with sqlite3.connect(tmp_path / "decent.sqlite") as conn:
        conn.execute(
            "CREATE TRIGGER reject BEFORE INSERT ON records WHEN NEW.metric = 'bad' "
            "BEGIN SELECT RAISE(ABORT, 'rejected'); END"
        )
    for r in range(5):
        run.log(r, {"x": float(r)})
    run.log(5, {"bad": 1.0})
    with pytest.raises(sqlite3.DatabaseError, match="rejected"):
        run.flush()
    assert len(store.records()) == 0  # rows before the bad one were rolled back too
    with sqlite3.connect(tmp_path / "decent.sqlite") as conn:
        conn.execute("DROP TRIGGER reject")
    run.flush()  # buffer was kept: the retry stores everything
    assert len(store.records()) == 6
    run.finish()
    store.close()


def test_bad_input_errors(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(ResultsError, match="study"):
        store.start_run("", _config())
    with pytest.raises(ResultsError, match=r"config\.f"):
        store.start_run("s", {"f": object()})
    with pytest.raises(ResultsError, match="finite"):
        store.start_run("s", {"lr": float("inf")})
    with pytest.raises(ResultsError, match="flush_every"):
        store.start_run("s", _config(), flush_every=0)
    run = store.start_run("s", _config())
    with pytest.raises(ResultsError, match="round"):
        run.log(-1, {"x": 1.0})
    with pytest.raises(ResultsError, match="round"):
        run.log(1.5, {"x": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ResultsError, match="'x'"):
        run.log(0, {"x": "1.0"})
    with pytest.raises(ResultsError, match="'x'"):
        run.log(0, {"x": [1, 2]})
    with pytest.raises(ResultsError, match="status"):
        run.finish("running")
    with pytest.raises(ResultsError, match="status"):
        run.fail("finished")
    run.finish()
    with pytest.raises(FileNotFoundError, match="no results store at"):
        load(tmp_path / "missing")
    store.close()


# -- concurrency ------------------------------------------------------------------------------
def test_concurrent_spawned_writers(tmp_path: Path) -> None:
    rounds = 120
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_write_run_worker, args=(str(tmp_path), w, rounds)) for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(tmp_path) as store:
        with store._reading() as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        runs = store.runs("conc")
        assert len(runs) == 4
        assert set(runs["status"]) == {"finished"}
        rec = store.records("conc")
    assert len(rec) == 4 * rounds * len(METRICS)
    for w in range(4):
        mine = rec[rec["seed"] == w]
        assert len(mine) == rounds * len(METRICS)
        for j, m in enumerate(METRICS):
            vals = mine[mine.metric == m].sort_values("round")["value"].to_numpy()
            np.testing.assert_array_equal(vals, [_value(w, r, j) for r in range(rounds)])


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def work(seed: int) -> None:
        with store.start_run("thr", _config(seed=seed), flush_every=3) as run:
            for r in range(40):
                run.log(r, {"x": float(r)})

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.records("thr")) == 160
    assert set(store.runs("thr")["status"]) == {"finished"}
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_store_reopens_after_fork(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.start_run("fork", _config(seed=0)) as run:  # parent connection is open now
        run.log(0, {"x": 0.0})
    p = mp.get_context("fork").Process(target=_fork_child_worker, args=(store,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert len(store.runs("fork")) == 2
    assert len(store.records("fork")) == 2
    with store._reading() as conn:  # parent connection still healthy
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_run_keeps_committed_batches(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_slow_worker, args=(str(tmp_path),))
    p.start()
    store = Store(tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if store.status(run_id_for("kill", _config())) and len(store.records("kill")) >= 60:
            break
        time.sleep(0.02)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL

    rid = run_id_for("kill", _config())
    assert store.status(rid, stored=True) == "running"  # never claims to have finished
    assert store.status(rid) == "interrupted"  # its writer is gone: it reads as interrupted
    assert store.runs("kill")["status"].tolist() == ["interrupted"]
    assert not store.is_finished(rid)
    rec = store.records("kill")
    rounds = sorted(set(rec["round"]))
    k = len(rounds)
    assert k >= 20 and k % 10 == 0  # only whole batches of 10 rounds were committed
    assert rounds == list(range(k))
    assert len(rec) == k * len(METRICS)
    for j, m in enumerate(METRICS):
        vals = rec[rec.metric == m].sort_values("round")["value"].to_numpy()
        np.testing.assert_array_equal(vals, [_value(0, r, j) for r in range(k)])

    assert store.mark_stale("kill") == [rid] and store.status(rid, stored=True) == "interrupted"
    assert store.mark_stale("kill") == []
    assert store.reset_unfinished("kill") == [rid]
    assert store.status(rid) is None
    assert len(store.records("kill")) == 0
    with store.start_run("kill", _config()) as run:
        assert run.run_id == rid
        run.log(0, {"x": 1.0})
    assert store.is_finished(rid)
    assert store.reset_unfinished() == []
    store.close()


# -- load / export ----------------------------------------------------------------------------
def _small_study(path: Path) -> None:
    with Store(path) as store:
        for i, (kind, seed) in enumerate([(k, s) for k in ("a", "b") for s in range(3)]):
            with store.start_run("st", _config(kind=kind, seed=seed)) as run:
                for r in range(5):
                    run.log(r, {m: _value(i, r, j) for j, m in enumerate(METRICS)})
        with store.start_run("other", _config()) as run:
            run.log(0, {"x": 1.0})


def test_load_shape_and_columns(tmp_path: Path) -> None:
    _small_study(tmp_path)
    df = load(tmp_path, study="st")
    assert df.shape[0] == 6 * 5 * len(METRICS)
    for col in (
        "run_id",
        "round",
        "metric",
        "value",
        "study",
        "status",
        "algorithm.kind",
        "algorithm.lr",
        "topology.kind",
        "topology.num_nodes",
        "seed",
        "rounds",
    ):
        assert col in df.columns, col
    assert set(df["study"]) == {"st"}
    assert df.groupby("algorithm.kind")["run_id"].nunique().to_dict() == {"a": 3, "b": 3}
    assert len(load(tmp_path / "decent.sqlite")) == df.shape[0] + 1
    only = load(tmp_path, study="st", metrics=["comm/bytes"])
    assert set(only["metric"]) == {"comm/bytes"} and len(only) == 30


def test_export_csv_and_parquet(tmp_path: Path) -> None:
    _small_study(tmp_path)
    out = export(tmp_path, "st", tmp_path / "out" / "st.csv")
    back = pd.read_csv(out)
    ref = load(tmp_path, study="st")
    assert back.shape == ref.shape
    assert list(back.columns) == list(ref.columns)
    np.testing.assert_allclose(back["value"].to_numpy(), ref["value"].to_numpy())
    runs = pd.read_csv(export(Store(tmp_path), "st", tmp_path / "runs.csv", table="runs"))
    assert len(runs) == 6
    with pytest.raises(ResultsError, match="format"):
        export(tmp_path, "st", tmp_path / "x.xlsx", format="xlsx")
    if importlib.util.find_spec("pyarrow") is None:
        with pytest.raises(MissingDependencyError, match="pip install pyarrow"):
            export(tmp_path, "st", tmp_path / "st.parquet", format="parquet")
    else:
        pq = export(tmp_path, "st", tmp_path / "st.parquet", format="parquet")
        assert pd.read_parquet(pq).shape == ref.shape


def test_a_schema_2_store_reads_and_upgrades_in_place(tmp_path: Path) -> None:
    """A store written before runs recorded what they say of themselves (schema 2) still
    reads, and gains the column the first time it is opened for writing."""
    import sqlite3

    with Store(tmp_path) as store:
        with store.start_run("old", {"lr": 0.1, "seed": 0}) as run:
            run.log(0, {"eval/loss@mean": 1.0})
    conn = sqlite3.connect(tmp_path / "decent.sqlite")
    with conn:  # turn it into what decent 0.x with schema 2 wrote
        conn.execute("ALTER TABLE runs DROP COLUMN info_json")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    with Store(tmp_path, readonly=True) as store:
        runs = store.runs("old")
        assert len(runs) == 1 and not [c for c in runs.columns if c.startswith("info.")]
    with Store(tmp_path) as store:
        info = {"objective": {"metric": "eval/loss@mean", "lower_is_better": True}}
        with store.start_run("new", {"lr": 0.2, "seed": 0}, info=info) as run:
            run.log(0, {"eval/loss@mean": 0.5})
        runs = store.runs()
    assert list(runs["study"]) == ["new", "old"]
    assert runs.set_index("study").loc["new", "info.objective.metric"] == "eval/loss@mean"
    assert pd.isna(runs.set_index("study").loc["old", "info.objective.metric"])
    conn = sqlite3.connect(tmp_path / "decent.sqlite")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    conn.close()


def test_results_load_after_a_plain_import_decent(tmp_path: Path) -> None:
    """The README's ``import decent; decent.results.load(...)`` works in a fresh process."""
    import subprocess
    import sys

    with Store(tmp_path) as store, store.start_run("s", _config()) as run:
        run.log(0, {"x": 1.0})
    code = f"import decent; print(len(decent.results.load({str(tmp_path)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_an_unpickled_store_reads_the_owner_and_info_columns(tmp_path: Path) -> None:
    """A Store sent to a worker (pickled: its connection opens on first use) reads what the
    runs said of themselves and sees a run whose writer is gone as interrupted."""
    import pickle
    import socket

    with Store(tmp_path) as store:
        with store.start_run("s", _config(), info={"objective": {"metric": "x"}}) as run:
            run.log(0, {"x": 1.0})
        store.start_run("s", _config(seed=1))  # left running
    conn = sqlite3.connect(tmp_path / "decent.sqlite")
    with conn:  # its writer is a process that no longer exists
        gone = f"{socket.gethostname()}:999999999:"
        conn.execute("UPDATE runs SET owner = ? WHERE status = 'running'", (gone,))
    conn.close()
    for readonly in (False, True):
        runs = pickle.loads(pickle.dumps(Store(tmp_path, readonly=readonly))).runs("s")
        assert runs["info.objective.metric"].tolist()[0] == "x"  # started first, listed first
        assert sorted(runs["status"]) == ["finished", "interrupted"]


def test_runs_started_in_the_same_millisecond_list_in_the_order_they_started(
    tmp_path: Path,
) -> None:
    """``created_at`` has millisecond resolution; runs that share it are listed in the order
    they were started, not in the order of their content hashes."""
    seeds = [7, 3, 9, 0, 5]
    with Store(tmp_path) as store:
        for seed in seeds:
            with store.start_run("s", _config(seed=seed)) as run:
                run.log(0, {"x": float(seed)})
    conn = sqlite3.connect(tmp_path / "decent.sqlite")
    with conn:
        conn.execute("UPDATE runs SET created_at = '2026-01-01T00:00:00.000+00:00'")
    conn.close()
    store = Store(tmp_path, readonly=True)
    assert store.runs("s")["seed"].tolist() == seeds
    assert store.runs()["seed"].tolist() == seeds


@pytest.mark.parametrize("flush", [{"flush_every": 0}, {"flush_seconds": -1.0}])
def test_bad_flush_settings_refused_before_any_row_changes(
    tmp_path: Path, flush: dict[str, Any]
) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(ResultsError, match=next(iter(flush))):
        store.start_run("s", _config(), **flush)
    assert store.runs().empty
    run = store.start_run("s", _config())
    run.fail("interrupted", "stopped")
    with pytest.raises(ResultsError, match=next(iter(flush))):
        store.resume_run("s", _config(), **flush)
    assert store.status(run.run_id) == "interrupted"
