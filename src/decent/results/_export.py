"""One-call loading for notebooks, and export to CSV / Parquet."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from decent.results._errors import MissingDependencyError
from decent.results._files import open_for_writing
from decent.results._store import Store, check_choice, opened

EXPORT_FORMATS = ("csv", "parquet")
EXPORT_TABLES = ("records", "runs", "final")


def load(
    path: str | os.PathLike[str] | Store,
    study: str | None = None,
    metrics: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Load records joined with flattened configs: one call for a notebook.

    Args:
        path: A results directory (or ``.sqlite`` file, or an open :class:`Store`).
        study: Only this study.
        metrics: Only these metric names.

    Returns:
        Long DataFrame: ``run_id, round, metric, value, study, name, status, ...`` and one
        dotted column per config leaf (``algorithm.kind``, ``topology.num_nodes``, ``seed``).

    Raises:
        StoreNotFoundError: If there is no results store at ``path`` (a ``FileNotFoundError``).

    Example:
        >>> df = load("results", study="ring-vs-torus")  # doctest: +SKIP
        >>> df[df.metric == "eval/loss@mean"].groupby(["algorithm.kind", "round"]).value.mean()
        ... # doctest: +SKIP
    """
    with opened(path) as store:
        return store.records(study=study, metrics=metrics)


def export(
    store: Store | str | os.PathLike[str],
    study: str | None,
    path: str | os.PathLike[str],
    format: str = "csv",
    *,
    table: str = "records",
) -> Path:
    """Write a study's records (or runs, or final metrics) to CSV or Parquet.

    Args:
        store: A :class:`Store` or a results directory.
        study: The study to export (``None``: all studies).
        path: Output file.
        format: ``"csv"`` or ``"parquet"`` (Parquet needs ``pyarrow``).
        table: ``"records"`` (long format joined with config, as :func:`load`), ``"runs"``
            (one row per run) or ``"final"`` (final metrics per run).

    Returns:
        The path written.

    Raises:
        ResultsError: For an unknown ``format`` or ``table``.
        MissingDependencyError: For Parquet without ``pyarrow`` installed.
        OSError: ``path`` is a symbolic link (it is never written through, see
            :mod:`decent.results._files`), or cannot be written.
    """
    check_choice(format, EXPORT_FORMATS, "format")
    check_choice(table, EXPORT_TABLES, "table")
    if format == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise MissingDependencyError(
            "exporting to Parquet needs pyarrow, which is not installed; "
            "run `pip install 'decent[parquet]'` (pyarrow) or use format='csv'"
        )
    with opened(store) as s:
        df = getattr(s, table)(study=study)  # Store.records, .runs or .final
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if format == "csv":
        with open_for_writing(out, "w", newline="") as fh:
            df.to_csv(fh, index=False)
    else:
        with open_for_writing(out, "wb") as fh:
            df.to_parquet(fh, index=False, engine="pyarrow")
    return out
