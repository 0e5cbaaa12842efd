"""How many machines can a decentralized method use? Critical M from a scaling study's table.

At a fixed sample budget ``N = M * T``, the critical number of machines ``M*(N)`` is the
largest ``M`` whose final excess risk still matches the best single-machine error; theory
predicts ``M* ~ N^a`` (:data:`THEORY_SLOPES`). This module computes both from the runs, with
no training and no torch:

* :func:`summarize` - mean and Student-t interval over seeds per (method, topology, N, M);
* :func:`reference` - the best single-machine error per budget ``N``;
* :func:`critical_m` / :func:`critical_m_curve` - ``M*`` for one or several tolerances;
* :func:`penalty` - error on a graph over error on the complete graph, same ``M``;
* :func:`fit_slopes` - the exponent of ``M*`` in ``N`` with a seed bootstrap interval;
* :func:`from_store` - the input table (``cells``) from a results store.

The input everywhere is a tidy table ``cells``, one row per run: ``method`` (str),
``topology`` (str), ``N`` (int), ``M`` (int), ``seed`` (int), ``error`` (float; NaN or
infinite for a diverged run). Figures are in :mod:`decent.studies.figures`.

Example:
    >>> cells = pd.DataFrame({
    ...     "method": "dsgd", "topology": "ring", "N": 4096, "M": [1, 4, 16, 64],
    ...     "seed": 0, "error": [1.0, 1.5, 3.0, 1.2]})
    >>> critical_m(summarize(cells), None, delta=1.0)[["m_star", "m_fail", "censored"]]
       m_star  m_fail  censored
    0     4.0    16.0     False
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "CELL_COLUMNS",
    "THEORY_SLOPES",
    "critical_m",
    "critical_m_curve",
    "fit_slopes",
    "from_store",
    "penalty",
    "reference",
    "summarize",
]

CELL_COLUMNS = ("method", "topology", "N", "M", "seed", "error")
"""The columns of the input table ``cells``, one row per run."""

_KEYS = ["method", "topology", "N", "M"]
_GROUP = ["method", "topology", "N"]
_SINGLE_TOPOLOGY = "complete"  # the preferred home of the topology-free M = 1 cells
_BLOCK = 4_000_000  # bootstrap draws held at once (float64 elements), about 32 MB

THEORY_SLOPES: dict[tuple[str, str], float] = {
    ("dsgd", "complete"): 1 / 4,
    ("dsgd", "random_regular"): 1 / 4,
    ("dsgd", "exponential"): 1 / 4,
    ("dsgd", "torus"): 1 / 6,
    ("dsgd", "ring"): 1 / 8,
    ("dat_sgd", "complete"): 1 / 2,
    ("dat_sgd", "random_regular"): 1 / 2,
    ("dat_sgd", "exponential"): 1 / 2,
    ("dat_sgd", "torus"): 1 / 4,
    ("dat_sgd", "ring"): 1 / 6,
    # Kluger, Attia, Koren 2026 (abstract): M* ~ sqrt(rho) N^(3/4), accelerated gossip
    ("accelerated_dat_sgd", "complete"): 3 / 4,
    ("accelerated_dat_sgd", "random_regular"): 3 / 4,
    ("accelerated_dat_sgd", "exponential"): 3 / 4,
    ("accelerated_dat_sgd", "torus"): 1 / 2,
    ("accelerated_dat_sgd", "ring"): 3 / 8,
}
"""Theoretical exponent ``a`` in ``M* ~ N^a``, keyed by ``(method, topology)``.

With spectral gap ``rho`` of the gossip matrix, the DAT-SGD analysis keeps the centralized
rate up to ``M* ~ sqrt(rho) N^(1/4)`` for D-SGD and ``M* ~ rho sqrt(N)`` for DAT-SGD; the
accelerated method of Kluger, Attia and Koren 2026 (our reading) up to
``M* ~ sqrt(rho) N^(3/4)``. With ``rho = rho(M)``, ``M*`` solves that fixed point:

* complete graph and expander (``"random_regular"``): constant ``rho``: ``1/4``, ``1/2``,
  ``3/4``;
* ring, ``rho ~ 1/M^2``: ``M^2 ~ N^(1/4)`` gives ``1/8`` (D-SGD), ``M^3 ~ N^(1/2)`` ``1/6``
  (DAT-SGD), ``3/8`` (accelerated);
* 2-D torus, ``rho ~ 1/M``: ``1/6``, ``1/4``, ``1/2``;
* exponential graph, ``rho ~ 1/log M``: the expander's exponents up to logarithms (the fit
  on a finite grid sits slightly below them).

Reference: DAT-SGD, decentralized anytime SGD; D-SGD as in Lian et al. 2017,
https://arxiv.org/abs/1705.09056 and Koloskova et al. 2020, https://arxiv.org/abs/2003.10422.
"""


# ---------------------------------------------------------------------- summary per cell


@dataclass(frozen=True)
class _Cells:
    """Runs packed per (method, topology, N, M) cell, cells sorted by those keys."""

    keys: pd.DataFrame  # (K rows) method, topology, N, M
    values: np.ndarray  # (K, S) errors, non-finite replaced by +inf, padding 0.0
    count: np.ndarray  # (K,) runs per cell (seeds + diverged)


def check_columns(df: pd.DataFrame, needed: Sequence[str], name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} is missing column(s) {missing}; it needs {list(needed)}, "
            f"has {list(df.columns)}"
        )
    if df.empty:
        raise ValueError(f"{name} has no rows")


def _pack(cells: pd.DataFrame) -> _Cells:
    check_columns(cells, CELL_COLUMNS, "cells")
    df = cells.loc[:, list(CELL_COLUMNS)].copy()
    df["method"] = df["method"].astype(str)
    df["topology"] = df["topology"].astype(str)
    for col in ("N", "M", "seed"):
        df[col] = df[col].astype("int64")
    if (df["M"] < 1).any() or (df["N"] < 1).any():
        bad = df[(df["M"] < 1) | (df["N"] < 1)].iloc[0]
        raise ValueError(f"cells need N >= 1 and M >= 1, got N={bad['N']}, M={bad['M']}")
    dup = df.duplicated([*_KEYS, "seed"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise ValueError(
            f"cells has {int(dup.sum())} rows sharing (method, topology, N, M, seed), e.g. "
            f"{tuple(first[[*_KEYS, 'seed']])}; each run must be one row: filter the table "
            "(e.g. keep the tuned step size) or tell the variants apart in `method`"
        )
    error = df["error"].to_numpy(dtype="float64")
    df["error"] = np.where(np.isfinite(error), error, np.inf)
    df = df.sort_values([*_KEYS, "seed"], kind="stable").reset_index(drop=True)
    cell_id = df.groupby(_KEYS, sort=False).ngroup().to_numpy()
    keys = df.loc[np.r_[True, cell_id[1:] != cell_id[:-1]], _KEYS].reset_index(drop=True)
    count = np.bincount(cell_id)
    slot = np.arange(len(df)) - np.repeat(np.cumsum(count) - count, count)
    values = np.zeros((len(keys), int(count.max())))
    values[cell_id, slot] = df["error"].to_numpy()
    return _Cells(keys=keys, values=values, count=count)


def _means(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean of the first ``count`` entries of each row of ``values`` (``+inf`` if any is)."""
    return values.sum(axis=-1) / count


def summarize(cells: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Average the runs of each (method, topology, N, M) cell over seeds.

    ``mean = (1/n) sum_i e_i`` over the cell's ``n`` runs, and the Student-t interval
    ``mean -/+ t_{(1+confidence)/2, n-1} s / sqrt(n)`` (``s`` with ``ddof = 1``; one run: both
    ends the mean). A diverged run (NaN or +-inf) counts as ``+inf``: it is within no
    tolerance, so ``mean``, ``ci_low`` and ``ci_high`` of its cell are ``+inf``.

    Args:
        cells: One row per run with columns :data:`CELL_COLUMNS` (others are ignored).
        confidence: Coverage of the interval, in ``(0, 1)``.

    Returns:
        One row per (method, topology, N, M), sorted by those keys: ``method, topology, N,
        M, mean, ci_low, ci_high, seeds`` (finite runs) and ``diverged`` (the others).

    Raises:
        ValueError: If a column is missing, the table is empty, ``N`` or ``M`` is below 1,
            two rows share (method, topology, N, M, seed), or ``confidence`` is not in
            ``(0, 1)``.

    Example:
        >>> cells = pd.DataFrame({"method": "dsgd", "topology": "ring", "N": 64, "M": 4,
        ...                       "seed": [0, 1, 2], "error": [1.0, 2.0, float("nan")]})
        >>> summarize(cells)[["mean", "seeds", "diverged"]]
           mean  seeds  diverged
        0   inf      2         1
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}; e.g. 0.95")
    packed = _pack(cells)
    values, count = packed.values, packed.count
    mean = _means(values, count)
    finite = np.isfinite(mean)
    in_cell = np.arange(values.shape[1])[None, :] < count[:, None]
    dev = np.where(in_cell & finite[:, None], values - np.where(finite, mean, 0.0)[:, None], 0.0)
    std = np.sqrt((dev**2).sum(axis=1) / np.maximum(count - 1, 1))
    tq = stats.t.ppf(0.5 + confidence / 2, np.maximum(count - 1, 1))
    half = np.where(count > 1, tq * std / np.sqrt(count), 0.0)
    diverged = (in_cell & ~np.isfinite(values)).sum(axis=1)
    out = packed.keys.copy()
    out["mean"] = mean
    out["ci_low"] = np.where(finite, mean - half, np.inf)
    out["ci_high"] = np.where(finite, mean + half, np.inf)
    out["seeds"] = (count - diverged).astype("int64")
    out["diverged"] = diverged.astype("int64")
    return out


# ---------------------------------------------------------------------- reference and M*
# one array core, shared by the point estimate and the bootstrap


@dataclass(frozen=True)
class _Layout:
    """Where each (method, topology, N) group's M grid sits among the summary cells."""

    keys: pd.DataFrame  # (K rows) the cells: method, topology, N, M (sorted)
    groups: pd.DataFrame  # (G rows) method, topology, N, m_max
    index: np.ndarray  # (G, L) cell index of the group's grid by increasing M, -1 pads
    m_values: np.ndarray  # (G, L) the grid's M values, NaN pads
    length: np.ndarray  # (G,) grid length
    single: np.ndarray  # (G,) cell index of the M = 1 cell (own or borrowed), -1 if none


def _layout(keys: pd.DataFrame) -> _Layout:
    """Lay out each group's grid; a topology without an M = 1 cell borrows one.

    M = 1 is one machine with no communication, the same run on every graph, so a group
    whose topology has no M = 1 cell uses the same method's M = 1 cell at the same N on the
    ``"complete"`` topology, else on the first other topology in sorted order.
    """
    keys = keys.reset_index(drop=True)
    single_cells: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for k, (method, topology, n, m) in enumerate(keys.itertuples(index=False)):
        if m == 1:
            single_cells.setdefault((method, n), []).append((topology, k))
    rows: list[tuple[str, str, int, int]] = []
    grids: list[list[int]] = []
    single: list[int] = []
    for (method, topology, n), idx in keys.groupby(_GROUP, sort=True).indices.items():
        idx = sorted(idx.tolist(), key=lambda k: int(keys.at[k, "M"]))
        m_max = int(keys.at[idx[-1], "M"])
        if int(keys.at[idx[0], "M"]) == 1:
            one = idx[0]
        else:
            found = sorted(
                single_cells.get((method, n), []), key=lambda tk: (tk[0] != _SINGLE_TOPOLOGY, tk)
            )
            one = found[0][1] if found else -1
            if one >= 0:
                idx = [one, *idx]
        rows.append((method, topology, n, m_max))
        grids.append(idx)
        single.append(one)
    width = max(len(g) for g in grids)
    index = np.full((len(grids), width), -1, dtype=np.int64)
    for g, grid in enumerate(grids):
        index[g, : len(grid)] = grid
    m_all = keys["M"].to_numpy(dtype="float64")
    m_values = np.where(index >= 0, m_all[np.maximum(index, 0)], np.nan)
    groups = pd.DataFrame(rows, columns=[*_GROUP, "m_max"])
    return _Layout(
        keys=keys,
        groups=groups,
        index=index,
        m_values=m_values,
        length=np.array([len(g) for g in grids], dtype=np.int64),
        single=np.array(single, dtype=np.int64),
    )


def _reference_index(keys: pd.DataFrame, methods: Sequence[str]) -> dict[int, np.ndarray]:
    """Cell indices of the reference methods' M = 1 cells, per N (validated)."""
    if isinstance(methods, str) or not len(methods):
        raise ValueError(
            f"methods must be a non-empty sequence of method names, got {methods!r}; "
            "e.g. ['minibatch_sgd', 'anytime_sgd']"
        )
    wanted = [str(m) for m in methods]
    single = keys[(keys["M"] == 1) & keys["method"].isin(wanted)]
    absent = [m for m in wanted if m not in set(single["method"])]
    if absent:
        have = sorted(set(keys.loc[keys["M"] == 1, "method"]))
        raise ValueError(
            f"reference method(s) {absent} have no M == 1 cell; methods with M == 1 cells: {have}"
        )
    budgets = sorted(int(n) for n in keys["N"].unique())
    by_n = {int(n): idx.to_numpy() for n, idx in single.groupby("N").groups.items()}
    missing = [n for n in budgets if n not in by_n]
    if missing:
        raise ValueError(
            f"no M == 1 cell of the reference methods {wanted} at N = {missing}; "
            "run them at every budget N of the study"
        )
    return {n: by_n[n] for n in budgets}


def reference(summary: pd.DataFrame, methods: Sequence[str]) -> pd.Series:
    """The best single-machine error per budget, ``ref[N] = min_{method in methods}
    mean(method, N, M=1)`` over every topology (M = 1 is the same run on every graph), e.g.
    of ``["minibatch_sgd", "anytime_sgd"]``.

    Args:
        summary: The output of :func:`summarize`.
        methods: The reference methods; each must have an M = 1 cell.

    Returns:
        The reference error indexed by ``N`` (every budget of ``summary``), named
        ``"reference"``.

    Raises:
        ValueError: If ``methods`` is empty, a method has no M = 1 cell, a budget ``N`` has
            no M = 1 cell of any of them, or every reference run diverged at some ``N``.
    """
    check_columns(summary, [*_KEYS, "mean"], "summary")
    summary = summary.sort_values(_KEYS, kind="stable").reset_index(drop=True)
    by_n = _reference_index(summary[_KEYS], methods)
    mean = summary["mean"].to_numpy(dtype="float64")
    ref = pd.Series(
        {n: float(mean[idx].min()) for n, idx in by_n.items()}, name="reference", dtype="float64"
    )
    ref.index.name = "N"
    bad = [int(n) for n, v in ref.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(
            f"every reference run of {list(methods)} diverged at N = {bad}; "
            "re-tune their step size, there is no baseline to compare against"
        )
    return ref


def _check_delta(delta: float) -> float:
    try:
        value = float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"delta must be a positive number, got {delta!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"delta must be > 0 (M passes when its error <= (1 + delta) * baseline), "
            f"got {delta!r}; e.g. delta=1.0 allows twice the baseline error"
        )
    return value


def _thresholds(
    means: np.ndarray, baseline: np.ndarray, layout: _Layout, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(m_star, lead)``, both ``(B, G)``, from ``(B, K)`` cell means of ``B`` replicates and
    a ``(B, G)`` baseline per group: the largest M before the first failing grid point (NaN
    when the first fails) and the number of leading passes."""
    vals = np.where(layout.index >= 0, means[:, np.maximum(layout.index, 0)], np.inf)
    base = baseline[:, :, None]
    ok = np.isfinite(vals) & np.isfinite(base) & (vals <= (1.0 + delta) * base)
    lead = np.cumprod(ok, axis=2).sum(axis=2)
    rows = np.arange(layout.index.shape[0])[None, :]
    m_star = np.where(lead > 0, layout.m_values[rows, np.maximum(lead - 1, 0)], np.nan)
    return m_star, lead


def _own_baseline(layout: _Layout) -> None:
    if (layout.single < 0).any():
        g = layout.groups.loc[int(np.flatnonzero(layout.single < 0)[0])]
        raise ValueError(
            f"{g['method']} has no M == 1 cell at N = {g['N']} on any topology, so it has no "
            "own baseline; add M = 1 runs or pass a reference (ref=reference(...))"
        )


def critical_m(summary: pd.DataFrame, ref: pd.Series | None, delta: float = 1.0) -> pd.DataFrame:
    """Find the critical number of machines ``M*`` of each (method, topology, N).

    ``M*`` is the largest ``M`` of the grid such that every grid point ``M' <= M`` passes:
    a finite mean over seeds (not its interval) ``mean(M') <= (1 + delta) * baseline``. The
    first failure (``m_fail``) stops the scan. The grid of (method, topology, N) is the M of
    its cells; a topology with no M = 1 cell (a ring needs 3 nodes) borrows the method's
    M = 1 cell at that N (one machine: the same run on every graph) from ``"complete"``, else
    from the first other topology in sorted order. The baseline is ``ref[N]`` (e.g.
    :func:`reference`), or with ``ref=None`` the method's own M = 1 error (so ``M* >= 1``
    unless M = 1 diverged).

    Args:
        summary: The output of :func:`summarize`.
        ref: Baseline error per ``N`` (index ``N``), or ``None`` for each method's own.
        delta: Relative tolerance, ``> 0``: ``1.0`` allows twice the baseline error.

    Returns:
        One row per (method, topology, N) with columns ``method, topology, N``, ``m_star``
        (float, NaN when the first grid point fails), ``m_fail`` (first failing M, NaN when
        none fails), ``m_max`` (largest M of the group's grid), ``censored`` (``m_star ==
        m_max``: the threshold lies beyond the grid), ``below_grid`` (even the smallest M
        fails) and ``baseline``.

    Raises:
        ValueError: If ``delta <= 0``, ``ref`` lacks a budget ``N`` of ``summary``, or with
            ``ref=None`` a method has no M = 1 cell at some N.
    """
    delta = _check_delta(delta)
    check_columns(summary, [*_KEYS, "mean"], "summary")
    summary = summary.sort_values(_KEYS, kind="stable").reset_index(drop=True)
    layout = _layout(summary[_KEYS])
    means = summary["mean"].to_numpy(dtype="float64")[None, :]
    if ref is None:
        _own_baseline(layout)
        baseline = means[:, layout.single]
    else:
        wanted = layout.groups["N"].to_numpy()
        values = pd.Series(ref, dtype="float64").reindex(wanted)
        if values.isna().any():
            missing = sorted({int(n) for n in wanted[values.isna().to_numpy()]})
            raise ValueError(
                f"ref has no baseline for N = {missing}; it covers N = "
                f"{sorted(int(n) for n in pd.Series(ref).index)}"
            )
        baseline = values.to_numpy()[None, :]
    m_star, lead = _thresholds(means, baseline, layout, delta)
    out = layout.groups[_GROUP].copy()
    out["m_star"] = m_star[0]
    rows = np.arange(len(out))
    has_fail = lead[0] < layout.length
    out["m_fail"] = np.where(
        has_fail, layout.m_values[rows, np.minimum(lead[0], layout.length - 1)], np.nan
    )
    out["m_max"] = layout.groups["m_max"].astype("int64")
    out["censored"] = ~has_fail
    out["below_grid"] = lead[0] == 0
    out["baseline"] = baseline[0]
    return out


def critical_m_curve(
    summary: pd.DataFrame, ref: pd.Series | None, deltas: Sequence[float]
) -> pd.DataFrame:
    """The tables of :func:`critical_m` for each tolerance in ``deltas`` (each ``> 0``),
    stacked, with a leading ``delta`` column.

    Raises:
        ValueError: If ``deltas`` is empty, or as :func:`critical_m`.
    """
    deltas = list(deltas)
    if not deltas:
        raise ValueError("deltas must name at least one tolerance, e.g. [0.5, 1.0, 2.0]")
    tables = []
    for delta in deltas:
        table = critical_m(summary, ref, delta)
        table.insert(0, "delta", _check_delta(delta))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


# ---------------------------------------------------------------------- penalty


def penalty(summary: pd.DataFrame, against: str = "complete") -> pd.DataFrame:
    """Divide each cell's error by the same (method, N, M) on the ``against`` topology.

    ``penalty = mean / mean_against``; ``[ci_low, ci_high] / mean_against`` treats the
    denominator as exact (approximate: too narrow by its own noise). Rows of ``against``
    get exactly 1.0; a diverged numerator gives ``inf``, a diverged denominator 0 or NaN.

    Returns:
        One row per (method, topology, N, M) with a matching ``against`` cell: ``method,
        topology, N, M, mean, mean_against, penalty, penalty_low, penalty_high``.

    Raises:
        ValueError: If ``summary`` has no cell on the topology ``against``.
    """
    check_columns(summary, [*_KEYS, "mean", "ci_low", "ci_high"], "summary")
    base = summary[summary["topology"] == against]
    if base.empty:
        raise ValueError(
            f"summary has no cell on topology {against!r}; topologies: "
            f"{sorted(summary['topology'].astype(str).unique())}"
        )
    base = base[["method", "N", "M", "mean"]].rename(columns={"mean": "mean_against"})
    cols = [*_KEYS, "mean", "ci_low", "ci_high"]
    out = summary[cols].merge(base, on=["method", "N", "M"], how="inner")
    den = out["mean_against"].to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        for col, src in (
            ("penalty", "mean"),
            ("penalty_low", "ci_low"),
            ("penalty_high", "ci_high"),
        ):
            out[col] = out[src].to_numpy(dtype="float64") / den
    own = (out["topology"] == against).to_numpy()
    out.loc[own, ["penalty", "penalty_low", "penalty_high"]] = 1.0
    out = out.drop(columns=["ci_low", "ci_high"])
    return out.sort_values(_KEYS, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------- slope of M* in N


def _slopes(
    m_star: np.ndarray, lead: np.ndarray, layout: _Layout, pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fit of ``log2 M*`` on ``log2 N`` per (method, topology): ``m_star`` and
    ``lead`` ``(B, G)`` from :func:`_thresholds`, ``pairs`` ``(P, J)`` the group indices of
    each pair by increasing N (-1 pads). Returns ``(slope, intercept, points)``, each
    ``(B, P)``; NaN slope with under 2 points."""
    x_all = np.log2(layout.groups["N"].to_numpy(dtype="float64"))
    g = np.maximum(pairs, 0)
    usable = (pairs >= 0)[None] & (lead < layout.length[None, :])[:, g] & (lead > 0)[:, g]
    w = usable.astype("float64")  # (B, P, J)
    x = x_all[g][None]
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(usable, np.log2(m_star[:, g]), 0.0)
        n = w.sum(axis=2)
        sx, sy = (w * x).sum(axis=2), (w * y).sum(axis=2)
        sxx, sxy = (w * x * x).sum(axis=2), (w * x * y).sum(axis=2)
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
        intercept = (sy - slope * sx) / n
    enough = n >= 2
    return np.where(enough, slope, np.nan), np.where(enough, intercept, np.nan), n


def _boot_means(packed: _Cells, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_boot, K)`` means of seed resamples drawn with replacement within each cell."""
    k, s = packed.values.shape
    count = packed.count
    rows = np.arange(k)[None, :, None]
    in_cell = np.arange(s)[None, None, :] < count[None, :, None]
    block = max(1, _BLOCK // max(1, k * s))
    out = np.empty((n_boot, k))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        draw = rng.integers(0, count[None, :, None], size=(b, k, s))
        picked = np.where(in_cell, packed.values[rows, draw], 0.0)
        out[start : start + b] = _means(picked, count)
    return out


def fit_slopes(
    cells: pd.DataFrame,
    ref_methods: Sequence[str],
    delta: float = 1.0,
    against: str = "reference",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Fit the exponent ``a`` of ``M* ~ N^a`` per (method, topology), with a bootstrap.

    Point estimate: the least-squares slope of ``log2 M*`` (:func:`critical_m`) against
    ``log2 N`` over the budgets whose ``M*`` is finite and uncensored (a censored ``M*`` is
    a lower bound, a below-grid one undefined); under 2 such budgets: NaN. Bootstrap: each
    replicate resamples every cell's seeds with replacement
    (``numpy.random.Generator(PCG64(seed))``) and recomputes means, reference, ``M*`` and
    slope; the interval is the 2.5 and 97.5 percentiles over the ``boot_used`` replicates
    with at least 2 usable budgets (identical seeds: zero width).

    Args:
        cells: One row per run (see :func:`summarize`).
        ref_methods: Reference methods for :func:`reference` (``against="reference"``).
        delta: Relative tolerance of :func:`critical_m`, ``> 0``.
        against: ``"reference"`` (baseline :func:`reference` of ``ref_methods``) or
            ``"own"`` (each method's own M = 1 error; ``ref_methods`` is then unused).
        n_boot: Bootstrap replicates (0: no interval).
        seed: Seed of the bootstrap generator.

    Returns:
        One row per (method, topology): ``method, topology, slope, intercept`` (of
        ``log2 M* = intercept + slope log2 N``), ``points`` (budgets used),
        ``censored_points``, ``below_grid_points``, ``slope_low, slope_high, boot_used``
        and ``theory`` (:data:`THEORY_SLOPES`, NaN where unknown).

    Raises:
        ValueError: For a bad ``delta``, ``against`` or ``n_boot``, or as :func:`summarize`,
            :func:`reference` and :func:`critical_m`.
    """
    delta = _check_delta(delta)
    if against not in ("reference", "own"):
        raise ValueError(f"against must be 'reference' or 'own', got {against!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise ValueError(f"n_boot must be an integer >= 0, got {n_boot!r}")
    packed = _pack(cells)
    layout = _layout(packed.keys)
    if against == "reference":
        ref_index = _reference_index(packed.keys, ref_methods)
        group_n = layout.groups["N"].to_numpy()
    else:
        _own_baseline(layout)

    def baseline_of(means: np.ndarray) -> np.ndarray:
        if against == "own":
            return means[:, layout.single]
        ref = np.empty((means.shape[0], len(group_n)))
        for n, idx in ref_index.items():
            ref[:, group_n == n] = means[:, idx].min(axis=1)[:, None]
        return ref

    point = _means(packed.values, packed.count)[None, :]
    if against == "reference":
        base = baseline_of(point)
        if not np.isfinite(base).all():
            bad = sorted({int(n) for n in group_n[~np.isfinite(base[0])]})
            raise ValueError(f"every reference run of {list(ref_methods)} diverged at N = {bad}")

    pair_groups = layout.groups.groupby(["method", "topology"], sort=True).indices
    pair_keys = list(pair_groups)
    width = max(len(v) for v in pair_groups.values())
    pairs = np.full((len(pair_keys), width), -1, dtype=np.int64)
    for p, key in enumerate(pair_keys):
        idx = pair_groups[key]
        order = np.argsort(layout.groups["N"].to_numpy()[idx], kind="stable")
        pairs[p, : len(idx)] = idx[order]

    m_star, lead = _thresholds(point, baseline_of(point), layout, delta)
    slope, intercept, points = _slopes(m_star, lead, layout, pairs)
    g = np.maximum(pairs, 0)
    real = pairs >= 0
    censored = ((lead[0] == layout.length)[g] & real).sum(axis=1)
    below = ((lead[0] == 0)[g] & real).sum(axis=1)

    low = np.full(len(pair_keys), np.nan)
    high = np.full(len(pair_keys), np.nan)
    used = np.zeros(len(pair_keys), dtype=np.int64)
    if n_boot > 0:
        rng = np.random.Generator(np.random.PCG64(seed))
        boot = _boot_means(packed, n_boot, rng)
        b_star, b_lead = _thresholds(boot, baseline_of(boot), layout, delta)
        b_slope, _, _ = _slopes(b_star, b_lead, layout, pairs)
        for p in range(len(pair_keys)):
            ok = b_slope[:, p][np.isfinite(b_slope[:, p])]
            used[p] = ok.size
            if ok.size:
                low[p], high[p] = np.percentile(ok, [2.5, 97.5])

    out = pd.DataFrame(pair_keys, columns=["method", "topology"])
    out["slope"] = slope[0]
    out["intercept"] = intercept[0]
    out["points"] = points[0].astype("int64")
    out["censored_points"] = censored.astype("int64")
    out["below_grid_points"] = below.astype("int64")
    out["slope_low"] = low
    out["slope_high"] = high
    out["boot_used"] = used
    out["theory"] = [THEORY_SLOPES.get((m, t), np.nan) for m, t in pair_keys]
    return out


# ---------------------------------------------------------------------- from a store


def from_store(
    path: str | os.PathLike[str],
    study: str,
    metric: str = "eval/subopt@mean",
    method_key: Callable[[pd.Series], str] | None = None,
) -> pd.DataFrame:
    """Build ``cells`` from the runs of ``study`` in a results store (directory or file).

    Per run: ``error`` is ``metric`` at its last recorded round, or ``+inf`` for a
    ``"diverged"`` run; ``M = topology.num_nodes``, ``N = M * rounds * task.batch_size``
    (default batch 1), ``topology = topology.kind``, ``method = algorithm.kind`` or
    ``method_key(row)`` on the run's row of :meth:`decent.results.Store.runs`. Runs that did
    not end (``running``, ``failed``, ``interrupted``) are left out.

    Returns:
        ``cells`` with :data:`CELL_COLUMNS` plus ``run_id`` and ``status``.

    Raises:
        StoreNotFoundError: If there is no store at ``path``.
        ValueError: If the study has no finished or diverged run, or a finished run has
            no record of ``metric``.
    """
    from decent.results import DONE_STATUSES, Store, load

    with Store(path, readonly=True) as store:
        runs = store.runs(study)
        studies = store.studies()
    if runs.empty:
        raise ValueError(f"no runs of study {study!r} in {os.fspath(path)}; studies: {studies}")
    runs = runs[runs["status"].isin(DONE_STATUSES)].reset_index(drop=True)
    if runs.empty:
        raise ValueError(f"study {study!r} has no finished or diverged run")
    records = load(path, study=study, metrics=[metric])
    last = records.sort_values("round", kind="stable").groupby("run_id").tail(1)
    values: Mapping[str, float] = dict(zip(last["run_id"], last["value"], strict=True))
    diverged = (runs["status"] == "diverged").to_numpy()
    lacking = [
        r for r, d in zip(runs["run_id"], diverged, strict=True) if not d and r not in values
    ]
    if lacking:
        raise ValueError(
            f"{len(lacking)} finished run(s) of study {study!r} never recorded {metric!r} "
            f"(e.g. {lacking[0]}); pass the metric= name they log"
        )
    m = runs["topology.num_nodes"].astype("int64")
    batch = (
        runs["task.batch_size"].fillna(1).astype("int64")
        if "task.batch_size" in runs.columns
        else pd.Series(1, index=runs.index, dtype="int64")
    )
    cells = pd.DataFrame(
        {
            "method": (
                runs.apply(method_key, axis=1).astype(str)
                if method_key is not None
                else runs["algorithm.kind"].astype(str)
            ),
            "topology": runs["topology.kind"].astype(str),
            "N": m * runs["rounds"].astype("int64") * batch,
            "M": m,
            "seed": runs["seed"].astype("int64"),
            "error": [
                math.inf if d else float(values[r])
                for r, d in zip(runs["run_id"], diverged, strict=True)
            ],
            "run_id": runs["run_id"].astype(str),
            "status": runs["status"].astype(str),
        }
    )
    return cells
