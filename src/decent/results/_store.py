"""The embedded results store: one SQLite database per results directory.

The schema (:data:`_SCHEMA`, version 3; older stores are upgraded in place when opened for
writing), the concurrency model and the failures it words are in ``docs/results.md``. A
run whose writer is gone (its ``owner`` process no longer exists) reads back as
``interrupted``; a damaged file is never written to.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from decent._names import shown
from decent.results._canon import canonical_json, content_hash, flatten, to_plain
from decent.results._errors import (
    ResultsError,
    RunClosedError,
    RunExistsError,
    StoreError,
    StoreNotFoundError,
    StoreVersionError,
)

SCHEMA_VERSION = 3
DB_NAME = "decent.sqlite"

STATUSES = ("running", "finished", "failed", "diverged", "interrupted")
DONE_STATUSES = ("finished", "diverged")
"""Statuses of runs that completed and are skipped by a resumed sweep."""
UNFINISHED_STATUSES = ("running", "failed", "interrupted")
"""Statuses of runs that a resumed sweep re-runs (their old records are replaced)."""

RUN_COLUMNS = (
    "run_id",
    "study",
    "name",
    "status",
    "config_hash",
    "package_version",
    "git_commit",
    "created_at",
    "started_at",
    "finished_at",
    "wall_s",
    "error",
)
"""Columns of :meth:`Store.runs` that are not config (``<dotted config>``) or ``final.*``."""
RECORD_COLUMNS = ("run_id", "round", "metric", "value")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        study TEXT NOT NULL,
        name TEXT,
        config_json TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('running','finished','failed','diverged','interrupted')),
        package_version TEXT,
        git_commit TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        wall_s REAL,
        error TEXT,
        final_json TEXT,
        owner TEXT,
        info_json TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS runs_study ON runs(study)",
    """CREATE TABLE IF NOT EXISTS records (
        run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        round INTEGER NOT NULL,
        metric TEXT NOT NULL,
        value REAL,
        PRIMARY KEY (run_id, round, metric)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS records_metric ON records(metric, run_id)",
)


MAX_STORE_TIMEOUT = 86_400.0
"""The longest ``DECENT_STORE_TIMEOUT`` accepted, in seconds (one day)."""


def store_timeout() -> float:
    """Seconds a writer waits for another writer's lock, from ``DECENT_STORE_TIMEOUT``.

    Unset means 60 s. The value must be a number of seconds with
    ``0 < seconds <= MAX_STORE_TIMEOUT``; it is rounded to whole milliseconds (at least 1).
    A launcher calls it before starting processes, so a bad value is refused once.

    Raises:
        StoreError: for anything else (``abc``, ``-5``, ``0``, ``nan``, ``inf``), one line
            naming the variable, its value and the accepted range.

    Example:
        >>> store_timeout() > 0
        True
    """
    text = os.environ.get("DECENT_STORE_TIMEOUT", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_STORE_TIMEOUT:  # also false for nan
        raise StoreError(
            f"DECENT_STORE_TIMEOUT={shown(text)} is not a number of seconds in "
            f"(0, {MAX_STORE_TIMEOUT:g}]; set it to e.g. 60 (the default) or unset it"
        )
    return max(1, round(seconds * 1000)) / 1000


# Connections inherited through fork() must never be used or closed by the child (closing
# could checkpoint or unlink the parent's WAL); they are parked here for the process's life.
_ABANDONED: list[sqlite3.Connection] = []


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), else ``None``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_token(pid: int | None = None) -> str:
    """``host:pid:start`` of a process (``start``: its start time in clock ticks, Linux)."""
    pid = os.getpid() if pid is None else pid
    fields = _proc_stat(pid)
    start = fields[19] if fields is not None and len(fields) > 19 else ""
    return f"{socket.gethostname()}:{pid}:{start}"


def owner_is_gone(token: str | None) -> bool:
    """Whether the process of an ``owner`` token is known to have ended (on this host).

    A zombie (ended, not yet reaped) counts as ended, and so does a reused pid (another
    start time). A process on another machine cannot be checked: not gone.
    """
    if not token:
        return False
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[0] in ("Z", "X") or (bool(start) and fields[19] != start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists (another user's)
    return False


def _no_room(path: Path) -> bool:
    """Whether writing next to ``path`` fails for want of room: little space left on its
    disk, or a file-size limit (``RLIMIT_FSIZE``) that SQLite reports as an I/O error."""
    import resource
    import shutil

    try:
        if shutil.disk_usage(path.parent).free < 4 << 20:
            return True
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (OSError, ValueError, AttributeError):
        return False
    return soft != resource.RLIM_INFINITY


def explain(path: Path, err: BaseException, *, writing: bool) -> StoreError:
    """One clear :class:`StoreError` for an SQLite or file-system failure on ``path``."""
    text = str(err)
    low = text.lower()
    if isinstance(err, FileExistsError) or isinstance(err, NotADirectoryError):
        return StoreError(
            f"cannot create the results store {path}: {err.filename or path.parent} is a "
            "file, not a directory; pass --out a directory (or a path ending in .sqlite)"
        )
    if isinstance(err, PermissionError) or "readonly" in low or "read-only" in low:
        return StoreError(
            f"cannot write the results store {path}: the file or its directory is read-only "
            f"({text}); pass --out a writable directory (decent report and decent export "
            "can still read it where it is)"
        )
    if "not a database" in low or "malformed" in low or "encrypted" in low:
        return StoreError(
            f"{path} is not a decent results store, or it is damaged ({text}); it was left "
            f"untouched: move it aside (mv {path} {path}.damaged) or pass another --out"
        )
    if "locked" in low or "busy" in low:
        return StoreError(
            f"the results store {path} stayed locked by another writer for "
            f"{store_timeout():g} s ({text}); wait for that process to finish, or "
            "pass another --out"
        )
    if "full" in low or (isinstance(err, OSError) and getattr(err, "errno", None) == 28):
        return StoreError(
            f"the disk holding the results store {path} is full ({text}); free some space "
            "or pass another --out; everything committed before is kept"
        )
    if "disk i/o error" in low and _no_room(path):
        return StoreError(
            f"cannot write the results store {path}: the disk is full or a file-size limit "
            f"(ulimit -f) was reached ({text}); free some space, raise the limit or pass "
            "another --out; everything committed before is kept"
        )
    if "unable to open" in low or isinstance(err, OSError):
        verb = "create or open" if writing else "open"
        return StoreError(
            f"cannot {verb} the results store {path} ({text}); check that the directory "
            "exists and is readable" + (" and writable" if writing else "")
        )
    return StoreError(f"the results store {path} failed: {text}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@lru_cache(maxsize=1)
def package_version() -> str | None:
    """Return the installed version of ``decent`` (``None`` when not installed)."""
    try:
        from importlib.metadata import version

        return version("decent")
    except Exception:
        return None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Return ``git rev-parse HEAD`` of the source tree of ``decent``, or ``None``."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except Exception:
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def resolve_db_path(path: str | os.PathLike[str]) -> Path:
    """Return the database file for ``path``: ``path`` itself if it ends in ``.sqlite``,
    ``.sqlite3`` or ``.db``, else ``path / "decent.sqlite"`` (a results directory)."""
    p = Path(path).expanduser()
    if p.suffix in (".sqlite", ".sqlite3", ".db"):
        return p
    return p / DB_NAME


def check_choice(value: str, allowed: Sequence[str], arg: str = "status") -> str:
    """``value`` if it is one of ``allowed``, else a :class:`ResultsError` naming ``arg``."""
    if value not in allowed:
        raise ResultsError(
            f"{arg} must be one of {list(allowed)}, got {value!r}; pick one of those names"
        )
    return value


def _connect(target: str | Path, uri: bool = False) -> sqlite3.Connection:
    """A connection shared by the process's threads, with explicit BEGIN/COMMIT only."""
    return sqlite3.connect(
        target, uri=uri, timeout=store_timeout(), isolation_level=None, check_same_thread=False
    )


@contextmanager
def opened(store: Store | str | os.PathLike[str]) -> Iterator[Store]:
    """``store`` itself, or the store at that path opened read-only (and closed after)."""
    if isinstance(store, Store):
        yield store
    else:
        with Store(store, readonly=True) as s:
            yield s


_STUDY = "(?1 IS NULL OR study = ?1)"
"""The condition of a query of one study's runs (``?1``), or of all (``?1`` is ``NULL``)."""


class Store:
    """An embedded results store: ``<dir>/decent.sqlite`` (no server).

    Safe to share between threads and processes, to pickle to ``spawn``-ed workers and to
    use after ``fork`` (the connection is reopened in a child; ``docs/results.md``).

    Args:
        path: A results directory (the database is ``path/decent.sqlite``) or a path ending in
            ``.sqlite``/``.sqlite3``/``.db``.
        create: Create the directory and database if missing; with ``False`` a missing
            database raises :class:`StoreNotFoundError` (a ``FileNotFoundError``).
        readonly: Open for reading only (``mode=ro``: no journal change, no schema
            upgrade, works on read-only media); every write raises :class:`StoreError`.

    Raises:
        StoreError: The file is not a store, is damaged, locked, read-only (when
            writing), or its directory cannot be created; the message says what to do.
        StoreVersionError: The store was written by a newer decent.

    Example:
        >>> import tempfile
        >>> with Store(tempfile.mkdtemp()) as store:
        ...     with store.start_run("demo", {"lr": 0.1, "seed": 0}) as run:
        ...         run.log(0, {"train/loss": 1.0})
        ...     store.runs()["status"].tolist()
        ['finished']
    """

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False
    ) -> None:
        p = resolve_db_path(path)
        self.__setstate__({"path": p, "create": create and not readonly, "readonly": readonly})
        if not self.create and not p.is_file():
            what = "is a directory" if p.is_dir() else "does not exist"
            raise StoreNotFoundError(
                f"no results store at {p} (it {what}); run `decent run` or "
                "`decent sweep` first, or pass --out the results directory a run wrote to"
            )
        self._connection()  # create the database (and surface path errors) now

    # -- connection management --------------------------------------------------------------
    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never touch the parent's connection
            if self._conn is not None:
                _ABANDONED.append(self._conn)
            self._reset_process_state()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_readonly() if self.readonly else self._open_for_writing()
        except (sqlite3.Error, OSError) as err:
            raise explain(self.path, err, writing=not self.readonly) from err

    def _open_readonly(self) -> sqlite3.Connection:
        from urllib.parse import quote

        uri = "file:" + quote(str(self.path.resolve())) + "?mode=ro"
        # mode=ro fails on a WAL store on read-only media; nothing can change it: immutable
        for immutable in (False, True):
            conn = _connect(uri + ("&immutable=1" if immutable else ""), uri=True)
            try:
                self._found_version(conn)
                break
            except sqlite3.OperationalError as err:
                conn.close()
                low = str(err).lower()
                if immutable or ("unable to open" not in low and "readonly" not in low):
                    raise
            except BaseException:
                conn.close()
                raise
        self._owner = "owner" if _has_column(conn, "runs", "owner") else "NULL"
        self._info = "info_json" if _has_column(conn, "runs", "info_json") else "NULL"
        return conn

    def _found_version(self, conn: sqlite3.Connection) -> int:
        """The schema version of the store (0: an empty database, when writing); refuses a
        foreign database, a damaged version and a newer one."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if "meta" not in tables and (tables or self.readonly):
            raise StoreError(
                f"{self.path} is an SQLite database but not a decent results store (no meta "
                "table); it was left untouched: pass --out the directory a run wrote to"
            )
        if not tables:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            found = int(row[0]) if row else 0
        except (TypeError, ValueError):
            raise StoreError(
                f"{self.path} is damaged: meta.schema_version is {shown(repr(row[0]))}, not a "
                f"whole number; it was left untouched: move it aside (mv {self.path} "
                f"{self.path}.damaged) or pass another --out"
            ) from None
        if found > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self.path} has schema version {found}, this decent knows up to "
                f"{SCHEMA_VERSION}; upgrade decent to read it (pip install -U decent)"
            )
        return found

    def _open_for_writing(self) -> sqlite3.Connection:
        if self.create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path, "rb") as fh:  # refuse a non-SQLite file before SQLite writes
                head = fh.read(16)
            if head and head != b"SQLite format 3\x00":
                raise StoreError(
                    f"{self.path} is not a decent results store (not an SQLite database); it "
                    f"was left untouched: move it aside (mv {self.path} {self.path}.damaged) "
                    "or pass another --out"
                )
        conn = _connect(self.path)
        conn.execute(f"PRAGMA busy_timeout = {round(store_timeout() * 1000)}")
        # look before writing anything (even the journal mode changes the file's header)
        try:
            self._found_version(conn)
        except BaseException:
            conn.close()
            raise
        deadline = time.monotonic() + store_timeout()
        while True:  # switching to WAL needs a brief exclusive lock; retry while contended
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not enable WAL journal on {self.path} (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = self._found_version(conn)
            for stmt in _SCHEMA:
                conn.execute(stmt)
            if found == 1:  # v1 -> v2: who writes each run
                conn.execute("ALTER TABLE runs ADD COLUMN owner TEXT")
            if found in (1, 2):  # v2 -> v3: what each run says of itself
                conn.execute("ALTER TABLE runs ADD COLUMN info_json TEXT")
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        conn.execute("COMMIT")
        self._owner, self._info = "owner", "info_json"
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the body as one all-or-nothing ``IMMEDIATE`` write transaction."""
        if self.readonly:
            raise StoreError(
                f"the results store {self.path} was opened read-only; open Store(path) to write"
            )
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise explain(self.path, err, writing=True) from err
            try:
                yield conn
            except BaseException as err:
                self._rollback(conn)
                if isinstance(err, sqlite3.OperationalError):  # a full disk mid-statement
                    raise explain(self.path, err, writing=True) from err
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback(conn)
                raise explain(self.path, err, writing=True) from err

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back if a transaction is still open (SQLite ends one itself on a full disk)."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # "cannot rollback - no transaction is active": nothing to undo

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.DatabaseError as err:
                raise explain(self.path, err, writing=False) from err

    def close(self) -> None:
        """Close this process's connection (it is reopened on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "create": self.create, "readonly": self.readonly}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.create = state["create"]
        self.readonly = state.get("readonly", False)
        self._owner = self._info = "NULL"  # the column, or NULL in an old store
        self._reset_process_state()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- writing ----------------------------------------------------------------------------
    def start_run(
        self,
        study: str,
        config: Mapping[str, Any] | Any,
        name: str | None = None,
        run_id: str | None = None,
        *,
        replace: bool = False,
        flush_every: int = 50,
        flush_seconds: float = 10.0,
        info: Mapping[str, Any] | None = None,
    ) -> RunWriter:
        """Register a run as ``running`` and return its writer.

        The default run id is ``run_id_for(study, config)``: a hash of the study and the
        canonical config JSON, so a resumed sweep can ask :meth:`is_finished` and skip. If a
        run with this id exists with status running/failed/interrupted, its row and records are
        replaced (``created_at`` is kept). If it is finished or diverged, ``RunExistsError`` is
        raised unless ``replace=True``.

        Args:
            study: Study (sweep) name; groups runs.
            config: Resolved experiment config: a JSON-able dict or a pydantic model.
            name: Optional human-readable name.
            run_id: Explicit id instead of the config hash.
            replace: Overwrite a finished/diverged run with the same id.
            flush_every: Commit buffered records every this many ``log`` calls.
            flush_seconds: ... or when this many seconds passed since the last commit.
            info: What the run says of itself beyond its config, JSON data kept beside
                it and read back as ``info.<key>`` columns of :meth:`runs` (the recorder
                stores the task's objective: which metric ranks methods, and which way).

        Returns:
            A :class:`RunWriter` (also a context manager).

        Raises:
            ResultsError: For an empty study, a non-JSON config or bad flush settings.
            RunExistsError: If the run already completed and ``replace`` is false.
        """
        if not isinstance(study, str) or not study:
            raise ResultsError(f"study must be a non-empty string, got {study!r}")
        _check_flush(flush_every, flush_seconds)
        plain, config_json = _plain_config(config)
        info_json = None if info is None else canonical_json(to_plain(info, where="info"))
        rid = run_id if run_id is not None else content_hash(f"{study}\0{config_json}")
        if not isinstance(rid, str) or not rid:
            raise ResultsError(f"run_id must be a non-empty string, got {run_id!r}")
        now = _now()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, created_at FROM runs WHERE id = ?", (rid,)
            ).fetchone()
            created_at = now
            if row is not None:
                if row[0] in DONE_STATUSES and not replace:
                    raise RunExistsError(
                        f"run {rid!r} of study {study!r} already has status {row[0]!r}; "
                        "skip it (store.is_finished(run_id)), pass replace=True to re-run it, "
                        "or store.delete_run(run_id)"
                    )
                created_at = row[1]
                conn.execute("DELETE FROM runs WHERE id = ?", (rid,))  # cascades to records
            conn.execute(
                "INSERT INTO runs(id, study, name, config_json, config_hash, status,"
                " package_version, git_commit, created_at, started_at, owner, info_json)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    study,
                    name,
                    config_json,
                    content_hash(config_json),
                    package_version(),
                    git_commit(),
                    created_at,
                    now,
                    process_token(),
                    info_json,
                ),
            )
        return RunWriter(
            self, rid, study, plain, flush_every=flush_every, flush_seconds=flush_seconds
        )

    def resume_run(
        self,
        study: str,
        config: Mapping[str, Any] | Any,
        name: str | None = None,
        *,
        flush_every: int = 50,
        flush_seconds: float = 10.0,
    ) -> RunWriter:
        """Go on recording a run another process started, keeping everything it recorded.

        For the takeover of a distributed run's recording when its recorder rank died: the
        run (``run_id_for(study, config)``) keeps its row and records, is marked ``running``
        again if it was closed as failed or interrupted, and further records are merged in
        (``INSERT OR REPLACE`` by ``(round, metric)``). A run the store does not have yet
        is started as by :meth:`start_run`.

        Raises:
            RunExistsError: the run already finished or diverged.
        """
        _check_flush(flush_every, flush_seconds)
        plain, config_json = _plain_config(config)
        rid = content_hash(f"{study}\0{config_json}")
        status = self.status(rid)
        if status is None:
            return self.start_run(
                study, plain, name, flush_every=flush_every, flush_seconds=flush_seconds
            )
        if status in DONE_STATUSES:
            raise RunExistsError(f"run {rid!r} of study {study!r} already has status {status!r}")
        with self._transaction() as conn:
            conn.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, owner = ? WHERE id = ?",
                (process_token(), rid),
            )
        return RunWriter(
            self, rid, study, plain, flush_every=flush_every, flush_seconds=flush_seconds
        )

    def final_values(self, run_id: str) -> dict[str, float]:
        """The final metrics a run stored (``{}`` for an unknown or unfinished run)."""
        with self._reading() as conn:
            row = conn.execute("SELECT final_json FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or not row[0]:
            return {}
        data = self._json(row[0], run_id, "final_json")
        return {
            k: float(v)
            for k, v in flatten(data).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    def delete_run(self, run_id: str) -> bool:
        """Delete a run and its records; return whether it existed."""
        with self._transaction() as conn:
            cur = conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return cur.rowcount > 0

    def reset_unfinished(self, study: str | None = None) -> list[str]:
        """Delete runs (and records) whose status is running, failed or interrupted.

        Call this when resuming a sweep while no worker is writing: a ``running`` run found
        then was left by a killed process. (Re-starting such a run with :meth:`start_run`
        replaces it too; this is the bulk version.)

        Args:
            study: Only this study; ``None`` for all.

        Returns:
            The deleted run ids, sorted.
        """
        sql = f"SELECT id FROM runs WHERE {_STUDY} AND status IN {UNFINISHED_STATUSES}"
        with self._transaction() as conn:
            ids = sorted(r[0] for r in conn.execute(sql, (study,)).fetchall())
            conn.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in ids])
        return ids

    # -- reading ----------------------------------------------------------------------------
    def status(self, run_id: str, *, stored: bool = False) -> str | None:
        """Return the status of ``run_id`` (``None`` if there is no such run).

        A run stored as ``running`` whose writing process is gone reads as
        ``interrupted`` (``stored=True``: the value as stored).
        """
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT status, {self._owner} FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
        if row is None:
            return None
        if not stored and row[0] == "running" and owner_is_gone(row[1]):
            return "interrupted"
        return str(row[0])

    def mark_stale(self, study: str | None = None) -> list[str]:
        """Store ``interrupted`` for runs left ``running`` by a process that is gone.

        Such a run was killed (``SIGKILL``, a crash, a lost machine) before it could close
        itself; its records are kept and a resumed sweep or ``decent run`` redoes it.

        Returns:
            The run ids marked, sorted.
        """
        with self._reading() as conn:
            sql = f"SELECT id, {self._owner} FROM runs WHERE {_STUDY} AND status = 'running'"
            rows = conn.execute(sql, (study,)).fetchall()
        stale = sorted(rid for rid, tok in rows if owner_is_gone(tok))
        if stale:
            with self._transaction() as conn:
                conn.executemany(
                    "UPDATE runs SET status = 'interrupted', finished_at = ?, error = "
                    "COALESCE(error, '') || ? WHERE id = ? AND status = 'running'",
                    [(_now(), "its process ended without closing the run", r) for r in stale],
                )
        return stale

    def close_leftover(self, run_id: str, status: str, reason: str) -> bool:
        """End a run that its writer left unfinished, with ``status`` and a one-line ``reason``.

        For whoever supervises the writer (the launcher of a distributed run): once every
        process that could record it has exited, a run still ``running`` (its writer was
        killed) or ``failed``/``interrupted`` (its writer saw only the consequence, e.g. a
        lost peer) gets ``status`` and ``reason`` as its ``error`` (the cause, where the
        writer saw a symptom). Records are kept. A finished or
        diverged run, or an unknown one, is left alone.

        Returns:
            Whether the run was updated.
        """
        check_choice(status, ("failed", "interrupted"))
        with self._transaction() as conn:
            row = conn.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row[0] not in UNFINISHED_STATUSES:
                return False
            conn.execute(
                "UPDATE runs SET status = ?, error = ?, finished_at = COALESCE(finished_at, ?)"
                " WHERE id = ?",
                (status, reason, _now(), run_id),
            )
        return True

    def is_finished(self, run_id: str) -> bool:
        """Return whether ``run_id`` completed (status ``finished`` or ``diverged``).

        A diverged run is a complete result (that step size diverges); a resumed sweep skips
        it like a finished one.
        """
        return self.status(run_id) in DONE_STATUSES

    def studies(self) -> list[str]:
        """Return the study names present, sorted."""
        with self._reading() as conn:
            rows = conn.execute("SELECT DISTINCT study FROM runs ORDER BY study").fetchall()
        return [r[0] for r in rows]

    def configs(self, study: str | None = None) -> dict[str, dict[str, Any]]:
        """Return ``{run_id: config}`` with each run's config as stored (nested dicts)."""
        sql = f"SELECT id, config_json FROM runs WHERE {_STUDY} ORDER BY created_at, rowid"
        with self._reading() as conn:
            rows = conn.execute(sql, (study,)).fetchall()
        return {rid: self._json(text, rid, "config_json") for rid, text in rows}

    def _json(self, text: Any, run_id: str, column: str) -> Any:
        """Decode one stored JSON cell; a damaged one raises a one-line :class:`StoreError`."""
        try:
            return json.loads(text)
        except (TypeError, ValueError, RecursionError) as err:
            detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            raise StoreError(
                f"{self.path} is damaged: run {shown(run_id)} has a runs.{column} that is not "
                f"valid JSON ({shown(detail)}); delete that run (decent.results.Store("
                f"...).delete_run({shown(repr(run_id))})) and run it again, or pass another "
                "--out"
            ) from None

    def runs(self, study: str | None = None) -> pd.DataFrame:
        """Return one row per run with the config flattened to dotted columns.

        Columns: :data:`RUN_COLUMNS`, then the config (``algorithm.kind``, ``seed``, ...; a
        config key equal to a run column gets a ``config.`` prefix; lists are JSON text),
        then the final metrics as ``final.<name>``, then what the run said of itself as
        ``info.<key>`` (``info.objective.metric``, ...; stores of schema 3 on).

        Args:
            study: Only this study; ``None`` for all.
        """
        with self._reading() as conn:  # opened first: which columns an old store has
            sql = (
                f"SELECT id, {', '.join(RUN_COLUMNS[1:])}, {self._owner}, config_json, final_json,"
                f" {self._info} FROM runs WHERE {_STUDY} ORDER BY study, created_at, rowid"
            )
            rows = conn.execute(sql, (study,)).fetchall()
        reserved = set(RUN_COLUMNS) | {"round", "metric", "value"}
        out: list[dict[str, Any]] = []
        columns: dict[str, dict[str, None]] = {"": {}, "final.": {}, "info.": {}}
        for row in rows:
            rec = dict(zip(RUN_COLUMNS, row[:12], strict=True))
            if rec["status"] == "running" and owner_is_gone(row[12]):
                rec["status"] = "interrupted"
                rec["error"] = rec["error"] or "its process ended without closing the run"
            for (prefix, seen), text, cell in zip(
                columns.items(), row[13:], ("config_json", "final_json", "info_json"), strict=True
            ):
                if not prefix or text:  # the config always, final and info when stored
                    for key, value in flatten(self._json(text, row[0], cell), prefix).items():
                        key = f"config.{key}" if key in reserved else key
                        seen[key] = None
                        rec[key] = value
            out.append(rec)
        df = pd.DataFrame(out, columns=[*RUN_COLUMNS, *(c for s in columns.values() for c in s)])
        df["wall_s"] = df["wall_s"].astype("float64")
        return df

    def records(
        self,
        study: str | None = None,
        run_ids: Iterable[str] | None = None,
        metrics: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Return records in long format joined with the run columns.

        Columns: ``run_id, round, metric, value`` then the columns of :meth:`runs` except
        ``error`` and ``final.*``. A NaN value logged (e.g. a diverged loss) reads back as NaN.

        Args:
            study: Only this study.
            run_ids: Only these runs.
            metrics: Only these metric names.
        """
        where: list[str] = []
        params: list[Any] = []
        if study is not None:
            where.append("run_id IN (SELECT id FROM runs WHERE study = ?)")
            params.append(study)
        if metrics is not None:
            mlist = list(metrics)
            where.append(f"metric IN ({','.join('?' * len(mlist))})")
            params.extend(mlist)
        ids = None if run_ids is None else sorted(set(run_ids))
        chunks = [None] if ids is None else [ids[i : i + 500] for i in range(0, len(ids), 500)]
        rows: list[Any] = []
        with self._reading() as conn:
            for chunk in chunks:  # at most 500 ids a query, well under SQLite's limit
                w = where + ([] if chunk is None else [f"run_id IN ({','.join('?' * len(chunk))})"])
                sql = "SELECT run_id, round, metric, value FROM records WHERE "
                rows += conn.execute(
                    sql + (" AND ".join(w) or "1"), params + (chunk or [])
                ).fetchall()
        rec = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
        rec["round"] = rec["round"].astype("int64")
        numeric = pd.to_numeric(rec["value"], errors="coerce")
        bad = numeric.isna() & rec["value"].notna()
        if bad.any():
            row = rec[bad].iloc[0]
            raise StoreError(
                f"{self.path} is damaged: run {shown(row['run_id'])} has records.value "
                f"{shown(repr(row['value']))} (round {row['round']}, metric "
                f"{shown(row['metric'])}), not a number; delete that run (decent.results."
                f"Store(...).delete_run({shown(repr(row['run_id']))})) and run it again, or "
                "pass another --out"
            )
        rec["value"] = numeric.astype("float64")
        df = rec.merge(_without_final(self.runs(study)), on="run_id", how="inner")
        df = df.sort_values(["study", "run_id", "metric", "round"], kind="stable")
        return df.reset_index(drop=True)

    def final(self, study: str | None = None) -> pd.DataFrame:
        """Return the final metrics: one row per run and metric (long format).

        A run's value of a metric is the one in its ``final`` dict when present, else its
        last recorded value. Columns: ``run_id, metric, value`` then the run columns.
        """
        rec = self.records(study)
        runs = self.runs(study)
        last = (
            rec.sort_values("round").groupby(["run_id", "metric"], sort=False).tail(1)
            if len(rec)
            else rec
        )
        keys = zip(last["run_id"], last["metric"], strict=True)
        values = dict(zip(keys, last["value"], strict=True))
        finals = [c for c in runs.columns if c.startswith("final.")]
        for rid, *stored in runs[["run_id", *finals]].itertuples(index=False):
            for col, value in zip(finals, stored, strict=True):
                if pd.notna(value):
                    with suppress(TypeError, ValueError):
                        values[(rid, col.removeprefix("final."))] = float(value)
        df = pd.DataFrame(
            [(r, m, v) for (r, m), v in values.items()], columns=["run_id", "metric", "value"]
        )
        df = df.merge(_without_final(runs), on="run_id", how="inner")
        return df.sort_values(["run_id", "metric"], kind="stable").reset_index(drop=True)


def _check_flush(flush_every: Any, flush_seconds: Any) -> None:
    """Refuse flush settings a writer cannot honour, before a run's row is touched."""
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
        raise ResultsError(f"flush_every must be an int >= 1, got {flush_every!r}")
    if not flush_seconds >= 0:
        raise ResultsError(f"flush_seconds must be >= 0, got {flush_seconds!r}")


class RunWriter:
    """Write one run's records, buffered and committed in all-or-nothing batches.

    Free of engine imports: an engine callback only needs ``log(round, metrics)``,
    ``finish(...)`` and ``fail(...)``. Used as a context manager, a clean exit finishes the
    run (if not finished already), ``KeyboardInterrupt`` marks it ``interrupted``, any other
    exception marks it ``failed`` with the traceback; the exception is re-raised.

    Attributes:
        run_id: The run's id.
        study: The study name.
        config: The plain (JSON) config.
        status: ``running`` until ``finish``/``fail``.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        study: str,
        config: dict[str, Any],
        *,
        flush_every: int = 50,
        flush_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.study = study
        self.config = config
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.status = "running"
        self._buffer: list[tuple[str, int, str, float]] = []
        self._pending_logs = 0
        self._t0 = time.monotonic()
        self._last_flush = self._t0

    @property
    def closed(self) -> bool:
        """Whether ``finish`` or ``fail`` was called."""
        return self.status != "running"

    def _check_open(self) -> None:
        if self.closed:
            raise RunClosedError(
                f"run {self.run_id!r} is already closed with status {self.status!r}; "
                "start a new run with store.start_run(...)"
            )

    def log(self, round: int, metrics: Mapping[str, Any]) -> None:
        """Buffer ``metrics`` at ``round``; commit when a batch is due.

        A batch is committed after ``flush_every`` calls or ``flush_seconds`` seconds since
        the last commit, whichever comes first. Logging a metric twice at one round keeps the
        last value.

        Args:
            round: Round index, an int >= 0.
            metrics: ``{name: value}``; values are anything ``float()`` accepts except strings
                (Python/numpy numbers, 0-d tensors). NaN is stored as NULL and read as NaN.

        Raises:
            ResultsError: For a bad round, metric name or value (nothing is buffered then).
            RunClosedError: After ``finish``/``fail``.
        """
        self._check_open()
        r = _check_round(round)
        if not isinstance(metrics, Mapping):
            raise ResultsError(
                f"metrics must be a mapping {{name: value}}, got {type(metrics).__name__}"
            )
        rows = [(self.run_id, r, _check_metric(k), _to_float(k, v)) for k, v in metrics.items()]
        self._buffer.extend(rows)
        self._pending_logs += 1
        waited = time.monotonic() - self._last_flush
        if self._pending_logs >= self.flush_every or waited >= self.flush_seconds:
            self.flush()

    def _write_buffer(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO records(run_id, round, metric, value) VALUES (?, ?, ?, ?)",
            self._buffer,
        )

    def _written(self) -> None:
        self._buffer.clear()
        self._pending_logs = 0
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Commit buffered records now as one transaction (all or nothing).

        On failure nothing of the batch is stored and the buffer is kept for a retry.
        """
        if self._buffer:
            with self.store._transaction() as conn:
                self._write_buffer(conn)
        self._written()

    def _close(self, status: str, final: Mapping[str, Any] | None, error: str | None) -> None:
        final_json = (
            None
            if final is None
            else canonical_json(to_plain(final, where="final", allow_nan=True), allow_nan=True)
        )
        wall = time.monotonic() - self._t0
        update = (
            "UPDATE runs SET status = ?, finished_at = ?, wall_s = ?, error = ?,"
            " final_json = COALESCE(?, final_json) WHERE id = ?"
        )
        args = (status, _now(), wall, error, final_json, self.run_id)
        try:
            with self.store._transaction() as conn:
                self._write_buffer(conn)
                conn.execute(update, args)
        except (sqlite3.DatabaseError, StoreError) as e:
            if status == "finished":
                raise  # never report a run finished whose records could not be stored
            lost = len(self._buffer)
            note = f"{lost} records since the last commit were not stored"
            with self.store._transaction() as conn:
                joined = f"{error}; {note}" if error else f"{e}; {note}"
                conn.execute(update, (*args[:3], joined, *args[4:]))
        self._written()
        self.status = status

    def finish(
        self,
        status: str = "finished",
        final: Mapping[str, Any] | None = None,
        message: str | None = None,
    ) -> None:
        """Commit buffered records and close the run with ``status``.

        Args:
            status: ``finished`` or ``diverged`` (or ``failed``/``interrupted``).
            final: Final metrics, JSON data (e.g. ``{"eval/loss@mean": 0.12}``).
            message: Why the run ended as it did (stored in ``error``; e.g. where a
                diverged run diverged).

        Raises:
            ResultsError: For an unknown status or non-JSON ``final``.
            RunClosedError: If already closed.
        """
        self._check_open()
        check_choice(status, STATUSES[1:])
        self._close(status, final, message)

    def fail(self, status: str = "failed", error: str | BaseException | None = None) -> None:
        """Commit buffered records and close the run as failed, interrupted or diverged.

        Args:
            status: ``failed``, ``interrupted`` or ``diverged``.
            error: A message or exception (its traceback is stored).
        """
        self._check_open()
        check_choice(status, ("failed", "interrupted", "diverged"))
        if isinstance(error, BaseException):
            error = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._close(status, None, error)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.closed:
            return
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt):
            self.fail("interrupted", exc)
        else:
            self.fail("failed", exc)

    def __repr__(self) -> str:
        return f"RunWriter(run_id={self.run_id!r}, study={self.study!r}, status={self.status!r})"


def _without_final(runs: pd.DataFrame) -> pd.DataFrame:
    """The run columns that records and final metrics are joined with."""
    return runs[[c for c in runs.columns if c != "error" and not c.startswith("final.")]]


def _plain_config(config: Any) -> tuple[dict[str, Any], str]:
    """A run's config as plain JSON data and its canonical JSON text."""
    plain = to_plain(config)
    if not isinstance(plain, dict):
        raise ResultsError(
            f"config must be a mapping (or pydantic model), got {type(config).__name__}"
        )
    return plain, canonical_json(plain)


def _check_round(round: Any) -> int:
    if isinstance(round, bool) or not hasattr(round, "__index__"):
        raise ResultsError(f"round must be an int >= 0, got {round!r}; pass the round index t")
    r = int(round.__index__())
    if r < 0:
        raise ResultsError(f"round must be an int >= 0, got {r}")
    return r


def _check_metric(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ResultsError(
            f"metric names must be non-empty strings, got {name!r}; use names like 'eval/loss@mean'"
        )
    return name


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, (str, bytes)):
        raise ResultsError(f"metric {name!r} has value {value!r}; values must be numbers")
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ResultsError(
            f"metric {name!r} has value {value!r} ({type(value).__name__}), which float() "
            f"rejects ({e}); log a number or a 0-d tensor"
        ) from None


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))
