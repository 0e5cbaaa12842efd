"""Names that become file names: study names, report folders, export files.

A study name is user text that ends up in paths (``<out>/report/<study>``,
``<out>/<study>.records.csv``). Configs accept only :data:`NAME_PATTERN` (letters, digits
and ``. _ + = , @ -``, not starting with ``.``, at most 100 characters, never ``..``), and
every path built from a stored name goes through :func:`safe_name`, so nothing is written
outside the results directory even for names stored by older versions.
"""

from __future__ import annotations

import hashlib
import re

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._+=,@-]{0,99}$"
"""What a study name may be (a regular expression)."""

_NAME = re.compile(NAME_PATTERN)
_BAD = re.compile(r"[^A-Za-z0-9._+=,@-]")


def is_safe_name(text: str) -> bool:
    """Whether ``text`` can be used as a file name as it is (all of it: ``$`` alone would
    let a trailing newline through)."""
    return bool(_NAME.fullmatch(text)) and ".." not in text


def shown(text: object, *, keep_newlines: bool = False) -> str:
    """User text made safe to print on a terminal: every control character (ESC, CR, BEL,
    the C1 controls, bidirectional overrides, ...) is shown as its escape (``\\x1b``), so a
    name cannot set the terminal title, clear the screen or hide text.

    ``keep_newlines`` keeps ``\\n`` (a message of several lines), nothing else.

    Example:
        >>> shown("run\\x1b]0;owned\\x07")
        'run\\\\x1b]0;owned\\\\x07'
        >>> shown("plain (ok) [x]")
        'plain (ok) [x]'
    """
    out = []
    for ch in str(text):
        if ch.isprintable() or (keep_newlines and ch == "\n"):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def safe_name(text: str) -> str:
    """``text`` as one safe file name: itself when safe, else cleaned plus a short hash.

    Example:
        >>> safe_name("flagship")
        'flagship'
        >>> safe_name("../../evil")
        'evil-0fbfd372'
    """
    if is_safe_name(text):
        return text
    cleaned = _BAD.sub("-", text).replace("..", "-").strip(".-") or "study"
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{cleaned[:80]}-{digest}"
