"""A damaged row or a bad DECENT_STORE_TIMEOUT is one StoreError line (issue 28)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from decent.results import Store, StoreError, load

CONFIG = {"algorithm": {"kind": "dsgd", "lr": 0.1}, "seed": 0}

DAMAGE: dict[str, tuple[str, str]] = {
    "config_json": ("UPDATE runs SET config_json = '{\"algorithm\": '", "runs.config_json"),
    "final_json": (
        "UPDATE runs SET final_json = substr(final_json, 1, length(final_json) - 2)",
        "runs.final_json",
    ),
    "info_json": ("UPDATE runs SET info_json = '[[['", "runs.info_json"),
    "records.value": ("UPDATE records SET value = 'abc' WHERE round = 3", "records.value"),
    "records.value blob": ("UPDATE records SET value = x'00ff' WHERE round = 1", "records.value"),
}

READERS: dict[str, Callable[[Store], Any]] = {
    "runs": lambda s: s.runs("st"),
    "records": lambda s: s.records("st"),
    "final": lambda s: s.final("st"),
}


def _store_with_one_run(path: Path) -> str:
    with Store(path) as store:
        with store.start_run("st", CONFIG) as run:
            for r in range(5):
                run.log(r, {"eval/loss@mean": 1.0 / (1 + r)})
            run.finish(final={"eval/loss@mean": 0.2})
        return run.run_id


def _damage(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path / "decent.sqlite")
    with conn:
        if "info_json" in sql:
            conn.execute("UPDATE runs SET info_json = '{}' WHERE info_json IS NULL")
        conn.execute(sql)
    conn.close()


@pytest.mark.parametrize(
    "damage, reader",
    [
        (d, r)
        for d in DAMAGE
        for r in READERS
        if not (r == "runs" and DAMAGE[d][1] == "records.value")  # runs() reads no records
    ],
)
def test_a_damaged_row_is_one_line_naming_run_and_column(
    damage: str, reader: str, tmp_path: Path
) -> None:
    sql, column = DAMAGE[damage]
    run_id = _store_with_one_run(tmp_path)
    _damage(tmp_path, sql)
    with Store(tmp_path, readonly=True) as store, pytest.raises(StoreError) as err:
        READERS[reader](store)
    text = str(err.value)
    assert "\n" not in text
    assert f"run {run_id}" in text and column in text, text
    assert f"delete_run('{run_id}')" in text


def test_final_values_and_configs_name_the_column(tmp_path: Path) -> None:
    run_id = _store_with_one_run(tmp_path)
    _damage(tmp_path, DAMAGE["final_json"][0])
    with Store(tmp_path) as store, pytest.raises(StoreError, match=r"runs\.final_json"):
        store.final_values(run_id)
    _damage(tmp_path, DAMAGE["config_json"][0])
    with Store(tmp_path) as store, pytest.raises(StoreError, match=r"runs\.config_json"):
        store.configs()


def test_a_damaged_row_can_be_deleted_and_the_rest_reads(tmp_path: Path) -> None:
    run_id = _store_with_one_run(tmp_path)
    with Store(tmp_path) as store, store.start_run("st", {**CONFIG, "seed": 1}) as run:
        run.log(0, {"eval/loss@mean": 0.5})
    _damage(tmp_path, f"UPDATE runs SET config_json = 'x' WHERE id = '{run_id}'")
    with Store(tmp_path) as store:
        assert store.delete_run(run_id)
    assert list(load(tmp_path, study="st")["seed"]) == [1]


def test_a_text_schema_version_is_one_line(tmp_path: Path) -> None:
    _store_with_one_run(tmp_path)
    _damage(tmp_path, "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'")
    for readonly in (True, False):
        with pytest.raises(StoreError, match=r"meta\.schema_version is 'abc', not a whole number"):
            Store(tmp_path, readonly=readonly).runs()


@pytest.mark.parametrize("value", ["inf", "-inf", "abc", "-5", "nan", "0", "1e400", " ", "86401"])
def test_a_bad_store_timeout_is_refused(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_with_one_run(tmp_path)
    monkeypatch.setenv("DECENT_STORE_TIMEOUT", value)
    with pytest.raises(StoreError) as err:
        Store(tmp_path).runs()
    assert str(err.value).startswith(f"DECENT_STORE_TIMEOUT={value} is not a number of seconds")
    assert "(0, 86400]" in str(err.value)


@pytest.mark.parametrize(
    "value, ms", [("0.0001", 1), ("0.5", 500), ("60", 60_000), ("86400", 86_400_000)]
)
def test_a_good_store_timeout_sets_sqlites_busy_timeout(
    value: str, ms: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DECENT_STORE_TIMEOUT", value)
    with Store(tmp_path) as store:
        store.runs()
        assert store._connection().execute("PRAGMA busy_timeout").fetchone()[0] == ms
