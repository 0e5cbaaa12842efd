"""The answer first: which method wins, by how much, with what uncertainty.

Everything here is read from the store's runs and final metrics. What ranks the methods is
the task's own :class:`~decent.tasks.base.Objective`, which every run records with itself
(``info.objective.*``); nothing here names a metric to rank by.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from decent.algorithms import ALGORITHMS
from decent.metrics import metric_label
from decent.report._plots import SETTING_NAMES
from decent.results import DONE_STATUSES

SEED = "seed"
FIXED_FIRST = (
    "task.kind",
    "task.dataset.kind",
    "task.dim",
    "topology.kind",
    "topology.num_nodes",
    "rounds",
    "algorithm.kind",
    "task.batch_size",
    "task.heterogeneity",
)
"""Settings named first in the "held fixed" sentence (the rest are counted)."""


@dataclass(frozen=True)
class Judged:
    """The objective the report ranks by, as the runs recorded it."""

    metric: str
    label: str
    lower_is_better: bool
    worst_node: str | None
    log_scale: bool
    recorded: bool  # False: an old store that did not say, guessed from its records


def objective(runs: pd.DataFrame, present: set[str]) -> Judged | None:
    """The objective most runs recorded; for stores older than schema 3, the
    suboptimality where recorded, else the loss at the average."""
    col = "info.objective.metric"
    if col in runs.columns and runs[col].notna().any():
        rows = runs[runs[col].notna()]
        key = rows[col].mode().iloc[0]
        row = rows[rows[col] == key].iloc[0]
        worst = row.get("info.objective.worst_node")
        return Judged(
            str(key),
            str(row.get("info.objective.label") or metric_label(str(key))),
            bool(row.get("info.objective.lower_is_better", True)),
            None if worst is None or pd.isna(worst) else str(worst),
            bool(row.get("info.objective.log_scale", False)),
            True,
        )
    for key, worst in (("eval/subopt@mean", "eval/subopt@node_max"), ("eval/loss@mean", None)):
        if key in present:
            log = key.startswith("eval/subopt")
            return Judged(key, metric_label(key), True, worst, log, False)
    return None


def method_label(kind: Any) -> str:
    """The algorithm's own name for tables and legends (``"D-SGD"`` for ``dsgd``)."""
    cls = ALGORITHMS.get(str(kind))
    return (cls.label or cls.name) if cls is not None else str(kind)


def is_centralized(kind: Any) -> bool:
    cls = ALGORITHMS.get(str(kind))
    return bool(cls is not None and cls.centralized)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if not value.is_integer() or abs(value) >= 1e6 else str(int(value))
    return str(value)


def _short(col: str) -> str:
    return SETTING_NAMES.get(col, col)


def axes_of(runs: pd.DataFrame, config_cols: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(method columns, context columns)``: the varying ``algorithm.*`` settings, and
    every other varying setting except the seed."""
    varying = [c for c in config_cols if runs[c].astype(str).nunique() > 1 and c != SEED]
    method = [c for c in varying if c.startswith("algorithm.")]
    context = [c for c in varying if not c.startswith("algorithm.")]
    return method, context


def method_name(row: pd.Series, method_cols: Sequence[str]) -> str:
    """``"D-SGD, lr=0.05"``: the algorithm's label, then its other varying settings."""
    parts = [method_label(row.get("algorithm.kind"))]
    for c in method_cols:
        if c == "algorithm.kind" or pd.isna(row.get(c)):
            continue
        parts.append(f"{c.split('.', 1)[1]}={_fmt(row[c])}")
    return ", ".join(parts)


def sentence(runs: pd.DataFrame, config_cols: Sequence[str]) -> str:
    """One sentence: what varies (with its values) and what was held fixed."""
    varying, fixed = [], []
    for c in sorted(config_cols, key=lambda c: c == SEED):  # the seed last
        if c in ("name", "config.name"):  # a run's name says nothing of the setting
            continue
        values = runs[c].dropna().unique().tolist()
        if runs[c].astype(str).nunique() > 1:
            shown = [method_label(v) for v in values] if c == "algorithm.kind" else values
            name = "seed (averaged over)" if c == SEED else _short(c)
            if len(values) > 8:  # a tuned grid: its size, not its values
                varying.append(f"{name} ({len(values)} values)")
                continue
            text = ", ".join(_fmt(v) for v in sorted(shown, key=_order))
            varying.append(f"{name}: {text}")
        elif values:
            fixed.append(c)
    named = [c for c in FIXED_FIRST if c in fixed]
    held = ", ".join(
        f"{_short(c)} = {method_label(runs[c].iloc[0]) if c == 'algorithm.kind' else _fmt(runs[c].iloc[0])}"
        for c in named
    )
    rest = len(fixed) - len(named)
    tail = f" and {rest} other settings (under Configurations below)" if rest > 0 else ""
    what = "; ".join(varying) or "nothing (one configuration)"
    return f"Varies: {what}. Held fixed: {held or 'nothing else'}{tail}."


def _order(value: Any) -> tuple[int, float, str]:
    """Numbers by value (2, 16, 128), then text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _ci95(values: np.ndarray) -> float:
    if len(values) < 2:
        return math.nan
    from scipy.stats import t as student_t

    return float(
        student_t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    )


def headline(
    runs: pd.DataFrame, wide: pd.DataFrame, judged: Judged, config_cols: Sequence[str]
) -> pd.DataFrame:
    """One row per (context, method): the objective's mean and 95% t-interval over seeds,
    the rank, the ratio to the best method and to the best centralized one of the same
    context (of the same setting on any graph, when the context has none), the worst
    node, bytes per node, and how many runs finished.

    ``wide`` holds one row per run id with its final metrics as columns.
    """
    method_cols, context_cols = axes_of(runs, config_cols)
    data = runs.set_index("run_id").join(wide, how="left")
    data["_method"] = [method_name(r, method_cols) for _, r in data.iterrows()]
    data["_central"] = (
        data["algorithm.kind"].map(is_centralized) if "algorithm.kind" in data else False
    )
    keys = data[context_cols].astype(str) if context_cols else pd.DataFrame(index=data.index)
    data["_context"] = (
        [tuple(v) for v in keys.itertuples(index=False)] if context_cols else [()] * len(data)
    )
    rows: list[dict[str, Any]] = []
    sign = 1.0 if judged.lower_is_better else -1.0
    for (context, method), g in data.groupby(["_context", "_method"], sort=False):
        ok = g[g["status"] == "finished"]
        done = g[g["status"].isin(DONE_STATUSES)]
        values = (
            ok[judged.metric].dropna().to_numpy(dtype="float64")
            if judged.metric in ok
            else np.array([])
        )
        row: dict[str, Any] = dict(zip(context_cols, context, strict=True))
        row |= {
            "method": method,
            "central": bool(g["_central"].iloc[0]),
            "mean": float(values.mean()) if len(values) else math.nan,
            "ci95": _ci95(values),
            "seeds": len(values),
            "runs": f"{len(ok)} of {len(g)} finished"
            + (f", {len(done) - len(ok)} diverged" if len(done) > len(ok) else ""),
        }
        for name, key in (
            ("worst_node", judged.worst_node),
            ("bytes_per_node", "comm/bytes_per_node_mean"),
        ):
            v = ok[key].dropna() if key is not None and key in ok else pd.Series([], dtype=float)
            row[name] = float(v.mean()) if len(v) else math.nan
        row["_context"] = context
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    topo = [  # the graph, not its size: a centralized method at another M is no reference
        i
        for i, c in enumerate(context_cols)
        if c.startswith("topology.") and c != "topology.num_nodes"
    ]

    def off_graph(context: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v for i, v in enumerate(context) if i not in topo)

    best: dict[Any, float] = {}
    central: dict[Any, float] = {}
    central_any: dict[tuple[str, ...], float] = {}
    for context, g in table.groupby("_context", sort=False):
        finite = g[np.isfinite(g["mean"])]
        if len(finite):
            best[context] = float((finite["mean"] * sign).min() * sign)
        c = finite[finite["central"]]
        if len(c):
            central[context] = float((c["mean"] * sign).min() * sign)
            prev = central_any.get(off_graph(context))
            v = central[context]
            central_any[off_graph(context)] = (
                v if prev is None else (min if sign > 0 else max)(prev, v)
            )
    table["vs_best"] = [
        m / best.get(c, math.nan) for m, c in zip(table["mean"], table["_context"], strict=True)
    ]
    table["vs_central"] = [
        m / central.get(c, central_any.get(off_graph(c), math.nan))
        for m, c in zip(table["mean"], table["_context"], strict=True)
    ]
    table["_key"] = table["mean"] * sign
    table["rank"] = table.groupby("_context", sort=False)["_key"].rank(method="min").astype("Int64")
    order = table.sort_values(
        [*context_cols, "_key"], key=lambda s: s if s.name == "_key" else s.astype(str)
    )
    return order.drop(columns=["_key"]).reset_index(drop=True)


def headline_html(table: pd.DataFrame, judged: Judged, context_cols: Sequence[str]) -> str:
    """The headline table, one block of rows per context, best first."""
    if table.empty:
        return "<p>No finished runs to rank.</p>"
    way = "lower is better" if judged.lower_is_better else "higher is better"
    header = [
        *(_short(c) for c in context_cols),
        "rank",
        "method",
        f"{judged.label} (mean ± 95% CI)",
        "seeds",
        "× best",
        "× centralized",
        "worst node",
        "bytes / node",
        "runs",
    ]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for r in table.to_dict("records"):
        ci = "" if math.isnan(r["ci95"]) else f" ± {r['ci95']:.2g}"
        cells = [f"<td>{html.escape(_fmt(r[c]))}</td>" for c in context_cols]
        cells += [
            _num(r["rank"], str(r["rank"]) if pd.notna(r["rank"]) else "—"),
            f"<td>{html.escape(r['method'])}{' <small>(centralized)</small>' if r['central'] else ''}</td>",
            _num(r["mean"], ("—" if math.isnan(r["mean"]) else f"{r['mean']:.4g}") + ci),
            _num(r["seeds"], str(r["seeds"])),
            _num(r["vs_best"], _ratio(r["vs_best"])),
            _num(r["vs_central"], _ratio(r["vs_central"])),
            _num(r["worst_node"], _g(r["worst_node"])),
            _num(r["bytes_per_node"], _g(r["bytes_per_node"])),
            f"<td>{html.escape(r['runs'])}</td>",
        ]
        first = ' class="headline-row best"' if r["rank"] == 1 else ' class="headline-row"'
        body.append(f"<tr{first}>{''.join(cells)}</tr>")
    caption = (
        f"Ranked by {html.escape(judged.label)} (<code>{html.escape(judged.metric)}</code>, "
        f"{way}) at the last round, over the seeds that finished; 95% Student-t interval. "
        "× best: the ratio to the best method of the same row block; × centralized: to the "
        "best centralized method (exact averaging) of the block, or of the same setting on "
        "any graph."
    )
    if not judged.recorded:
        caption += (
            " These runs were written before runs recorded their objective (store schema 3);"
            " the objective was read from the metrics they recorded."
        )
    return (
        f'<p class="caption">{caption}</p><div class="scroll"><table class="sortable headline">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _g(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _ratio(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.3g}×"


def _num(value: Any, text: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    data = "" if math.isnan(v) else f' data-v="{v!r}"'
    return f'<td class="num"{data}>{html.escape(text)}</td>'


SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, i) {
    th.title = (th.title ? th.title + ' ' : '') + '(click to sort)';
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.from(body.rows), up = th.dataset.up !== '1';
      t.querySelectorAll('th').forEach(function (o) { delete o.dataset.up; });
      th.dataset.up = up ? '1' : '0';
      function key(r) {
        var c = r.cells[i]; if (!c) return '';
        return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), d;
        if (typeof x === 'number' && typeof y === 'number') d = x - y;
        else if (typeof x === 'number') d = -1; else if (typeof y === 'number') d = 1;
        else d = String(x).localeCompare(String(y), undefined, {numeric: true});
        return up ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
"""Click a header to sort a table by it (numbers by their value, not their text)."""
