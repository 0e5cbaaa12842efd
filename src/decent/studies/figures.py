"""The studies' figures, with matplotlib's object API (``Figure``, no ``pyplot``: they draw in
any process, headless included). Each function writes one PNG and returns its path; a method
keeps its colour and marker (:func:`decent.studies._kit.method_styles`) in every figure.

* the panels every study figure is made of: :func:`figure` (a grid of panels), :func:`panel`
  (log axes, grid, title, labels), :func:`save` (one legend, the title, the PNG); each study
  draws its own figures with them (``plot_all`` of :mod:`~decent.studies.network` and
  :mod:`~decent.studies.robustness`, :func:`decent.studies.scaling.write_outputs`);
* from the tables of :mod:`decent.studies.thresholds`: :func:`error_vs_m`,
  :func:`penalty_vs_m` (the headline: error on a graph over error on the complete graph),
  :func:`m_star_vs_n`, :func:`penalty_heatmap`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from decent.studies import _kit as kit
from decent.studies._kit import method_styles
from decent.studies.thresholds import check_columns

__all__ = [
    "error_vs_m",
    "figure",
    "m_star_vs_n",
    "panel",
    "penalty_heatmap",
    "penalty_vs_m",
    "save",
]

ERROR_LABEL = r"$f(\bar x) - f^*$"
M_LABEL = "machines M"
PENALTY_LABEL = "penalty vs complete graph"
PathLike = str | os.PathLike[str]

# ---------------------------------------------------------------------- shared


def figure(
    rows: int, cols: int, width: float, height: float, legend: float = 0.0, **share: Any
) -> tuple[Any, Any]:
    """A constrained-layout figure of ``rows x cols`` panels of ``width x height`` inches,
    ``legend`` inches wider for a legend on the right."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols + legend, height * rows + 0.9), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **share)


def panel(
    ax: Any,
    title: str,
    xlabel: str | None = None,
    ylabel: str | None = None,
    *,
    logx: bool = True,
    logy: bool = True,
    base: int = 10,
) -> None:
    if logx:
        ax.set_xscale("log", base=base)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)


def save(fig: Any, axes: Any, path: PathLike, title: str | None = None, where: str = "") -> Path:
    """One legend for the figure (below the panels, or ``where``), without duplicate
    entries; the title; the PNG, never cut at a long title."""
    seen: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(text, handle)
    if seen:
        right = where == "right"
        fig.legend(
            list(seen.values()),
            list(seen),
            loc="outside right upper" if right else "outside lower center",
            ncol=1 if right else min(len(seen), 4),
            fontsize=8,
            frameon=not right,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight", pad_inches=0.1)
    return out


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


def _bars(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Asymmetric error bars (2, n), kept above zero for a log axis."""
    lo = np.where(np.isfinite(low), np.minimum(y - np.maximum(low, y * 1e-3), y), 0.0)
    hi = np.where(np.isfinite(high), np.maximum(high - y, 0.0), 0.0)
    return np.vstack([np.maximum(lo, 0.0), hi])


# ---------------------------------------------------------------------- scaling


def _against_m(
    table: pd.DataFrame,
    columns: tuple[str, str, str],
    budgets: Sequence[int],
    topologies: Sequence[str],
    labels: Mapping[str, str] | None,
    lines: Callable[[Any, int], None],
    ylabel: str,
    **share: Any,
) -> tuple[Any, Any]:
    """One panel per (N, topology): ``columns = (value, low, high)`` against M per method."""
    value, low, high = columns
    styles = method_styles(table["method"].astype(str))
    fig, axes = figure(len(budgets), len(topologies), 3.6, 2.9, sharex=True, **share)
    for r, n in enumerate(budgets):
        for c, topology in enumerate(topologies):
            ax = axes[r][c]
            sub = table[(table["N"] == n) & (table["topology"] == topology)]
            for method, style in styles.items():
                rows = sub[sub["method"] == method].sort_values("M")
                rows = rows[np.isfinite(rows[value]) & (rows[value] > 0)]
                if rows.empty:
                    continue
                y = rows[value].to_numpy(dtype="float64")
                bars = _bars(y, rows[low].to_numpy(float), rows[high].to_numpy(float))
                ax.errorbar(
                    rows["M"].to_numpy(dtype="float64"),
                    y,
                    yerr=bars,
                    capsize=2,
                    markersize=4,
                    label=_label(method, labels),
                    **style,
                )
            lines(ax, n)
            last, first = r == len(budgets) - 1, c == 0
            panel(
                ax,
                f"{topology}, {_fmt_n(n)}",
                M_LABEL if last else None,
                ylabel if first else None,
                base=2,
            )
    return fig, axes


def error_vs_m(
    summary: pd.DataFrame,
    ref: pd.Series | None,
    path: PathLike,
    labels: Mapping[str, str] | None = None,
    *,
    delta: float = 1.0,
) -> Path:
    """Mean error against M (log2) per method: one column per topology, one row per budget
    N, bars the intervals of :func:`~decent.studies.thresholds.summarize`. With ``ref`` (error
    per ``N``, :func:`~decent.studies.thresholds.reference`), the reference is a black line
    and ``(1 + delta) * ref`` a dashed one. Diverged cells (infinite mean) are not drawn.

    Raises:
        ValueError: If ``summary`` is empty or lacks a column.
    """
    check_columns(summary, ["method", "topology", "N", "M", "mean", "ci_low", "ci_high"], "summary")

    def lines(ax: Any, n: int) -> None:
        if ref is not None and n in ref.index and math.isfinite(float(ref[n])):
            base = float(ref[n])
            ax.axhline(base, color="black", lw=1.0, label="reference (best single machine)")
            tolerance = f"(1 + δ) × reference, δ = {delta:g}"
            ax.axhline((1 + delta) * base, color="black", lw=1.0, ls="--", label=tolerance)

    topologies = sorted(summary["topology"].astype(str).unique())
    budgets = sorted(int(n) for n in summary["N"].unique())
    fig, axes = _against_m(
        summary,
        ("mean", "ci_low", "ci_high"),
        budgets,
        topologies,
        labels,
        lines,
        ERROR_LABEL,
        sharey="row",
    )
    title = "Final error at a fixed sample budget N = M T: mean over seeds, 95% CI"
    return save(fig, axes, path, title)


def penalty_vs_m(
    pen: pd.DataFrame,
    path: PathLike,
    topologies: Sequence[str] = ("ring", "torus"),
    budgets: Sequence[int] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """The penalty ``err(topology, M) / err(complete, M)`` against M (log-log), one panel per
    (N, topology) (``budgets`` default: the smallest and the largest), a black line at 1, bars
    the approximate intervals of :func:`~decent.studies.thresholds.penalty`.

    Raises:
        ValueError: If ``pen`` is empty or lacks a column, or a topology or budget is absent.
    """
    check_columns(
        pen, ["method", "topology", "N", "M", "penalty", "penalty_low", "penalty_high"], "pen"
    )
    have_t = set(pen["topology"].astype(str))
    absent = [t for t in topologies if t not in have_t]
    if absent or not topologies:
        raise ValueError(f"topologies {list(topologies)} not all in pen; it has {sorted(have_t)}")
    all_n = sorted(int(n) for n in pen["N"].unique())
    chosen = sorted({all_n[0], all_n[-1]}) if budgets is None else [int(n) for n in budgets]
    missing = [n for n in chosen if n not in all_n]
    if missing or not chosen:
        raise ValueError(f"budgets {chosen} not all in pen; it has N = {all_n}")

    def lines(ax: Any, n: int) -> None:
        ax.axhline(1.0, color="black", lw=1.0, label="no penalty (= complete graph)")

    fig, axes = _against_m(
        pen,
        ("penalty", "penalty_low", "penalty_high"),
        chosen,
        topologies,
        labels,
        lines,
        PENALTY_LABEL,
        sharey=True,
    )
    gap = " " if len(topologies) >= 3 else "\n"  # one or two panels are too narrow for one line
    title = f"What the graph costs:{gap}error on the graph / error on the complete graph, same M"
    return save(fig, axes, path, title)


def m_star_vs_n(
    critical: pd.DataFrame,
    slopes: pd.DataFrame,
    path: PathLike,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """The critical M* against N (log-log), one panel per topology, from
    :func:`~decent.studies.thresholds.critical_m` (one tolerance) and
    :func:`~decent.studies.thresholds.fit_slopes`.

    Uncensored points are filled; censored ones (``M* >=`` the largest M of the grid) are
    hollow up-carets; below-grid budgets are not drawn. Solid lines are the fits (slope and
    95% bootstrap interval in the legend); dotted lines have the theoretical slope, through
    the fitted points' centre.

    Raises:
        ValueError: If a table is empty or lacks a column, or ``critical`` mixes tolerances.
    """
    check_columns(critical, ["method", "topology", "N", "m_star", "censored"], "critical")
    check_columns(slopes, ["method", "topology", "slope", "intercept"], "slopes")
    if "delta" in critical.columns and critical["delta"].nunique() > 1:
        raise ValueError(
            f"critical mixes tolerances {sorted(critical['delta'].unique())}; "
            "pass the rows of one delta"
        )
    topologies = sorted(critical["topology"].astype(str).unique())
    styles = method_styles(critical["method"].astype(str))
    fit = slopes.set_index(["method", "topology"])
    fig, axes = figure(1, len(topologies), 4.3, 4.3, sharey=True)
    for ax, topology in zip(axes[0], topologies, strict=True):
        sub = critical[critical["topology"] == topology]
        censored_any = False
        for method, style in styles.items():
            rows = sub[(sub["method"] == method) & np.isfinite(sub["m_star"])].sort_values("N")
            if rows.empty:
                continue
            name, color = _label(method, labels), style["color"]
            open_ = rows["censored"].to_numpy(dtype=bool)
            n_all = rows["N"].to_numpy(dtype="float64")
            m_all = rows["m_star"].to_numpy(dtype="float64")
            row: Any = fit.loc[(method, topology)] if (method, topology) in fit.index else None
            slope = float(row["slope"]) if row is not None else math.nan
            text = name
            if math.isfinite(slope):
                text = f"{name}: fit {slope:.2f}"
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
                only = None if (~open_).any() else f"{name} (censored only)"
                ax.plot(
                    n_all[open_],
                    m_all[open_],
                    ls="none",
                    marker="^",
                    markerfacecolor="none",
                    color=color,
                    label=only,
                )
            used = n_all[~open_]
            if row is None or used.size < 2 or not math.isfinite(slope):
                continue
            intercept = float(row["intercept"])
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
        ax.set_yscale("log", base=2)
        panel(ax, topology, "sample budget N = M T", logy=False, base=2)
    axes[0][0].set_ylabel("critical machines M*")
    title = "Critical M*: the most machines that keep the single-machine error"
    return save(fig, axes, path, title)


def penalty_heatmap(
    pen: pd.DataFrame,
    path: PathLike,
    method: str,
    N: int,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """A topology x M heat map of ``log10`` penalty of one method at one budget; each cell
    shows the penalty, ``div.`` a diverged cell (infinite penalty), empty a (topology, M)
    that was not run.

    Raises:
        ValueError: If ``pen`` has no row of ``method`` at ``N``.
    """
    from matplotlib.figure import Figure

    check_columns(pen, ["method", "topology", "N", "M", "penalty"], "pen")
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
    for (i, j), v in np.ndenumerate(values):
        if math.isnan(v):
            continue
        text = "div." if math.isinf(v) else f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.2f}"
        dark = (finite[i, j] and abs(logs[i, j]) > 0.6 * span) or math.isinf(v)
        ax.text(
            j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black"
        )
    ax.set_xticks(range(len(table.columns)), [str(int(m)) for m in table.columns])
    ax.set_yticks(range(len(table.index)), list(table.index))
    ax.set_xlabel(M_LABEL)
    ax.set_ylabel("topology")
    ax.set_title(f"{_label(method, labels)}, {_fmt_n(N)}: {PENALTY_LABEL}", fontsize=10)
    fig.colorbar(image, ax=ax, label=f"log10 {PENALTY_LABEL}")
    fig.tight_layout()
    return save(fig, [], path)
