"""Errors raised by the results store."""

from __future__ import annotations


class ResultsError(ValueError):
    """Bad input to the results store (a config, a metric, a status, a path)."""


class RunExistsError(ResultsError):
    """A run with this id already finished; it is not overwritten unless asked."""


class RunClosedError(RuntimeError):
    """A ``RunWriter`` was used after ``finish``/``fail``."""


class StoreError(ResultsError):
    """The store cannot be opened, read or written; the message names the file and the fix."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no results store at the path (both a ``StoreError`` and a ``FileNotFoundError``)."""


class StoreVersionError(StoreError):
    """The database was written by a newer schema version than this package knows."""


class MissingDependencyError(ImportError):
    """An optional dependency needed for the requested operation is not installed."""
