"""The answer first: which method wins, by how much, with what uncertainty.

Everything here is read from the store's runs and final metrics. What ranks the methods is
the task's own :class:`~decent.tasks.base.Objective`, which every run records with itself
(``info.objective.*``); nothing here names a metric to rank by. A method's name and whether
it is centralized are what its runs recorded too (``info.method.*``), not a registry lookup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from decent.metrics import metric_label
from decent.report import _format as fmt
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


@dataclass(frozen=True)
class Methods:
    """What the runs recorded of their methods: the label per ``algorithm.kind``
    (``"D-SGD"`` for ``dsgd``) and which kinds are centralized. A store written before runs
    recorded it (``info.method.*``) shows the kind and no centralized reference."""

    labels: dict[str, str]
    central: frozenset[str]

    @classmethod
    def of(cls, runs: pd.DataFrame) -> Methods:
        """The methods of ``runs`` (a :meth:`~decent.results.Store.runs` frame)."""
        if "algorithm.kind" not in runs.columns:
            return cls({}, frozenset())
        labels: dict[str, str] = {}
        central: set[str] = set()
        for _, r in runs.iterrows():
            kind = str(r["algorithm.kind"])
            label = r.get("info.method.label")
            if isinstance(label, str) and label:
                labels.setdefault(kind, label)
            if r.get("info.method.centralized") is True:
                central.add(kind)
        return cls(labels, frozenset(central))

    def label(self, kind: Any) -> str:
        """The method's own name for tables and legends, else its kind."""
        return self.labels.get(str(kind), str(kind))

    def centralized(self, kind: Any) -> bool:
        """Whether the method averages exactly (a centralized reference)."""
        return str(kind) in self.central


def _fmt(value: Any) -> str:
    return fmt.number(value) if isinstance(value, float) else str(value)


def _short(col: str) -> str:
    return SETTING_NAMES.get(col, col)


LAST = ("rounds", "eval_every", "algorithm.lr")
"""Settings that usually follow from the experiment's axes or are searched over (how long,
how often, the step size): tested last for following from another setting."""
GRID = 8
"""A method setting (``algorithm.*``) with more values than this that follows from no other
is a searched grid (a tuned step size)."""


@dataclass(frozen=True)
class Roles:
    """What each varying setting (except the seed) is to the experiment.

    ``axes``: what the study varies on purpose; ``searched``: method settings with more than
    :data:`GRID` values (a tuned step size); ``follows``: settings with one value per value
    of an earlier setting (``rounds`` of a fixed sample budget follows from ``M``;
    ``eval_every`` from ``rounds``), mapped to that setting.
    """

    axes: list[str]
    searched: list[str]
    follows: dict[str, str]


def roles(runs: pd.DataFrame, config_cols: Sequence[str]) -> Roles:
    """Sort the varying settings of ``runs`` into axes, searched grids and followers."""
    varying = [
        c
        for c in config_cols
        if c not in (SEED, "name", "config.name") and runs[c].astype(str).nunique() > 1
    ]
    order = sorted(
        varying, key=lambda c: (c in LAST, LAST.index(c) if c in LAST else 0, c != "algorithm.kind")
    )
    text = runs[varying].astype(str)
    axes: list[str] = []
    searched: list[str] = []
    follows: dict[str, str] = {}
    for i, c in enumerate(order):
        lead = next(
            (d for d in order[:i] if d not in follows and text.groupby(d)[c].nunique().max() == 1),
            None,
        )
        if lead is not None:
            follows[c] = lead
        elif c.startswith("algorithm.") and runs[c].nunique() > GRID:
            searched.append(c)
        else:
            axes.append(c)
    return Roles(axes, searched, follows)


def axes_of(runs: pd.DataFrame, config_cols: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(method columns, context columns)``: the varying ``algorithm.*`` settings, and
    every other varying setting except the seed and those following from another."""
    r = roles(runs, config_cols)
    varying = [c for c in config_cols if c in r.axes or c in r.searched or c in r.follows]
    method = [c for c in varying if c.startswith("algorithm.")]
    context = [c for c in varying if not c.startswith("algorithm.") and c not in r.follows]
    return method, context


def method_name(row: pd.Series, method_cols: Sequence[str], methods: Methods) -> str:
    """``"D-SGD, lr=0.05"``: the algorithm's label, then its other varying settings."""
    parts = [methods.label(row.get("algorithm.kind"))]
    for c in method_cols:
        if c == "algorithm.kind" or pd.isna(row.get(c)):
            continue
        parts.append(f"{c.split('.', 1)[1]}={_fmt(row[c])}")
    return ", ".join(parts)


def _values(runs: pd.DataFrame, c: str, methods: Methods) -> str:
    values = sorted(runs[c].dropna().unique().tolist(), key=_order)
    shown = (
        sorted(methods.label(v) for v in values)
        if c == "algorithm.kind"
        else [_fmt(v) for v in values]
    )
    if len(shown) > GRID and c != "algorithm.kind":
        return f"{len(shown)} values, {shown[0]} to {shown[-1]}"
    return ", ".join(shown)


def sentence(runs: pd.DataFrame, config_cols: Sequence[str], methods: Methods) -> str:
    """What was run, in one sentence: the axes with their values, the seeds, the searched
    grids, the settings that follow from an axis, and what was held fixed."""
    r = roles(runs, config_cols)
    parts = [f"{_short(c)}: {_values(runs, c, methods)}" for c in r.axes]
    what = "; ".join(parts) or "one configuration"
    if SEED in runs.columns and runs[SEED].nunique() > 1:
        what += f"; seeds {_values(runs, SEED, methods)} (averaged over)"
    extra = [f"Searched: {_short(c)} ({_values(runs, c, methods)})." for c in r.searched]
    lead: dict[str, list[str]] = {}
    for c, d in r.follows.items():
        lead.setdefault(d, []).append(_short(c))
    extra += [f"Set by {_short(d)}: {', '.join(cs)}." for d, cs in lead.items()]
    fixed = [
        c
        for c in config_cols
        if c not in (SEED, "name", "config.name")
        and runs[c].notna().any()
        and runs[c].astype(str).nunique() == 1
    ]
    named = [c for c in FIXED_FIRST if c in fixed]
    held = ", ".join(f"{_short(c)} = {_values(runs, c, methods)}" for c in named)
    rest = len(fixed) - len(named)
    tail = f" and {rest} other settings (under Configurations below)" if rest > 0 else ""
    side = "".join(f" {e}" for e in extra)
    return f"Varies {what}.{side} Held fixed: {held or 'nothing else'}{tail}."


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
    runs: pd.DataFrame,
    wide: pd.DataFrame,
    judged: Judged,
    config_cols: Sequence[str],
    methods: Methods | None = None,
) -> pd.DataFrame:
    """One row per (context, method): the objective's mean and 95% t-interval over seeds,
    the rank, the ratio to the best method and to the best centralized one of the same
    context (of the same setting on any graph, when the context has none), the worst
    node, bytes per node, and how many runs finished. Where a method setting was searched
    over a grid (:func:`roles`, e.g. a tuned ``lr``), each method keeps its best value only.

    ``wide`` holds one row per run id with its final metrics as columns; ``methods``
    names the methods (default: what ``runs`` recorded).
    """
    methods = methods if methods is not None else Methods.of(runs)
    method_cols, context_cols = axes_of(runs, config_cols)
    searched = roles(runs, config_cols).searched
    kept = [c for c in method_cols if c not in searched]
    data = runs.set_index("run_id").join(wide, how="left")
    data["_method"] = [method_name(r, method_cols, methods) for _, r in data.iterrows()]
    data["_family"] = [method_name(r, kept, methods) for _, r in data.iterrows()]
    data["_central"] = (
        data["algorithm.kind"].map(methods.centralized) if "algorithm.kind" in data else False
    )
    keys = data[context_cols].astype(str) if context_cols else pd.DataFrame(index=data.index)
    data["_context"] = (
        [tuple(v) for v in keys.itertuples(index=False)] if context_cols else [()] * len(data)
    )
    rows: list[dict[str, Any]] = []
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
            "_family": g["_family"].iloc[0],
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
    sign = 1.0 if judged.lower_is_better else -1.0
    if searched:  # a searched grid (a tuned step size): each method at its best value
        table["_key"] = (table["mean"] * sign).fillna(math.inf)
        best_of = table.groupby(["_context", "_family"], sort=False)["_key"].idxmin()
        table = table.loc[sorted(best_of)].drop(columns=["_key"]).reset_index(drop=True)
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
    order = table.sort_values([*context_cols, "_key"], key=_sort_key)
    return order.drop(columns=["_key"]).reset_index(drop=True)


def verdict(table: pd.DataFrame, judged: Judged, context_cols: Sequence[str]) -> str:
    """The headline in one sentence: the best method, its value, and how far the next is
    behind; with several settings, how many each method wins."""
    if table.empty or not table["mean"].notna().any():
        return ""
    best = table[table["rank"] == 1]
    if not context_cols:
        top = best.iloc[0]
        best_ = "the best " if len(table) > 1 else ""
        text = f"{top['method']} reaches {best_}{judged.label} = {fmt.number(top['mean'])}" + (
            "" if math.isnan(top["ci95"]) else f" ± {fmt.number(top['ci95'])}"
        )
        rest = table[(table["rank"] != 1) & table["mean"].notna()]
        if len(rest):
            second = rest.iloc[0]
            text += f"; the runner-up, {second['method']}, has {fmt.ratio(second['vs_best'])} that value"
        return text + "."
    wins = best["_family"].value_counts()
    blocks = table["_context"].nunique()
    what = " × ".join(_short(c) for c in context_cols)
    return (
        f"Best {judged.label} per setting ({what}): "
        + "; ".join(f"{m} in {int(n)} of {blocks}" for m, n in wins.items())
        + "."
    )


def _sort_key(s: pd.Series) -> pd.Series:
    """Numbers by value (M = 16 before 256), anything else by its text."""
    if s.name == "_key":
        return s
    as_num = pd.to_numeric(s, errors="coerce")
    return as_num if as_num.notna().all() else s.astype(str)


def headline_html(table: pd.DataFrame, judged: Judged, context_cols: Sequence[str]) -> str:
    """The headline table, one block of rows per context, best first."""
    if table.empty:
        return "<p>No finished runs to rank.</p>"
    way = "lower is better" if judged.lower_is_better else "higher is better"

    def mean_ci(r: dict[str, Any]) -> str:
        ci = "" if math.isnan(r["ci95"]) else f" ± {fmt.number(r['ci95'])}"
        return fmt.number(r["mean"]) + ci

    def method(r: dict[str, Any]) -> str:
        central = " <small>(centralized)</small>" if r["central"] else ""
        return f"<td>{html.escape(r['method'])}{central}</td>"

    # (header, the column a cell sorts by, its text); a text cell is whole HTML
    columns: list[tuple[str, str | None, Any]] = [
        ("rank", "rank", lambda r: str(r["rank"]) if pd.notna(r["rank"]) else "—"),
        ("method", None, method),
        (f"{judged.label} (mean ± 95% CI)", "mean", mean_ci),
        ("seeds", "seeds", lambda r: str(r["seeds"])),
        ("× best", "vs_best", lambda r: fmt.ratio(r["vs_best"])),
        ("× centralized", "vs_central", lambda r: fmt.ratio(r["vs_central"])),
        ("worst node", "worst_node", lambda r: fmt.number(r["worst_node"])),
        ("bytes / node", "bytes_per_node", lambda r: fmt.size(r["bytes_per_node"])),
        ("runs", None, lambda r: fmt.td(r["runs"])),
    ]
    optional = ("vs_central", "worst_node", "bytes_per_node")
    # a column with no value in any row says nothing
    columns = [c for c in columns if c[1] not in optional or table[c[1]].notna().any()]
    header = [*(_short(c) for c in context_cols), *(h for h, _, _ in columns)]
    records = table.to_dict("records")
    rows = [
        [fmt.td(_fmt(r[c])) for c in context_cols]
        + [f(r) if col is None else fmt.num_td(r[col], f(r)) for _, col, f in columns]
        for r in records
    ]
    kinds = ["headline-row best" if r["rank"] == 1 else "headline-row" for r in records]
    caption = (
        f"Ranked by {html.escape(judged.label)} (<code>{html.escape(judged.metric)}</code>, "
        f"{way}) at the last round, over the seeds that finished; 95% Student-t interval. "
        "× best: the ratio to the best method of the same row block."
    )
    if table["vs_central"].notna().any():
        caption += (
            " × centralized: to the best centralized method (exact averaging) of the block,"
            " or of the same setting on any graph."
        )
    if not judged.recorded:
        caption += (
            " These runs were written before runs recorded their objective (store schema 3);"
            " the objective was read from the metrics they recorded."
        )
    table_html = fmt.table(header, rows, kinds, classes="sortable headline")
    return f'<p class="caption">{caption}</p>{table_html}'
