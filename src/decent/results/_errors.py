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


def os_error_text(err: OSError) -> str:
    """One line from a file-system error: which file, what went wrong, what to do.

    ``the disk is full writing /x/y.csv (No space left on device); free some space or pick
    another path; nothing else was changed``, ``cannot write /x/y.csv: Permission denied; ...``.
    """
    import errno

    where = err.filename if err.filename is not None else "a file"
    reason = err.strerror or str(err)
    if isinstance(err, IsADirectoryError):
        return f"{where} is a directory; give a file path (e.g. {where}/out.csv)"
    if isinstance(err, NotADirectoryError | FileExistsError):
        return f"{where} is a file where a directory is needed; pick another path"
    if isinstance(err, PermissionError):
        return f"cannot write {where}: {reason}; pick a writable path"
    if isinstance(err, FileNotFoundError):
        return f"{where} does not exist ({reason}); check the path"
    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return (
            f"the disk is full writing {where} ({reason}); free some space or pick another "
            "path; what was written before is kept"
        )
    if err.errno == errno.ELOOP:
        return (
            f"refused to write {where}: it is a symbolic link (decent never writes through "
            "one); remove the link or pick another path"
        )
    return f"{where}: {reason}"
