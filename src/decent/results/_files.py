"""Writing files without following symbolic links.

A results directory may be shared, and a link planted in it (``R/<study>.records.csv ->
~/.bashrc``, ``R/report/<study> -> /elsewhere``) must not make ``decent export`` or
``decent report`` write outside it. Writers open files with ``O_NOFOLLOW`` and check the
folders they write into; a link is refused with one line (an ``OSError`` with ``ELOOP``,
which :func:`~decent.results._errors.os_error_text` words). A link to something that is
not a regular file or a folder (``/dev/stdout``, a pipe, a terminal) is written through:
streaming there overwrites nothing.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Any


def _refused(path: Path) -> OSError:
    return OSError(errno.ELOOP, "it is a symbolic link", str(path))


def _is_stream_link(path: Path) -> bool:
    """Whether ``path`` is a link to a pipe, a terminal or a device (``/dev/stdout``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_folder(
    folder: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> None:
    """Refuse to write into ``folder`` if it, or a folder strictly between ``root`` and it,
    is a symbolic link (``root`` itself is the user's choice), or if an entry already in it is one (the next writer would follow it).

    Raises:
        OSError: ``ELOOP``, naming the link.
    """
    folder = Path(folder)
    parts = [folder]
    if root is not None:
        top = Path(root)
        parent = folder
        while top in parent.parent.parents:  # the folders strictly between root and folder
            parent = parent.parent
            parts.append(parent)
    for part in parts:
        if part.is_symlink():
            raise _refused(part)
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.is_symlink():
                raise _refused(entry)


def open_for_writing(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing that never follows a symbolic link to a file.

    Creates or truncates ``path`` (``mode`` ``"w"`` or ``"wb"``) with ``O_NOFOLLOW``.

    Raises:
        OSError: ``ELOOP`` when ``path`` is a link (except to a pipe, terminal or device).
    """
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    if target.is_symlink():
        if not _is_stream_link(target):
            raise _refused(target)
        flags &= ~getattr(os, "O_NOFOLLOW", 0)
        flags &= ~os.O_TRUNC
    try:
        fd = os.open(target, flags, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP:  # made a link meanwhile
            raise _refused(target) from None
        raise
    return open(fd, mode, **kwargs)


__all__ = ["check_folder", "open_for_writing"]
