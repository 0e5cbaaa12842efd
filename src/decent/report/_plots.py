"""Figures from the results store's long records (``decent.results.load``).

Every figure is a :class:`matplotlib.figure.Figure` on the Agg canvas, created without
``pyplot``: no global backend switch, nothing left open, safe in worker processes and
notebooks alike (Jupyter displays a returned ``Figure``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import networkx as nx
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from decent.results import RECORD_COLUMNS, RUN_COLUMNS


class ReportError(ValueError):
    """Bad input to a plotting or report function (unknown metric, column, option)."""


BANDS = ("std", "ci95", None)
LOG_Y_PREFIXES = ("eval/subopt", "consensus/")
_X_LABELS = {
    "round": "round",
    "grad_evals": "gradient evaluations",
    "comm/bytes": "bytes communicated",
    "time/wall_s": "wall-clock time (s)",
    "time/sim": "simulated time (s)",
}

SETTING_NAMES = {
    "algorithm.kind": "method",
    "algorithm.lr": "lr",
    "topology.kind": "graph",
    "topology.num_nodes": "M",
    "task.kind": "task",
}
"""How figure titles and the report's tables name a config column."""

Hue = str | Sequence[str] | None


def config_columns(df: pd.DataFrame) -> list[str]:
    """Return the dotted config columns of a records or runs DataFrame."""
    fixed = set(RUN_COLUMNS) | set(RECORD_COLUMNS)
    return [c for c in df.columns if c not in fixed and not str(c).startswith(("final.", "info."))]


def _as_cols(hue: Hue) -> list[str]:
    if hue is None:
        return []
    return [hue] if isinstance(hue, str) else list(hue)


def _check_columns(df: pd.DataFrame, cols: Sequence[str], arg: str) -> None:
    for c in cols:
        if c not in df.columns:
            raise ReportError(
                f"{arg}={c!r} is not a column of the records; config columns are "
                f"{config_columns(df)}; pass one of them (or None)"
            )


def _check_metric(df: pd.DataFrame, metric: str, arg: str = "metric") -> None:
    if metric != "round" and not (df["metric"] == metric).any():
        raise ReportError(
            f"{arg}={metric!r} has no records; metrics present are {sorted(df['metric'].unique())}"
        )


def _label(values: Sequence[Any], cols: Sequence[str]) -> str:
    """A line's name: ``D-SGD, lr=0.05`` (a ``method`` column shows its value alone)."""
    if not cols:
        return ""
    if len(cols) == 1:
        return _fmt(values[0])
    return ", ".join(
        _fmt(v) if c == "method" else f"{c.rsplit('.', 1)[-1]}={_fmt(v)}"
        for c, v in zip(cols, values, strict=True)
    )


def _fmt(value: Any) -> str:
    """Floats with 4 significant digits (1.5e-05, not 1.4999999999999999e-05)."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(value)


def _series(df: pd.DataFrame, metric: str, x: str) -> pd.DataFrame:
    """Return one row per (run, round): ``run_id, round, _x, _y`` and the run columns."""
    _check_metric(df, metric)
    ys = df[df["metric"] == metric].drop(columns=["metric"]).rename(columns={"value": "_y"})
    if x == "round":
        ys["_x"] = ys["round"].astype("float64")
        return ys
    _check_metric(df, x, arg="x")
    xs = df[df["metric"] == x][["run_id", "round", "value"]].rename(columns={"value": "_x"})
    return ys.merge(xs, on=["run_id", "round"], how="inner")


def aggregate(
    df: pd.DataFrame,
    metric: str,
    x: str = "round",
    hue: Hue = "algorithm.kind",
    facet: str | None = "topology.kind",
    *,
    band: str | None = "std",
    seed_col: str = "seed",
) -> pd.DataFrame:
    """Average ``metric`` over seeds per (facet, hue, round).

    For runs ``s = 1..n`` of a group at round ``t``: ``mean = (1/n) sum_s y_s``,
    ``std`` the sample standard deviation (``ddof=1``), and the band half-width is ``std``
    (``band="std"``) or ``t_{0.975, n-1} std / sqrt(n)`` (``band="ci95"``, the 95 %
    Student-t interval); it is NaN when ``n < 2`` or ``band=None``. ``x`` other than
    ``"round"`` is a metric (e.g. ``comm/bytes``) averaged the same way.

    Returns:
        Columns ``facet, hue, round, x, mean, std, n, lo, hi``, sorted.

    Raises:
        ReportError: For an unknown metric, column or band.
    """
    if band not in BANDS:
        raise ReportError(f"band must be one of {list(BANDS)}, got {band!r}")
    hue_cols = _as_cols(hue)
    facet_cols = [] if facet is None else [facet]
    _check_columns(df, hue_cols, "hue")
    _check_columns(df, facet_cols, "facet")
    data = _series(df, metric, x)
    _warn_mixed(data, hue_cols + facet_cols, seed_col)

    def names(cols: list[str]) -> list[str] | str:  # "": one line (or subplot) of them all
        return [_label(v, cols) for v in data[cols].itertuples(index=False)] if cols else ""

    data = data.assign(facet=names(facet_cols), hue=names(hue_cols))
    g = data.groupby(["facet", "hue", "round"], sort=True)
    out = g.agg(x=("_x", "mean"), mean=("_y", "mean"), std=("_y", "std"), n=("_y", "count"))
    out = out.reset_index()
    half = out["std"].to_numpy(dtype="float64").copy()
    n = out["n"].to_numpy()
    if band == "ci95":
        from scipy.stats import t as student_t

        with np.errstate(invalid="ignore", divide="ignore"):
            half = student_t.ppf(0.975, np.maximum(n - 1, 1)) * half / np.sqrt(n)
    if band is None:
        half[:] = np.nan
    half[n < 2] = np.nan
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out


def _warn_mixed(data: pd.DataFrame, grouping: list[str], seed_col: str) -> None:
    other = [
        c
        for c in config_columns(data)
        if c not in grouping and c != seed_col and c not in ("_x", "_y")
    ]
    if not other or data.empty:
        return
    per_run = data.drop_duplicates("run_id")[[*grouping, *other]].astype(str)
    if grouping:
        counts = per_run.groupby(grouping)[other].nunique()
        varying = [c for c in other if (counts[c] > 1).any()]
    else:
        varying = [c for c in other if per_run[c].nunique() > 1]
    if varying:
        warnings.warn(
            f"runs averaged into one line differ in {varying} (not only in {seed_col!r}); "
            "add those columns to hue= or facet=, or filter the DataFrame first",
            stacklevel=3,
        )


def _grid(n: int, ncols: int, width: float = 4.6, height: float = 3.4) -> tuple[Figure, list[Axes]]:
    if n < 1:
        raise ReportError("nothing to plot: no records match (check the metric and the runs)")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    return fig, axes


def _auto_logy(metric: str, logy: bool | None, values: Any) -> bool:
    """Log where asked; else for errors and distances, and for any positive quantity
    whose values span two decades or more."""
    if logy is not None:
        return logy
    return metric.startswith(LOG_Y_PREFIXES) or _spans_decades(values)


def _spans_decades(values: Any, decades: float = 2.0) -> bool:
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)]
    return bool(v.size and (v > 0).all() and v.max() / v.min() >= 10**decades)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Two lines a reader cannot tell apart (equal to 1e-6 relative at every point)."""
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0.0, equal_nan=True))


_DASHES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def line_styles(
    hues: Sequence[str],
    groups: Sequence[str] | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """One colour per group (e.g. per method) and one dash per member of a group, fixed
    for a whole report so a method looks the same in every figure.

    Args:
        hues: the line names.
        groups: each line's group (default: every line its own).
        order: every group in colour order (default: as they first appear), so two
            calls give one group the same colour.
    """
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    groups = list(hues) if groups is None else list(groups)
    order = list(dict.fromkeys(groups)) if order is None else list(order)
    seen: dict[str, int] = {}
    out: dict[str, dict[str, Any]] = {}
    for h, g in zip(hues, groups, strict=True):
        k = order.index(g)
        j = seen.get(g, 0)
        seen[g] = j + 1
        out[h] = {
            "color": cycle[k % len(cycle)],
            "ls": _DASHES[j % len(_DASHES)],
            "marker": _MARKERS[k % len(_MARKERS)],
        }
    return out


def _finish(ax: Axes, xlabel: str, ylabel: str, facet: str | None, value: Any, logy: bool) -> None:
    """Label, title (the facet's value) and grid one subplot; a log y axis masks values <= 0."""
    if logy:
        ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if facet is not None:
        ax.set_title(f"{SETTING_NAMES.get(facet, facet)} = {value}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def plot_metric(
    df: pd.DataFrame,
    metric: str,
    x: str = "round",
    hue: Hue = "algorithm.kind",
    facet: str | None = "topology.kind",
    *,
    logy: bool | None = None,
    logx: bool | None = None,
    band: str | None = "std",
    seed_col: str = "seed",
    ncols: int = 3,
    title: str | None = None,
    ylabel: str | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Plot ``metric`` against ``x``: mean over seeds with a band, one line per ``hue``.

    Lines a reader could not tell apart (equal to 1e-6 relative at every point) are drawn
    with markers and named "identical to ..." in the legend, which sits outside the data.

    Args:
        df: Long records (``decent.results.load``): ``run_id, round, metric, value`` plus
            dotted config columns.
        metric: Metric name, e.g. ``"eval/subopt@mean"``.
        x: ``"round"`` or a metric used as x axis: ``"grad_evals"``, ``"comm/bytes"``,
            ``"time/wall_s"`` (averaged over seeds per round).
        hue: Config column(s) with one line per value (``None``: one line).
        facet: Config column with one subplot per value (``None``: one subplot).
        logy: Log y axis; ``None`` means yes for ``eval/subopt*`` and ``consensus/*`` and
            for positive values that span two decades.
        logx: Log x axis; ``None`` means yes when ``x`` is a metric whose positive values
            span two decades (rounds stay linear).
        band: ``"std"`` (mean ± std), ``"ci95"`` (95 % t-interval) or ``None``.
        seed_col: The column averaged over; a warning is given if runs of one line differ in
            other config columns too.
        ncols: Subplots per row.
        title: Figure title (default: the metric's label).
        ylabel: The y axis label (default: the metric's label, :func:`decent.metrics.metric_label`).
        styles: ``{line name: matplotlib keywords}``, e.g. from :func:`line_styles`, to keep
            a method's colour and dash across figures.

    Returns:
        The figure: one Axes per facet value, one line (and one band) per hue value.

    Raises:
        ReportError: For an unknown metric, ``x``, column or band.
    """
    from decent.metrics import metric_label

    agg = aggregate(df, metric, x, hue, facet, band=band, seed_col=seed_col)
    facets = sorted(agg["facet"].unique(), key=str)
    hues = sorted(agg["hue"].unique(), key=str)
    style = dict(styles) if styles is not None else {}
    missing = [h for h in hues if h not in style]
    style |= line_styles(missing) if missing and styles is None else {}
    for h in hues:
        style.setdefault(h, {"color": "0.3", "ls": "-", "marker": "o"})
    fig, axes = _grid(len(facets), ncols)
    use_log = _auto_logy(metric, logy, agg["mean"])
    use_logx = (
        logx if logx is not None else x != "round" and _spans_decades(agg.loc[agg["x"] > 0, "x"])
    )
    handles: dict[str, Any] = {}
    for ax, fv in zip(axes, facets, strict=True):
        sub = agg[agg["facet"] == fv]
        drawn: list[tuple[str, np.ndarray]] = []
        for h in hues:
            line = sub[sub["hue"] == h].sort_values("round")
            if use_logx:
                line = line[line["x"] > 0]
            if line.empty:
                continue
            xs, mean = line["x"].to_numpy(), line["mean"].to_numpy()
            twin = next((o for o, m in drawn if _same(m, mean)), None)
            drawn.append((h, mean))
            kw = {k: v for k, v in style[h].items() if k != "marker"}
            name = str(h)
            if twin is not None:  # on top of an earlier line: markers, and say so
                # every tenth point (an integer step: matplotlib's fractional markevery
                # fails on a line with no drawable point)
                kw |= {"marker": style[h].get("marker", "o"), "ms": 5, "markerfacecolor": "none"}
                kw |= {"markevery": max(1, len(xs) // 10)}
                name = f"{h} (identical to {twin})"
            (handle,) = ax.plot(xs, mean, label=name, lw=1.6, **kw)
            handles.setdefault(name, handle)
            lo, hi = line["lo"].to_numpy(), line["hi"].to_numpy()
            if np.isfinite(lo).any():
                if use_log:  # a band reaching <= 0 is drawn one-sided on a log axis
                    lo = np.where(lo > 0, lo, mean)
                ax.fill_between(xs, lo, hi, color=kw.get("color"), alpha=0.2, lw=0)
        if use_logx:
            ax.set_xscale("log")
        label = ylabel if ylabel is not None else metric_label(metric)
        _finish(ax, _X_LABELS.get(x, metric_label(x)), label, facet, fv, use_log)
    if hue is not None and handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside right upper",
            fontsize=8,
            title=", ".join(c.rsplit(".", 1)[-1] for c in _as_cols(hue)),
            title_fontsize=8,
        )
    fig.suptitle(title if title is not None else metric_label(metric), fontsize=11)
    return fig


def plot_consensus(
    df: pd.DataFrame,
    x: str = "round",
    hue: Hue = "algorithm.kind",
    facet: str | None = "topology.kind",
    *,
    metric: str = "consensus/dist2",
    band: str | None = "std",
    ncols: int = 3,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    r"""Plot the consensus distance :math:`\frac1n\sum_i \|x_i - \bar x\|^2` on a log axis."""
    title = "consensus distance: how far the nodes are from their average"
    return plot_metric(
        df, metric, x, hue, facet, logy=True, band=band, ncols=ncols, title=title, styles=styles
    )


def plot_node_spread(
    df: pd.DataFrame,
    base: str = "eval/loss",
    x: str = "round",
    hue: Hue = "algorithm.kind",
    facet: str | None = "topology.kind",
    *,
    logy: bool | None = None,
    ncols: int = 3,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Plot the best and worst node: ``<base>@node_min`` (dashed) and ``@node_max`` (solid).

    Both are averaged over seeds; the region between them is shaded. Each hue value draws two
    lines of one colour.

    Raises:
        ReportError: If ``<base>@node_min`` or ``<base>@node_max`` has no records.
    """
    from decent.metrics import metric_label

    lo_m, hi_m = f"{base}@node_min", f"{base}@node_max"
    lows = aggregate(df, lo_m, x, hue, facet, band=None)
    highs = aggregate(df, hi_m, x, hue, facet, band=None)
    both = lows.merge(highs, on=["facet", "hue", "round"], suffixes=("_lo", "_hi"))
    facets = sorted(both["facet"].unique(), key=str)
    hues = sorted(both["hue"].unique(), key=str)
    colors = {h: (styles or {}).get(h, {}).get("color") for h in hues}
    if any(c is None for c in colors.values()):
        colors = {h: s["color"] for h, s in line_styles(hues).items()}
    fig, axes = _grid(len(facets), ncols)
    use_log = _auto_logy(base, logy, pd.concat([both["mean_lo"], both["mean_hi"]]))
    for ax, fv in zip(axes, facets, strict=True):
        sub = both[both["facet"] == fv]
        for h in hues:
            line = sub[sub["hue"] == h].sort_values("round")
            if line.empty:
                continue
            xs = line["x_lo"].to_numpy()
            ax.plot(xs, line["mean_hi"], color=colors[h], lw=1.5, label=f"{h} (worst node)")
            ax.plot(xs, line["mean_lo"], color=colors[h], lw=1.2, ls="--", label=f"{h} (best)")
            ax.fill_between(xs, line["mean_lo"], line["mean_hi"], color=colors[h], alpha=0.15)
        label = metric_label(f"{base}@node_max").replace(" at the worst node", "")
        _finish(ax, _X_LABELS.get(x, x), label, facet, fv, use_log)
    if axes:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7)
    fig.suptitle(f"best and worst node: {metric_label(base + '@mean')}", fontsize=11)
    return fig


def topology_figure(
    graph: Any,
    *,
    layout: str = "circular",
    seed: int = 0,
    labels: bool | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a graph: a ``networkx`` graph or a square matrix (edge where ``W[i, j] != 0``).

    Args:
        graph: ``networkx.Graph``/``DiGraph`` or an ``(n, n)`` array-like (e.g. ``W``).
        layout: ``"circular"`` or ``"spring"`` (seeded).
        seed: Seed of the spring layout.
        labels: Draw node labels; default only when ``n <= 64``.
        title: Axes title (default: ``n`` and the number of edges).

    Raises:
        ReportError: For an unknown layout or a non-square matrix.
    """
    if layout not in ("circular", "spring"):
        raise ReportError(f"layout must be 'circular' or 'spring', got {layout!r}")
    if not isinstance(graph, nx.Graph):
        mat = np.asarray(graph, dtype="float64")
        if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
            raise ReportError(
                f"graph must be a networkx graph or a square (n, n) matrix, got shape {mat.shape}"
            )
        adj = (mat != 0) & ~np.eye(mat.shape[0], dtype=bool)
        symmetric = bool((adj == adj.T).all())
        graph = nx.from_numpy_array(
            adj.astype(int), create_using=nx.Graph if symmetric else nx.DiGraph
        )
    n = graph.number_of_nodes()
    pos = nx.circular_layout(graph) if layout == "circular" else nx.spring_layout(graph, seed=seed)
    show_labels = n <= 64 if labels is None else labels
    fig = Figure(figsize=(5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    size = 300 if n <= 16 else max(10.0, 3000.0 / n)
    nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.5, width=0.8 if n <= 64 else 0.3)
    nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=size, node_color="#4c72b0")
    if show_labels:
        nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8, font_color="white")
    ax.set_title(title if title is not None else f"n={n}, edges={graph.number_of_edges()}")
    ax.set_axis_off()
    return fig


def draw_topology(
    graph: Any,
    path: str | os.PathLike[str],
    *,
    layout: str = "circular",
    seed: int = 0,
    labels: bool | None = None,
    dpi: int = 100,
) -> Path:
    """Draw ``graph`` (see :func:`topology_figure`) to a PNG file and return its path."""
    fig = topology_figure(graph, layout=layout, seed=seed, labels=labels)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi)
    return out


def band_plot(
    panels: Sequence[tuple[str, str, pd.DataFrame]],
    path: str | os.PathLike[str],
    *,
    column: str,
    hue: str,
    hues: Sequence[str],
    labels: Mapping[str, str] | None = None,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    titles: Mapping[Any, str] | None = None,
    suptitle: str | None = None,
    x: str = "round",
    logx: bool = True,
    logy: bool = True,
    band: Literal["std", "range"] = "std",
    dpi: int = 120,
) -> Path:
    """Draw the mean over runs with a band (one standard deviation, or the runs' range), per
    hue, to a PNG.

    One row per panel ``(metric, ylabel, records)`` (long records, as
    :func:`decent.results.load` gives, already filtered to that metric), one column per value
    of ``column`` (sorted); the runs of one (column, hue) are averaged at each ``x`` (a single
    run draws no band). A ``"std"`` band's lower edge is clipped above 0 on a log axis; a
    ``"range"`` band spans the lowest to the highest run, so both edges were measured.

    Args:
        panels: ``(metric, ylabel, records)`` per row.
        path: The PNG to write.
        column: The config column that splits the figure into columns (``topology.kind``).
        hue: The config column of one line (e.g. ``algorithm.kind``).
        hues: The lines to draw, in legend order (absent ones are skipped).
        labels: Legend text per hue (default: the value).
        styles: Matplotlib line keywords per hue (``color``, ``linestyle``, ...).
        titles: Title per column value (default: the value).
        suptitle: The figure's title.
        x: The record column on the x axis.
        logx: Log x axis.
        logy: Log y axis.
        band: ``"std"`` (mean ± 1 std) or ``"range"`` (min to max over runs).
        dpi: Resolution of the PNG.

    Returns:
        The path written.
    """
    columns = sorted({v for _, _, df in panels for v in df[column].unique()})
    if not columns:
        raise ReportError("band_plot: no records to draw; every panel is empty")
    fig = Figure(figsize=(5.5 * len(columns), 3.75 * len(panels)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), len(columns), squeeze=False, sharex=True)
    for row, (_, ylabel, df) in enumerate(panels):
        for col, value in enumerate(columns):
            ax = axes[row][col]
            sub = df[df[column] == value]
            for h in hues:
                m = sub[sub[hue] == h]
                if m.empty:
                    continue
                stats = m.groupby(x)["value"].agg(["mean", "std", "min", "max"]).reset_index()
                spread = stats["std"].fillna(0.0)
                style = dict((styles or {}).get(h, {}))
                style.pop("marker", None)
                ax.plot(stats[x], stats["mean"], label=(labels or {}).get(h, str(h)), **style)
                low, high = stats["mean"] - spread, stats["mean"] + spread
                if band == "range":
                    low, high = stats["min"], stats["max"]
                elif logy:
                    low = low.clip(lower=1e-300)
                ax.fill_between(stats[x], low, high, color=style.get("color"), alpha=0.15)
            if logy:
                ax.set_yscale("log")
            if logx:
                ax.set_xscale("log")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_title((titles or {}).get(value, str(value)))
            if row == len(panels) - 1:
                ax.set_xlabel(_X_LABELS.get(x, x))
    axes[0][0].legend(fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
