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


def is_ratio(column: str) -> bool:
    """Whether a column holds ratios, by its name (``× reference``)."""
    return column.lstrip().startswith("×")


def cell(column: str, value: Any) -> str:
    """``value`` of ``column`` as the report writes it."""
    if is_size(column):
        return size(value)
    if is_ratio(column):
        return ratio(value)
    if _numeric(value) or _missing(value):
        return number(value)
    return str(value)


def table_html(
    table: pd.DataFrame, classes: str = "sortable", row_class: str = "", columns: Sequence[str] = ()
) -> str:
    """A study's own table as HTML, numbers written by :func:`cell` and kept sortable by
    value (``data-v``); ``columns`` orders and selects the columns (default: all)."""
    cols = list(columns) or list(table.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    rows = []
    tr = f'<tr class="{row_class}">' if row_class else "<tr>"
    for rec in table[cols].to_dict("records"):
        cells = []
        for c in cols:
            v = rec[c]
            if _numeric(v):
                data = "" if _missing(v) else f' data-v="{float(v)!r}"'
                cells.append(f'<td class="num"{data}>{html.escape(cell(str(c), v))}</td>')
            else:
                cells.append(f"<td>{html.escape(cell(str(c), v))}</td>")
        rows.append(tr + "".join(cells) + "</tr>")
    return (
        f'<div class="scroll"><table class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
