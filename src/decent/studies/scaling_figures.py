"""Figures of a scaling study, drawn from the tables of :mod:`decent.studies.thresholds`.

Each function takes a table (``summary``, ``penalty``, ``critical_m``, ``fit_slopes``),
writes one PNG and returns its path. A method keeps one colour and marker in every figure
(:func:`method_style`). Matplotlib's object API only (``Figure``, no ``pyplot``), so the
figures draw in any process, headless included.

* :func:`error_vs_m` - error against machines M, per topology and budget N;
* :func:`penalty_vs_m` - the headline: error on a graph over error on the complete graph;
* :func:`m_star_vs_n` - critical M against N, fitted and theoretical slopes;
* :func:`penalty_heatmap` - topology x M table of the penalty of one method at one N.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from decent.studies import _kit as kit
from decent.studies._kit import METHOD_COLORS, method_styles

__all__ = [
    "DEFAULT_LABELS",
    "METHOD_COLORS",
    "error_vs_m",
    "m_star_vs_n",
    "method_style",
    "method_styles",
    "penalty_heatmap",
    "penalty_vs_m",
]

ERROR_LABEL = r"$f(\bar x) - f^*$"
M_LABEL = "machines M"
PENALTY_LABEL = "penalty vs complete graph"

DEFAULT_LABELS: dict[str, str] = {
    m: kit.label(m)
    for m in ("minibatch_sgd", "anytime_sgd", "dsgd", "gradient_tracking", "dat_sgd")
}
"""Human names of the known methods, from their classes (a ``labels`` argument overrides)."""


def method_style(method: str, methods: Iterable[str] = ()) -> dict[str, Any]:
    """Return the style of one method among ``methods`` (see :func:`method_styles`).

    Args:
        method: The method.
        methods: All methods of the figure (fixes the colours of unknown names).

    Returns:
        ``{"color", "marker", "linestyle"}``.
    """
    return method_styles([method, *methods])[str(method)]


def _label(method: str, labels: Mapping[str, str] | None) -> str:
    if labels is not None and method in labels:
        return labels[method]
    try:
        return kit.label(method)
    except ValueError:
        return method


def _fmt_n(n: int) -> str:
    n = int(n)
    if n > 0 and n & (n - 1) == 0:
        return f"N = $2^{{{n.bit_length() - 1}}}$"
    return f"N = {n:,}"


def _check(df: pd.DataFrame, needed: Sequence[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it needs {list(needed)}")
    if df.empty:
        raise ValueError(f"{name} has no rows, nothing to plot")


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight", pad_inches=0.1)  # a long title is never cut
    return out


def _bars(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Asymmetric error bars (2, n), kept above zero for a log axis."""
    lo = np.where(np.isfinite(low), np.minimum(y - np.maximum(low, y * 1e-3), y), 0.0)
    hi = np.where(np.isfinite(high), np.maximum(high - y, 0.0), 0.0)
    return np.vstack([np.maximum(lo, 0.0), hi])


def _fig_legend(fig: Any, axes: Iterable[Any]) -> None:
    """One legend for the figure, below the panels, without duplicate entries."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(text, handle)
    if seen:
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside lower center",
            ncol=min(len(seen), 4),
            fontsize=8,
        )


def error_vs_m(
    summary: pd.DataFrame,
    ref: pd.Series | None,
    path: str | os.PathLike[str],
    labels: Mapping[str, str] | None = None,
    *,
    delta: float = 1.0,
) -> Path:
    """Plot mean error against M: one column per topology, one row per budget N.

    Log2 M axis, log error axis, bars the intervals of :func:`~decent.studies.thresholds.
    summarize`. With ``ref``, the reference error is a black line and the tolerance
    ``(1 + delta) * ref`` a dashed one. Diverged cells (infinite mean) are not drawn.

    Args:
        summary: The output of :func:`~decent.studies.thresholds.summarize`.
        ref: Reference error per ``N`` (:func:`~decent.studies.thresholds.reference`) or
            ``None``.
        path: The PNG to write.
        labels: Human names of methods (default :data:`DEFAULT_LABELS`).
        delta: The tolerance to draw.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``summary`` is empty or lacks a column.
    """
    from matplotlib.figure import Figure

    _check(summary, ["method", "topology", "N", "M", "mean", "ci_low", "ci_high"], "summary")
    topologies = sorted(summary["topology"].astype(str).unique())
    budgets = sorted(int(n) for n in summary["N"].unique())
    styles = method_styles(summary["method"].astype(str))
    fig = Figure(figsize=(3.3 * len(topologies), 2.6 * len(budgets) + 0.9), layout="constrained")
    axes = fig.subplots(len(budgets), len(topologies), squeeze=False, sharex=True, sharey="row")
    for r, n in enumerate(budgets):
        for c, topology in enumerate(topologies):
            ax = axes[r][c]
            sub = summary[(summary["N"] == n) & (summary["topology"] == topology)]
            for method, style in styles.items():
                rows = sub[sub["method"] == method].sort_values("M")
                rows = rows[np.isfinite(rows["mean"]) & (rows["mean"] > 0)]
                if rows.empty:
                    continue
                y = rows["mean"].to_numpy(dtype="float64")
                ax.errorbar(
                    rows["M"].to_numpy(dtype="float64"),
                    y,
                    yerr=_bars(y, rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)),
                    capsize=2,
                    markersize=4,
                    label=_label(method, labels),
                    **style,
                )
            if ref is not None and n in ref.index and math.isfinite(float(ref[n])):
                base = float(ref[n])
                ax.axhline(base, color="black", lw=1.0, label="reference (best single machine)")
                ax.axhline(
                    (1 + delta) * base,
                    color="black",
                    lw=1.0,
                    ls="--",
                    label=f"(1 + δ) × reference, δ = {delta:g}",
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{topology}, {_fmt_n(n)}", fontsize=9)
            if r == len(budgets) - 1:
                ax.set_xlabel(M_LABEL)
            if c == 0:
                ax.set_ylabel(ERROR_LABEL)
    _fig_legend(fig, [ax for row in axes for ax in row])
    fig.suptitle("Final error at a fixed sample budget N = M T: mean over seeds, 95% CI")
    return _save(fig, path)


def penalty_vs_m(
    pen: pd.DataFrame,
    path: str | os.PathLike[str],
    topologies: Sequence[str] = ("ring", "torus"),
    budgets: Sequence[int] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Plot the penalty ``err(topology, M) / err(complete, M)`` against M (log-log).

    One panel per (N, topology): rows the budgets, columns the topologies; a black line at
    1 (no cost of the graph); bars the approximate intervals of
    :func:`~decent.studies.thresholds.penalty`.

    Args:
        pen: The output of :func:`~decent.studies.thresholds.penalty`.
        path: The PNG to write.
        topologies: The graphs to show.
        budgets: The budgets N to show (default: the smallest and the largest).
        labels: Human names of methods.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``pen`` is empty or lacks a column, or a topology or budget is absent.
    """
    from matplotlib.figure import Figure

    _check(pen, ["method", "topology", "N", "M", "penalty", "penalty_low", "penalty_high"], "pen")
    have_t = set(pen["topology"].astype(str))
    absent = [t for t in topologies if t not in have_t]
    if absent or not topologies:
        raise ValueError(f"topologies {list(topologies)} not all in pen; it has {sorted(have_t)}")
    all_n = sorted(int(n) for n in pen["N"].unique())
    chosen = sorted({all_n[0], all_n[-1]}) if budgets is None else [int(n) for n in budgets]
    missing = [n for n in chosen if n not in all_n]
    if missing or not chosen:
        raise ValueError(f"budgets {chosen} not all in pen; it has N = {all_n}")
    styles = method_styles(pen["method"].astype(str))
    fig = Figure(figsize=(4.2 * len(topologies), 3.2 * len(chosen) + 0.8), layout="constrained")
    axes = fig.subplots(len(chosen), len(topologies), squeeze=False, sharex=True, sharey=True)
    for r, n in enumerate(chosen):
        for c, topology in enumerate(topologies):
            ax = axes[r][c]
            sub = pen[(pen["N"] == n) & (pen["topology"] == topology)]
            for method, style in styles.items():
                rows = sub[sub["method"] == method].sort_values("M")
                rows = rows[np.isfinite(rows["penalty"]) & (rows["penalty"] > 0)]
                if rows.empty:
                    continue
                y = rows["penalty"].to_numpy(dtype="float64")
                ax.errorbar(
                    rows["M"].to_numpy(dtype="float64"),
                    y,
                    yerr=_bars(
                        y, rows["penalty_low"].to_numpy(float), rows["penalty_high"].to_numpy(float)
                    ),
                    capsize=2,
                    markersize=4,
                    label=_label(method, labels),
                    **style,
                )
            ax.axhline(1.0, color="black", lw=1.0, label="no penalty (= complete graph)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{topology}, {_fmt_n(n)}", fontsize=10)
            if r == len(chosen) - 1:
                ax.set_xlabel(M_LABEL)
            if c == 0:
                ax.set_ylabel(PENALTY_LABEL)
    _fig_legend(fig, [ax for row in axes for ax in row])
    wide = len(topologies) >= 3  # one or two panels are too narrow for one line
    fig.suptitle(
        "What the graph costs:" + (" " if wide else "\n") + "error on the graph / error on the "
        "complete graph, same M",
        fontsize=11,
    )
    return _save(fig, path)


def m_star_vs_n(
    critical: pd.DataFrame,
    slopes: pd.DataFrame,
    path: str | os.PathLike[str],
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Plot the critical M* against N (log-log), one panel per topology.

    Uncensored points are filled; censored ones (``M* >= `` the largest M of the grid) are
    hollow up-carets; below-grid budgets are not drawn. Solid lines are the fits of
    :func:`~decent.studies.thresholds.fit_slopes` (slope and 95% bootstrap interval in the
    legend); dotted lines have the theoretical slope, through the fitted points' centre.

    Args:
        critical: The output of :func:`~decent.studies.thresholds.critical_m` (one tolerance).
        slopes: The output of :func:`~decent.studies.thresholds.fit_slopes`.
        path: The PNG to write.
        labels: Human names of methods.

    Returns:
        ``path``.

    Raises:
        ValueError: If a table is empty or lacks a column, or ``critical`` mixes tolerances.
    """
    from matplotlib.figure import Figure

    _check(critical, ["method", "topology", "N", "m_star", "censored"], "critical")
    _check(slopes, ["method", "topology", "slope", "intercept"], "slopes")
    if "delta" in critical.columns and critical["delta"].nunique() > 1:
        raise ValueError(
            f"critical mixes tolerances {sorted(critical['delta'].unique())}; "
            "pass the rows of one delta"
        )
    topologies = sorted(critical["topology"].astype(str).unique())
    styles = method_styles(critical["method"].astype(str))
    fit = slopes.set_index(["method", "topology"])
    fig = Figure(figsize=(4.3 * len(topologies), 5.2), layout="constrained")
    axes = fig.subplots(1, len(topologies), squeeze=False, sharey=True)[0]
    for ax, topology in zip(axes, topologies, strict=True):
        sub = critical[critical["topology"] == topology]
        censored_any = False
        for method, style in styles.items():
            rows = sub[(sub["method"] == method) & np.isfinite(sub["m_star"])].sort_values("N")
            if rows.empty:
                continue
            name = _label(method, labels)
            color = style["color"]
            open_ = rows["censored"].to_numpy(dtype=bool)
            n_all = rows["N"].to_numpy(dtype="float64")
            m_all = rows["m_star"].to_numpy(dtype="float64")
            text = name
            if (method, topology) in fit.index:
                row = fit.loc[(method, topology)]
                if math.isfinite(float(row["slope"])):
                    text = f"{name}: fit {float(row['slope']):.2f}"
                    if "slope_low" in row and math.isfinite(float(row["slope_low"])):
                        text += f" [{float(row['slope_low']):.2f}, {float(row['slope_high']):.2f}]"
            if (~open_).any():
                ax.plot(
                    n_all[~open_],
                    m_all[~open_],
                    ls="none",
                    marker=style["marker"],
                    color=color,
                    label=text,
                )
            if open_.any():
                censored_any = True
                ax.plot(
                    n_all[open_],
                    m_all[open_],
                    ls="none",
                    marker="^",
                    markerfacecolor="none",
                    color=color,
                    label=None if (~open_).any() else f"{name} (censored only)",
                )
            used = n_all[~open_]
            if (method, topology) not in fit.index or used.size < 2:
                continue
            row = fit.loc[(method, topology)]
            slope, intercept = float(row["slope"]), float(row["intercept"])
            if not math.isfinite(slope):
                continue
            xs = np.log2(np.array([used.min(), used.max()]))
            ax.plot(2**xs, 2 ** (intercept + slope * xs), "-", color=color, lw=1.2)
            theory = float(row["theory"]) if "theory" in row else math.nan
            if math.isfinite(theory):
                xbar = float(np.log2(used).mean())
                ybar = intercept + slope * xbar
                ax.plot(
                    2**xs,
                    2 ** (ybar + theory * (xs - xbar)),
                    ":",
                    color=color,
                    lw=1.5,
                    label=f"{name}: theory {theory:.3f}",
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(topology)
        ax.set_xlabel("sample budget N = M T")
        if censored_any:
            ax.plot(
                [],
                [],
                ls="none",
                marker="^",
                markerfacecolor="none",
                color="0.4",
                label="hollow ▲: censored, M* ≥ the largest M run",
            )
        handles, texts = ax.get_legend_handles_labels()
        keep: dict[str, Any] = {}
        for h, t in zip(handles, texts, strict=True):
            keep.setdefault(t, h)
        if keep:
            ax.legend(
                list(keep.values()),
                list(keep),
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.16),
            )
    axes[0].set_ylabel("critical machines M*")
    fig.suptitle("Critical M*: the most machines that keep the single-machine error")
    return _save(fig, path)


def penalty_heatmap(
    pen: pd.DataFrame,
    path: str | os.PathLike[str],
    method: str,
    N: int,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Draw a topology x M heat map of ``log10`` penalty for one method at one budget.

    Each cell shows the penalty itself; ``div.`` marks a diverged cell (infinite penalty),
    an empty cell a (topology, M) that was not run.

    Args:
        pen: The output of :func:`~decent.studies.thresholds.penalty`.
        path: The PNG to write.
        method: The method to show.
        N: The budget to show.
        labels: Human names of methods.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``pen`` has no row of ``method`` at ``N``.
    """
    from matplotlib.figure import Figure

    _check(pen, ["method", "topology", "N", "M", "penalty"], "pen")
    sub = pen[(pen["method"] == method) & (pen["N"] == N)]
    if sub.empty:
        pairs = sorted({(str(m), int(n)) for m, n in zip(pen["method"], pen["N"], strict=True)})
        raise ValueError(f"pen has no row of method {method!r} at N = {N}; it has {pairs}")
    table = sub.pivot_table(index="topology", columns="M", values="penalty", aggfunc="first")
    table = table.reindex(sorted(table.index), axis=0).reindex(sorted(table.columns), axis=1)
    values = table.to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(values)
    finite = np.isfinite(logs)
    span = max(0.1, float(np.abs(logs[finite]).max()) if finite.any() else 0.1)
    shown = np.ma.masked_invalid(np.where(np.isposinf(logs), span, np.where(finite, logs, np.nan)))
    fig = Figure(figsize=(0.75 * len(table.columns) + 2.8, 0.55 * len(table.index) + 1.8))
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-span, vmax=span, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            if math.isnan(v):
                continue
            if math.isinf(v):
                text = "div."
            elif v >= 10 or v == 0:
                text = f"{v:.0f}"
            else:
                text = f"{v:.2f}"
            dark = (finite[i, j] and abs(logs[i, j]) > 0.6 * span) or math.isinf(v)
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(table.columns)), [str(int(m)) for m in table.columns])
    ax.set_yticks(range(len(table.index)), list(table.index))
    ax.set_xlabel(M_LABEL)
    ax.set_ylabel("topology")
    ax.set_title(f"{_label(method, labels)}, {_fmt_n(N)}: {PENALTY_LABEL}", fontsize=10)
    fig.colorbar(image, ax=ax, label=f"log10 {PENALTY_LABEL}")
    fig.tight_layout()
    return _save(fig, path)
