"""Results store: runs and their records in an embedded SQLite database (no server).

Quick use::

    from decent.results import Store, load

    with Store("results") as store:
        if not store.is_finished(run_id_for("sweep", config)):
            with store.start_run("sweep", config) as run:
                for t in range(T):
                    run.log(t, {"eval/loss@mean": loss})
                run.finish(final={"eval/loss@mean": loss})

    df = load("results", study="sweep")  # long format joined with dotted config columns

See ``docs/results.md`` for the schema. The store knows nothing of training: recording a
run as it trains is :mod:`decent.run` (the recorder and the TensorBoard/MLflow sinks).
"""

from decent._names import safe_name
from decent.results._canon import flatten, run_id_for
from decent.results._errors import (
    MissingDependencyError,
    ResultsError,
    RunClosedError,
    RunExistsError,
    StoreError,
    StoreNotFoundError,
    StoreVersionError,
)
from decent.results._export import export, load
from decent.results._store import (
    DB_NAME,
    DONE_STATUSES,
    RECORD_COLUMNS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    UNFINISHED_STATUSES,
    RunWriter,
    Store,
    resolve_db_path,
    store_timeout,
)

__all__ = [
    "DB_NAME",
    "DONE_STATUSES",
    "RECORD_COLUMNS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "UNFINISHED_STATUSES",
    "MissingDependencyError",
    "ResultsError",
    "RunClosedError",
    "RunExistsError",
    "RunWriter",
    "Store",
    "StoreError",
    "StoreNotFoundError",
    "StoreVersionError",
    "export",
    "flatten",
    "load",
    "resolve_db_path",
    "run_id_for",
    "safe_name",
    "store_timeout",
]
