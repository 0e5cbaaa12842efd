"""Every user mistake and every damaged or unwritable file gets one clear line and exit 2.

Each case runs the real ``decent`` CLI on a real file-system state (missing, a file where a
directory should be, read-only, corrupted, locked by another writer, from a newer version)
and checks: the exit code, one readable message naming the path or field, no traceback,
the damaged file unchanged, and nothing written outside the results directory.

Read-only states are real: as root (which ignores permission bits) the command runs under
``setpriv`` with ``CAP_DAC_OVERRIDE`` dropped, so the kernel enforces the permissions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decent.cli import app
from decent.results import Store

CONFIG = """
rounds = 10
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


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _decent(
    *args: str | Path,
    unprivileged: bool = False,
    env: dict | None = None,
    fresh: bool = False,
    module: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``decent ARGS``: in this process (fast), or as a fresh process when it must be.

    A fresh process is needed to drop privileges (``unprivileged``) and to see the CLI's
    own warning lines (pytest records warnings raised in-process). ``module=False`` runs
    ``python ARGS`` instead of ``python -m decent.cli ARGS`` (for :func:`_decent_each`).
    """
    argv = [str(a) for a in args]
    if not (unprivileged or fresh):
        result = CliRunner().invoke(app, argv, env=env, catch_exceptions=False)
        return subprocess.CompletedProcess(argv, result.exit_code, result.output, "")
    cmd = [sys.executable, *(["-m", "decent.cli"] if module else []), *argv]
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make permissions bind")
        drop = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *cmd]
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("PYTHONWARNINGS", None)  # the CLI's own warnings are part of what is checked
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)


_EACH = """
import json, sys, traceback
from typer.testing import CliRunner
from decent.cli import app
done = []
for argv in json.loads(sys.argv[1]):
    try:
        result = CliRunner().invoke(app, argv, catch_exceptions=False)
        done.append([result.exit_code, result.output])
    except BaseException:
        done.append([1, traceback.format_exc()])
print(json.dumps(done))
"""


def _decent_each(*commands: list[str | Path]) -> list[subprocess.CompletedProcess]:
    """Run each ``decent ARGS`` in turn in one fresh unprivileged process (as
    :func:`_decent` drops privileges), each through the CLI as the in-process path runs it:
    one Python start-up and import of decent for all of them instead of one each."""
    argvs = [[str(a) for a in argv] for argv in commands]
    proc = _decent("-c", _EACH, json.dumps(argvs), unprivileged=True, module=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    return [
        subprocess.CompletedProcess(argv, code, output, "")
        for argv, (code, output) in zip(argvs, done, strict=True)
    ]


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def results(tmp_path: Path, cfg: Path) -> Path:
    """A results directory with one finished run of study ``tiny``."""
    out = tmp_path / "res"
    proc = _decent("run", cfg, "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


def _clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text


# -- damaged stores: refused with one line, never modified ------------------------------------


def _garbage(db: Path) -> None:
    db.write_bytes(b"this is not a database, it is a text file\n" * 20)


def _truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3])


def _foreign_sqlite(db: Path) -> None:
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")


def _newer_schema(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.execute("PRAGMA journal_mode = DELETE")  # fold the WAL in: the file is the whole store
    conn.close()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "not a database": (_garbage, "is not a decent results store"),
    "truncated": (_truncated, "decent.sqlite"),
    "another sqlite database": (_foreign_sqlite, "not a decent results store"),
    "newer schema": (_newer_schema, "upgrade decent"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", ["run", "report", "export", "sweep"])
def test_a_damaged_store_is_one_line_and_left_untouched(
    damage: str, command: str, results: Path, cfg: Path
) -> None:
    db = results / "decent.sqlite"
    for extra in ("decent.sqlite-wal", "decent.sqlite-shm"):
        (results / extra).unlink(missing_ok=True)
    fn, needle = DAMAGE[damage]
    fn(db)
    before = _digest(db)
    args: dict[str, list[str | Path]] = {
        "run": ["run", cfg, "--out", results, "--no-progress", "--force"],
        "sweep": ["sweep", cfg, "--out", results, "--no-progress", "--workers", "1"],
        "report": ["report", "tiny", "--out", results],
        "export": ["export", "tiny", "--out", results],
    }
    proc = _decent(*args[command])
    _clean_error(proc, 2, "error:", needle)
    assert _digest(db) == before, "the damaged store was modified"


def test_a_store_locked_by_another_writer(results: Path, cfg: Path) -> None:
    conn = sqlite3.connect(results / "decent.sqlite", isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        proc = _decent(
            "run",
            cfg,
            "--out",
            results,
            "--no-progress",
            "--force",
            env={"DECENT_STORE_TIMEOUT": "0.5"},
        )
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    _clean_error(proc, 2, "locked by another writer", "decent.sqlite")


# -- paths that are files, directories or read-only ---------------------------------------------


def test_out_is_a_file(tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "plain.txt"
    out.write_text("x")
    _clean_error(_decent("run", cfg, "--out", out, "--no-progress"), 2, "is a file")
    _clean_error(_decent("report", "--out", out), 2, "no results store")
    assert out.read_text() == "x"


def test_readers_work_on_a_read_only_store(results: Path, tmp_path: Path) -> None:
    dest = tmp_path / "copies"
    dest.mkdir()
    for p in [results, *results.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        export, report = _decent_each(
            ["export", "tiny", "--out", results, "--dest", dest / "t.csv"],
            ["report", "tiny", "--out", results, "--dest", dest / "rep"],
        )
        _clean_error(export, 0, "wrote")
        _clean_error(report, 0, "report:")
        assert (dest / "rep" / "report.html").is_file()
    finally:
        for p in [results, *results.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_writers_say_why_they_cannot_write(results: Path, cfg: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    before = _digest(results / "decent.sqlite")
    results.chmod(0o555)
    (results / "decent.sqlite").chmod(0o444)
    try:
        store, new, export, topology, tensorboard = _decent_each(
            ["run", cfg, "--out", results, "--no-progress", "--force"],
            ["run", cfg, "--out", ro / "new", "--no-progress"],
            ["export", "tiny", "--out", results, "--dest", ro / "x.csv"],
            ["topology", "ring", "--n", "6", "--png", ro / "r.png"],
            ["run", cfg, "--out", tmp_path / "ok", "--no-progress", "--tensorboard", ro / "tb"],
        )
        _clean_error(store, 2, "read-only", "--out")
        _clean_error(new, 2, "error:", "new")
        _clean_error(export, 2, "cannot write", "x.csv")
        _clean_error(topology, 2, "cannot write", "r.png")
        _clean_error(tensorboard, 2, "error:", "tb")
    finally:
        ro.chmod(0o755)
        results.chmod(0o755)
        (results / "decent.sqlite").chmod(0o644)
    assert _digest(results / "decent.sqlite") == before


def test_export_dest_that_is_a_directory(results: Path, tmp_path: Path) -> None:
    proc = _decent("export", "tiny", "--out", results, "--dest", tmp_path)
    _clean_error(proc, 2, "is a directory")


# -- names that would become paths ------------------------------------------------------------


def test_a_study_name_cannot_leave_the_results_directory(cfg: Path, tmp_path: Path) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    proc = _decent("run", cfg, "--study", "../../evil", "--out", work / "R", "--no-progress")
    _clean_error(proc, 2, "study", "a study name may hold")
    # a store written by an older version may hold such a name: paths built from it are safe
    out = work / "R"
    with Store(out) as store, store.start_run("../../evil", {"lr": 0.1}) as run:
        run.log(0, {"eval/loss@mean": 1.0})
    _clean_error(_decent("export", "../../evil", "--out", out), 0, "wrote")
    written = [p for p in tmp_path.rglob("*.csv")]
    assert written and all(out in p.parents for p in written), written


# -- the launcher, topologies, resources ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["launch", "--nproc", "2", "CFG", "--port", "70000"], "--port must be a TCP port"),
        (["launch", "--nproc", "2", "CFG", "--port", "0"], "--port must be a TCP port"),
        (["launch", "--nproc", "0", "CFG"], "--nproc must be an integer >= 1"),
        (["launch", "--nproc", "2", "CFG", "--mode", "fast"], "--mode must be one of"),
        (["topology", "exponential", "--n", "1"], "exponential needs num_nodes >= 2"),
        (["topology", "ring", "--n", "2"], "ring needs num_nodes >= 3"),
        (
            ["run", "CFG", "--set", "topology.num_nodes=1000000", "--set", "task.dim=20000"],
            "GiB is available",
        ),
        (["run", "missing.toml"], "no such file"),
        (["run", "CFG", "--set", "rounds"], "expected KEY=VALUE"),
        (["run", "CFG", "--set", "study=a/b"], "a study name may hold"),
        (["sweep", "CFG", "--set", 'sweep.grid."algorithm.lr"=[-1]'], "must be >= 0"),
        (["report", "nope", "--out", "RES"], "no study 'nope'"),
        (["export", "tiny", "--out", "RES", "--format", "xml"], "format must be one of"),
        (["export", "tiny", "--out", "RES", "--table", "rows"], "table must be one of"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    args: list[str], needle: str, cfg: Path, results: Path, tmp_path: Path
) -> None:
    full = [str(cfg) if a == "CFG" else str(results) if a == "RES" else a for a in args]
    if full[0] == "run":
        full += ["--out", str(tmp_path / "out"), "--no-progress"]
    proc = _decent(*full)
    _clean_error(proc, 2, needle)


@pytest.mark.parametrize("command", ["network", "robustness", "deep", "scaling"])
@pytest.mark.parametrize(
    "text, needle",
    [
        ("latncy = 0.1\n", "latncy: 0.1 -> unknown field"),
        ("seeds = []\n", "seeds: [] -> must not be empty"),
    ],
)
def test_a_bad_study_spec_is_one_line_and_exit_2(
    command: str, text: str, needle: str, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    proc = _decent(command, spec, "--out", tmp_path / "res", "--no-progress")
    _clean_error(proc, 2, needle, "spec.toml")
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["eval_every=50"], "eval_every = 50 is larger than rounds = 10"),
        (["algorithm.lr=0"], "algorithm.lr = 0: no step is ever taken"),
        (
            [
                "topology.kind=one_peer_exponential",
                "algorithm.kind=dat_sgd",
                "algorithm.lr=0.001",
                "mixing_check=warn",
            ],
            "running it anyway",
        ),
    ],
)
def test_valid_but_odd_configs_warn_in_one_line(
    overrides: list[str], needle: str, cfg: Path, tmp_path: Path
) -> None:
    sets = [x for o in overrides for x in ("--set", o)]
    proc = _decent("run", cfg, *sets, "--out", tmp_path / "o", "--no-progress", fresh=True)
    _clean_error(proc, 0, "warning: ", needle)


def test_report_of_a_single_run_and_of_seeds_only(cfg: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert _decent("run", cfg, "--out", out, "--no-progress").returncode == 0
    _clean_error(_decent("report", "--out", out), 0, "report:")
    for seed in (1, 2):
        assert (
            _decent("run", cfg, "--set", f"seed={seed}", "--out", out, "--no-progress").returncode
            == 0
        )
    _clean_error(_decent("report", "tiny", "--out", out), 0, "report:")


# -- damaged rows and a bad DECENT_STORE_TIMEOUT (issue 28) --------------------------------------


def _damage_row(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


ROW_DAMAGE: dict[str, tuple[str, str]] = {
    "config_json not JSON": ("UPDATE runs SET config_json = '{not json'", "runs.config_json"),
    "final_json truncated": (
        "UPDATE runs SET final_json = substr(final_json, 1, length(final_json) / 2)",
        "runs.final_json",
    ),
    "schema_version text": (
        "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'",
        "meta.schema_version",
    ),
    "text in records.value": (
        "UPDATE records SET value = 'abc' WHERE round = (SELECT MIN(round) FROM records)",
        "records.value",
    ),
}


@pytest.mark.parametrize("damage", list(ROW_DAMAGE))
@pytest.mark.parametrize("command", ["report", "export", "load"])
def test_a_damaged_row_names_the_run_and_the_column(
    damage: str, command: str, results: Path, tmp_path: Path
) -> None:
    from decent.results import StoreError, load

    db = results / "decent.sqlite"
    with Store(results, readonly=True) as store:
        (run_id,) = store.runs()["run_id"]
    sql, column = ROW_DAMAGE[damage]
    _damage_row(db, sql)
    needles = [column] if column.startswith("meta") else [column, f"run {run_id}"]
    if command == "load":
        with pytest.raises(StoreError) as err:
            load(results, study="tiny")
        assert "\n" not in str(err.value)
        assert all(n in str(err.value) for n in needles), str(err.value)
        return
    dest: list[str | Path] = ["--dest", tmp_path / "x.csv"] if command == "export" else []
    proc = _decent(command, "tiny", "--out", results, *dest)
    _clean_error(proc, 2, "error:", *needles)
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1, proc.stdout + proc.stderr


@pytest.mark.parametrize("value", ["inf", "abc", "-5", "nan", "0", "1e400", "", "100000"])
def test_a_bad_store_timeout_is_one_line(value: str, results: Path) -> None:
    proc = _decent("report", "tiny", "--out", results, env={"DECENT_STORE_TIMEOUT": value})
    _clean_error(proc, 2, "DECENT_STORE_TIMEOUT=", "(0, 86400]")
    assert len((proc.stdout + proc.stderr).strip().splitlines()) == 1, proc.stdout


@pytest.mark.parametrize("command", ["run", "sweep", "launch"])
def test_a_bad_store_timeout_stops_writers_before_they_start(
    command: str, cfg: Path, tmp_path: Path
) -> None:
    out = tmp_path / "res"
    args: dict[str, list[str | Path]] = {
        "run": ["run", cfg, "--out", out, "--no-progress"],
        "sweep": ["sweep", cfg, "--out", out, "--no-progress", "--workers", "1"],
        "launch": ["launch", "--nproc", "2", cfg, "--out", out],
    }
    proc = _decent(*args[command], env={"DECENT_STORE_TIMEOUT": "nan"})
    _clean_error(proc, 2, "error: DECENT_STORE_TIMEOUT=nan is not a number of seconds")
    text = proc.stdout + proc.stderr
    assert text.count("DECENT_STORE_TIMEOUT") == 1, text  # once, not once per rank
    assert not (out / "decent.sqlite").exists()


@pytest.mark.parametrize("value", ["0.5", "60", "86400"])
def test_a_good_store_timeout_is_used(value: str, results: Path) -> None:
    proc = _decent("report", "tiny", "--out", results, env={"DECENT_STORE_TIMEOUT": value})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- sinks given a long run name or a URI MLflow cannot use (issue 28) --------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("bogus://x", "cannot use the tracking URI 'bogus://x'"),
        ("sqlite:///{tmp}/m.db", "a database URI needs the full MLflow"),
        ("http://127.0.0.1:{port}", "start the MLflow server there"),
    ],
    ids=["unknown-scheme", "database-on-skinny", "no-server"],
)
def test_an_mlflow_uri_it_cannot_use_is_one_line(
    uri: str, needle: str, cfg: Path, tmp_path: Path
) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    if "sqlite" in uri and importlib.util.find_spec("sqlalchemy") is not None:
        pytest.skip("the full MLflow (with sqlalchemy) can use a database URI")
    home, out, tb = tmp_path / "home", tmp_path / "res", tmp_path / "tb"
    home.mkdir()
    before = _files_under(tmp_path)
    proc = _decent(
        "run", cfg, "--out", out, "--no-progress", "--tensorboard", tb,
        "--mlflow", uri.format(tmp=tmp_path, port=_closed_port()), fresh=True,
        env={"HOME": str(home)},
    )  # fmt: skip
    _clean_error(proc, 2, "error: MLflowSink:", needle, "pass a directory")
    assert _files_under(tmp_path) == before, "a refused sink wrote files"


@pytest.mark.parametrize("length", [300, 5000])
def test_a_long_run_name_makes_a_short_tensorboard_folder(
    length: int, cfg: Path, tmp_path: Path
) -> None:
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    home, out = tmp_path / "home", tmp_path / "res"
    home.mkdir()
    proc = _decent(
        "run", cfg, "--out", out, "--no-progress", "--set", f'name="{"x" * length}"',
        "--tensorboard", out / "tb", "--mlflow", out / "mlruns",
        fresh=True, env={"HOME": str(home)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (run_dir,) = (out / "tb" / "tiny").iterdir()
    assert len(run_dir.name) <= 100 and run_dir.name.startswith("x" * 80)
    assert any(run_dir.glob("events.out.tfevents.*"))
    assert not _files_under(home), "MLflow wrote under $HOME"
