"""How the report writes numbers: three significant digits, sizes in binary units.

``number(0.00035912)`` is ``"0.000359"``, ``number(2.5e-07)`` is ``"2.5e-7"``,
``size(98_304_000)`` is ``"93.8 MiB"``, ``ratio(1.2345)`` is ``"1.23×"``; a missing value
(``None``, NaN) is ``"—"``. :func:`table_html` writes a study's own table with these rules,
choosing per column from its name (``bytes``: a size, ``× ...``: a ratio) and values.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

DIGITS = 3
"""Significant digits of every number the report prints."""
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
MISSING = "—"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def number(value: Any) -> str:
    """``value`` to :data:`DIGITS` significant digits; integers as integers, up to 1e6."""
    if _missing(value):
        return MISSING
    if not _numeric(value):
        return str(value)
    v = float(value)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    text = f"{v:.{DIGITS}g}"
    if "e" in text:  # 2.5e-07 -> 2.5e-7
        mantissa, exp = text.split("e")
        text = f"{mantissa}e{int(exp)}"
    return text


def size(value: Any) -> str:
    """A byte count in binary units to :data:`DIGITS` significant digits (``"93.8 MiB"``)."""
    if _missing(value):
        return MISSING
    v = float(value)
    unit = 0
    while abs(v) >= 1024 and unit < len(UNITS) - 1:
        v /= 1024
        unit += 1
    if unit == 0:
        return f"{round(v):d} B"
    return f"{float(f'{v:.{DIGITS}g}'):g} {UNITS[unit]}"


def ratio(value: Any) -> str:
    """A ratio to :data:`DIGITS` significant digits with a times sign (``"1.23×"``)."""
    return MISSING if _missing(value) else f"{number(value)}×"


def is_size(column: str) -> bool:
    """Whether a column holds byte counts, by its name (``bytes / node``, ``comm/bytes``)."""
    return "bytes" in column.lower()


def cell(column: str, value: Any) -> str:
    """``value`` of ``column`` as the report writes it: a size where the column's name says
    bytes, a ratio where it starts with ``×`` (``× reference``), else a number or text."""
    if is_size(column):
        return size(value)
    if column.lstrip().startswith("×"):
        return ratio(value)
    if _numeric(value) or _missing(value):
        return number(value)
    return str(value)


def esc(text: Any) -> str:
    """``text`` escaped for HTML (``None``: empty)."""
    return html.escape("" if text is None else str(text))


def td(text: Any, cls: str = "") -> str:
    """A table cell holding ``text`` (``None``: empty), escaped."""
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{esc(text)}</td>"


def num_td(value: Any, text: str) -> str:
    """A right-aligned cell showing ``text`` that sorts by ``value`` (``data-v``; none when
    ``value`` is missing or not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    data = "" if math.isnan(v) else f' data-v="{v!r}"'
    return f'<td class="num"{data}>{html.escape(text)}</td>'


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_class: str | Sequence[str] = "",
    classes: str = "sortable",
    titles: Sequence[str] = (),
) -> str:
    """A table of ``rows`` of cells (:func:`td`, :func:`num_td`) that sorts by a click on a
    header; ``row_class`` is one class for every row or one per row, ``titles`` the
    headers' tooltips."""
    tips = list(titles) or [""] * len(header)
    head = "".join(
        f'<th title="{html.escape(t)}">{html.escape(h)}</th>' if t else f"<th>{html.escape(h)}</th>"
        for h, t in zip(header, tips, strict=True)
    )
    kinds = [row_class] * len(rows) if isinstance(row_class, str) else list(row_class)
    body = "".join(
        (f'<tr class="{k}">' if k else "<tr>") + "".join(r) + "</tr>"
        for k, r in zip(kinds, rows, strict=True)
    )
    return (
        f'<div class="scroll"><table class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def table_html(frame: pd.DataFrame, classes: str = "sortable") -> str:
    """A study's own table as HTML, numbers written by :func:`cell` and kept sortable by
    value (``data-v``)."""
    cols = [str(c) for c in frame.columns]
    rows = [
        [
            num_td(v, cell(c, v)) if _numeric(v) else td(cell(c, v))
            for c, v in zip(cols, r, strict=True)
        ]
        for r in frame.itertuples(index=False)
    ]
    return table(cols, rows, classes=classes)
