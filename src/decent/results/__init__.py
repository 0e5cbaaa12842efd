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

See ``docs/results.md`` for the schema. Optional sinks (``TensorBoardSink``, ``MLflowSink``,
extras ``decent[tensorboard]`` and ``decent[mlflow]``) live in :mod:`decent.results.sinks` and
are imported lazily: ``import decent.results`` imports neither tool.
"""

from typing import Any

from decent.results._canon import flatten, run_id_for
from decent.results._errors import (
    MissingDependencyError,
    ResultsError,
    RunClosedError,
    RunExistsError,
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
)

_LAZY_SINKS = ("MLFLOW_STATUS", "MLflowSink", "TensorBoardSink", "make_sinks", "mlflow_metric_name")


def __getattr__(name: str) -> Any:
    """Import the optional sinks on first use (they pull in the engine, torch and the tools)."""
    if name in _LAZY_SINKS:
        from decent.results import sinks

        return getattr(sinks, name)
    raise AttributeError(f"module 'decent.results' has no attribute {name!r}")


__all__ = [
    "DB_NAME",
    "DONE_STATUSES",
    "MLFLOW_STATUS",
    "RECORD_COLUMNS",
    "RUN_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "UNFINISHED_STATUSES",
    "MLflowSink",
    "MissingDependencyError",
    "ResultsError",
    "RunClosedError",
    "RunExistsError",
    "RunWriter",
    "Store",
    "StoreVersionError",
    "TensorBoardSink",
    "export",
    "flatten",
    "load",
    "make_sinks",
    "mlflow_metric_name",
    "resolve_db_path",
    "run_id_for",
]
