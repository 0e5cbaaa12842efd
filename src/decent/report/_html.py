"""A self-contained HTML report of one study, built from the results store only."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from decent.metrics import metric_label
from decent.report import _story as story
from decent.report._plots import (
    ReportError,
    _label,
    config_columns,
    line_styles,
    plot_consensus,
    plot_metric,
    plot_node_spread,
)
from decent.report._story import Judged
from decent.results import DONE_STATUSES, Store
from decent.results._store import package_version

X_AXES = ("grad_evals", "comm/bytes", "time/wall_s", "time/sim", "privacy/epsilon")
TABLE_ORDER = (
    "eval/subopt@mean",
    "eval/loss@mean",
    "eval/accuracy@mean",
    "privacy/epsilon",
    "privacy/epsilon_mean",
    "eval/loss@node_max",
    "consensus/dist2",
    "train/loss",
    "grad_evals",
    "comm/bytes",
    "comm/bytes_per_node_max",
    "comm/messages",
    "time/wall_s",
    "time/sim",
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
.status-finished{color:#1a7f37}.status-diverged{color:#9a6700}
.status-running,.status-failed,.status-interrupted{color:#cf222e;font-weight:bold}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
img{max-width:100%}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.8em}
.meta td:first-child{font-weight:bold}
th{cursor:pointer}tr.best td{background:#eef7ee}
.sentence{font-size:1.05em}.caption{font-size:.85em;color:#555;max-width:60em}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def figure_to_data_uri(fig: Figure, dpi: int = 100) -> str:
    """Return ``data:image/png;base64,...`` for ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x: float) -> str:
    return "nan" if pd.isna(x) else f"{x:.4g}"


def _mean_std(values: pd.Series) -> str:
    v = values.dropna() if values.notna().any() else values
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return _fmt(float(v.iloc[0]))
    return f"{_fmt(float(v.mean()))} ± {_fmt(float(v.std(ddof=1)))}"


def _metric_order(metrics: Sequence[str]) -> list[str]:
    known = [m for m in TABLE_ORDER if m in metrics]
    return known + sorted(m for m in metrics if m not in TABLE_ORDER)


def _status_summary(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{int(n)} {s}" for s, n in counts.sort_index().items())


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    row_class: str,
    titles: Sequence[str] | None = None,
) -> str:
    """A sortable table (click a header); ``titles`` are the headers' tooltips."""
    tips = list(titles) if titles is not None else [""] * len(header)
    head = "".join(
        f'<th title="{_e(t)}">{_e(h)}</th>' if t else f"<th>{_e(h)}</th>"
        for h, t in zip(header, tips, strict=True)
    )
    body = "\n".join(f'<tr class="{row_class}">' + "".join(r) + "</tr>" for r in rows)
    return (
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>\n'
        f"<tbody>{body}</tbody></table></div>"
    )


def _final_wide(store: Store, study: str) -> pd.DataFrame:
    """Every run's final metrics, one row per run id and one column per metric."""
    final = store.final(study)
    if not len(final):
        return pd.DataFrame(index=pd.Index([], name="run_id"))
    return final.pivot_table(index="run_id", columns="metric", values="value", dropna=False)


def _final_table(wide: pd.DataFrame, runs: pd.DataFrame, group_cols: list[str]) -> str:
    metrics = _metric_order(sorted(wide.columns))
    runs = runs.set_index("run_id").join(wide, how="left")
    # a column a method lacks (topology.lazy of a ring, algorithm.variant of DAT-SGD) is
    # missing, not a reason to drop the row: group on text with an explicit placeholder
    raw = runs[group_cols].astype(object)
    keys = raw.where(raw.notna(), "—").astype(str) if group_cols else pd.DataFrame(index=runs.index)
    shown = [c for c in group_cols if keys[c].nunique() > 1] or group_cols[:3]
    header = [*shown, "seeds", "runs (status)", *(metric_label(m) for m in metrics)]
    titles = [*shown, "", "", *metrics]
    rows: list[list[str]] = []
    groups = (
        keys.groupby(group_cols, sort=True, dropna=False).groups if group_cols else {"": runs.index}
    )
    for _, idx in groups.items():
        grp = runs.loc[list(idx)]
        done = grp[grp["status"].isin(DONE_STATUSES)]
        cells = [f"<td>{_e(keys.loc[grp.index[0], c])}</td>" for c in shown]
        seeds = sorted(grp["seed"].dropna().tolist()) if "seed" in grp.columns else []
        cells.append(f"<td>{_e(', '.join(str(s) for s in seeds))}</td>")
        cells.append(f"<td>{_e(_status_summary(grp['status']))}</td>")
        for m in metrics:
            mean = done[m].mean() if len(done) and done[m].notna().any() else math.nan
            data = "" if pd.isna(mean) else f' data-v="{float(mean)!r}"'
            text = _mean_std(done[m]) if len(done) else "—"
            cells.append(f'<td class="num"{data}>{_e(text)}</td>')
        rows.append(cells)
    note = (
        "<p>Mean ± sample std over the finished or diverged runs (seeds) of each "
        "configuration; a run's value is its <code>final</code> metric, else its last record. "
        "Unfinished runs are counted in the status column but not averaged. Hover a "
        "header for the record's name; click it to sort.</p>"
    )
    return note + _table(header, rows, "final-row", titles)


def _status_table(runs: pd.DataFrame, shown: list[str]) -> str:
    header = [
        "run id",
        "name",
        *shown,
        "seed",
        "status",
        "started",
        "finished",
        "wall (s)",
        "error",
    ]
    rows = []
    for _, r in runs.iterrows():
        err = str(r["error"]).strip().splitlines()[-1] if r["error"] else ""
        wall = "" if pd.isna(r["wall_s"]) else f"{r['wall_s']:.1f}"
        cells = [
            f"<td><code>{_e(r['run_id'])}</code></td>",
            f"<td>{_e(r['name'])}</td>",
            *(f"<td>{_e(r[c])}</td>" for c in shown),
            f"<td>{_e(r['seed'] if 'seed' in r else '')}</td>",
            f'<td class="status status-{_e(r["status"])}">{_e(r["status"])}</td>',
            f"<td>{_e(r['started_at'])}</td>",
            f"<td>{_e(r['finished_at'])}</td>",
            f'<td class="num">{_e(wall)}</td>',
            f"<td>{_e(err[:200])}</td>",
        ]
        rows.append(cells)
    return _table(header, rows, "run-row")


def _configs_section(store: Store, study: str, seed_col: str) -> str:
    groups: dict[str, list[tuple[str, Any]]] = {}
    for rid, cfg in store.configs(study).items():
        rest = {k: v for k, v in cfg.items() if k != seed_col}
        text = json.dumps(rest, indent=2, sort_keys=True)
        groups.setdefault(text, []).append((rid, cfg.get(seed_col)))
    parts = []
    for i, (text, members) in enumerate(groups.items()):
        seeds = ", ".join(str(s) for _, s in members)
        ids = ", ".join(r for r, _ in members)
        parts.append(
            f"<details{' open' if i == 0 else ''}><summary>configuration {i + 1}: "
            f"{seed_col} = {_e(seeds)} ({len(members)} runs)</summary>"
            f"<p>run ids: <code>{_e(ids)}</code></p><pre>{_e(text)}</pre></details>"
        )
    return "\n".join(parts)


def _varies(df: pd.DataFrame, metric: str) -> bool:
    """Whether a metric says anything: its values differ by more than 0.1% somewhere."""
    v = df.loc[df["metric"] == metric, "value"].to_numpy(dtype="float64")
    v = v[np.isfinite(v)]
    if v.size < 2:
        return False
    return bool(v.max() - v.min() > 1e-3 * max(abs(v).max(), 1e-300))


def report_figures(
    df: pd.DataFrame,
    hue: str | list[str] | None,
    facet: str | None,
    metrics: Sequence[str] | None = None,
    band: str | None = "std",
    *,
    judged: Judged | None = None,
    styles: dict[str, dict[str, Any]] | None = None,
    notes: list[str] | None = None,
) -> list[tuple[str, Figure]]:
    """Return the report's ``(caption, figure)`` list for long records ``df``.

    Figures: the task's objective (``judged``) first, against rounds and against gradient
    evaluations, bytes and time where recorded; the final objective against ``M`` where
    the number of nodes varies; then the other evaluation metrics that vary (a flat one is
    named in ``notes`` instead of drawn), the consensus distance and the best/worst node.
    """
    present = set(df["metric"].unique())
    figs: list[tuple[str, Figure]] = []
    notes = notes if notes is not None else []
    main = judged.metric if judged is not None and judged.metric in present else None
    if metrics is not None:
        chosen = list(metrics)
    else:
        averaged = ("mean", "tail", "weighted")  # the network's model, not one node's
        rest = sorted(
            m
            for m in present
            if m != main
            and (m == "train/loss" or (m.startswith("eval/") and m.rsplit("@", 1)[-1] in averaged))
        )
        chosen = ([main] if main else []) + [m for m in rest if m != main]
    band_txt = {"std": "mean ± std", "ci95": "mean with 95% t-interval", None: "mean"}[band]
    common: dict[str, Any] = {"band": band, "styles": styles}
    log = judged.log_scale if judged is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for m in chosen:
            if m not in present:
                continue
            if not _varies(df, m):
                v = df.loc[df["metric"] == m, "value"]
                notes.append(f"{metric_label(m)} stays at {v.iloc[0]:.4g} in every run (not drawn)")
                continue
            logy = log if m == main else None
            figs.append(
                (
                    f"{metric_label(m)} per round ({band_txt} over seeds)",
                    plot_metric(df, m, "round", hue, facet, logy=logy, **common),
                )
            )
            if m != main:
                continue
            for x in X_AXES:
                if x in present and _varies(df, x):
                    figs.append(
                        (
                            f"{metric_label(m)} against {metric_label(x)} ({band_txt} over seeds)",
                            plot_metric(df, m, x, hue, facet, logy=logy, **common),
                        )
                    )
            if "topology.num_nodes" in df.columns and df["topology.num_nodes"].nunique() > 1:
                figs.append(
                    (
                        f"{metric_label(m)} at the last round against the number of nodes M "
                        f"({band_txt} over seeds)",
                        plot_against_nodes(df, m, hue, facet, judged=judged, styles=styles),
                    )
                )
        if "consensus/dist2" in present and _varies(df, "consensus/dist2"):
            figs.append(
                (
                    "consensus distance per round",
                    plot_consensus(df, "round", hue, facet, band=band, styles=styles),
                )
            )
        if {"eval/loss@node_min", "eval/loss@node_max"} <= present and _varies(
            df, "eval/loss@node_max"
        ):
            figs.append(
                (
                    "best (dashed) and worst (solid) node, mean over seeds",
                    plot_node_spread(df, "eval/loss", "round", hue, facet, styles=styles),
                )
            )
    return figs


def plot_against_nodes(
    df: pd.DataFrame,
    metric: str,
    hue: str | list[str] | None,
    facet: str | None,
    *,
    judged: Judged | None = None,
    styles: dict[str, dict[str, Any]] | None = None,
) -> Figure:
    """The last round's ``metric`` against ``M`` (``topology.num_nodes``), log-log."""
    last = df[df["metric"] == metric]
    last = last[last["round"] == last.groupby("run_id")["round"].transform("max")]
    hue_cols = [
        c for c in ([hue] if isinstance(hue, str) else hue or []) if c != "topology.num_nodes"
    ]
    frame = last.assign(metric=metric, round=last["topology.num_nodes"].astype("int64"))
    facet_use = facet if facet != "topology.num_nodes" else None
    fig = plot_metric(
        frame,
        metric,
        "round",
        hue_cols or None,
        facet_use,
        logy=judged.log_scale if judged is not None and metric == judged.metric else None,
        logx=True,
        band="ci95",
        styles=styles,
        title=f"{metric_label(metric)} against the number of nodes",
    )
    for ax in fig.axes:
        ax.set_xlabel("number of nodes M")
        for line in ax.get_lines():
            line.set_marker(
                line.get_marker() if line.get_marker() not in (None, "None", "") else "o"
            )
    return fig


def write_report(
    store_or_path: Store | str | os.PathLike[str],
    study: str,
    out_dir: str | os.PathLike[str],
    *,
    metrics: Sequence[str] | None = None,
    facet: str | None = "topology.kind",
    band: str | None = "std",
    seed_col: str = "seed",
    title: str | None = None,
    lead: Sequence[tuple[str, str | os.PathLike[str]]] = (),
    lead_table: pd.DataFrame | None = None,
    figures: bool = True,
) -> Path:
    """Write ``out_dir/report.html``: a self-contained report of ``study``.

    Reads the store only. Contains the figures as embedded base64 PNGs, a table of final
    metrics per configuration (mean ± std over seeds, grouped by every config column except
    the seed), run statuses (unfinished runs flagged), the configs as JSON, and when and with
    which version it was generated. No external CSS/JS: it opens from disk.

    Lines are coloured by every config column that varies across the study except the seed
    and the ``facet`` column (one subplot per ``facet`` value when it varies).

    Args:
        store_or_path: A :class:`~decent.results.Store` or a results directory.
        study: The study to report.
        out_dir: Output directory (created).
        metrics: Metrics plotted against rounds (default: the primary ones present).
        facet: Config column for subplots (ignored when absent or constant).
        band: ``"std"``, ``"ci95"`` or ``None``.
        seed_col: The config column averaged over.
        title: Page title.
        lead: ``(caption, PNG path)`` figures shown first, embedded (a study's own
            figures, e.g. error and penalty against ``M`` for a scaling study).
        lead_table: a table shown first (the study's answer), one row per line.
        figures: draw the generic figures (a study whose own ``lead`` figures tell its
            story, e.g. a scaling grid of thousands of runs, passes ``False``).

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: If the study has no runs.
        FileNotFoundError: If there is no results database at the path.
    """
    args = (study, Path(out_dir), metrics, facet, band, seed_col, title, lead, lead_table, figures)
    if isinstance(store_or_path, Store):
        return _write(store_or_path, *args)
    with Store(store_or_path, readonly=True) as store:
        return _write(store, *args)


def _write(
    store: Store,
    study: str,
    out_dir: Path,
    metrics: Sequence[str] | None,
    facet: str | None,
    band: str | None,
    seed_col: str,
    title: str | None,
    lead: Sequence[tuple[str, str | os.PathLike[str]]] = (),
    lead_table: pd.DataFrame | None = None,
    figures: bool = True,
) -> Path:
    runs = store.runs(study)
    if runs.empty:
        raise ReportError(
            f"study {study!r} has no runs in {store.path}; studies present: {store.studies()}"
        )
    df = store.records(study)
    cfg_cols = config_columns(runs)
    varying = [c for c in cfg_cols if runs[c].astype(str).nunique() > 1]
    use_facet = facet if facet in varying else None
    group_cols = [c for c in cfg_cols if c != seed_col]
    shown = [c for c in varying if c != seed_col]
    judged = story.objective(runs, set(df["metric"].unique()) if len(df) else set())

    wide = _final_wide(store, study)

    # lines are named by the algorithm's own label ("D-SGD"), coloured per method and
    # dashed per variant, the same in every figure
    hue_cols = [c for c in varying if c not in (seed_col, use_facet, "algorithm.kind")]
    if "algorithm.kind" in runs.columns:
        hue_cols = ["method", *hue_cols]
    shown_df = df
    styles: dict[str, dict[str, Any]] = {}
    if len(df) and "algorithm.kind" in df.columns:
        shown_df = df.assign(method=df["algorithm.kind"].map(story.method_label))
        per_run = shown_df.drop_duplicates("run_id")
        order = sorted(per_run["method"].unique(), key=str)
        for cols in (hue_cols, [c for c in hue_cols if c != "topology.num_nodes"]):
            if not cols:
                continue
            names = per_run[cols].apply(lambda r, c=cols: _label(list(r), c), axis=1)
            pairs = sorted(set(zip(names, per_run["method"], strict=True)), key=str)
            styles |= line_styles([n for n, _ in pairs], [g for _, g in pairs], order)
    hue: str | list[str] | None = (
        None if not hue_cols else hue_cols[0] if len(hue_cols) == 1 else hue_cols
    )
    notes: list[str] = []
    figs = (
        report_figures(
            shown_df, hue, use_facet, metrics, band, judged=judged, styles=styles, notes=notes
        )
        if len(df) and figures
        else []
    )
    in_answer = bool(figs) and lead_table is None and not lead  # the objective's figure
    fig_html = "\n".join(
        f'<figure><img src="{figure_to_data_uri(fig)}" alt="{_e(cap)}">'
        f"<figcaption>{_e(cap)}</figcaption></figure>"
        for cap, fig in figs[1 if in_answer else 0 :]
    )
    if notes:
        fig_html += "<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    answer = f"<p class='sentence'>{_e(story.sentence(runs, cfg_cols))}</p>"
    if lead_table is not None:  # a study's own answer (e.g. M* per method and graph)
        answer += lead_table.to_html(
            index=False, float_format=lambda v: f"{v:.4g}", border=0, classes="sortable"
        )
    elif judged is not None:
        table = story.headline(runs, wide, judged, cfg_cols)
        _, context_cols = story.axes_of(runs, cfg_cols)
        answer += story.headline_html(table, judged, context_cols)
    for cap, path in lead:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        answer += (
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(cap)}">'
            f"<figcaption>{_e(cap)}</figcaption></figure>"
        )
    if in_answer:  # the objective's own figure beside the ranking, not again below
        cap, fig = figs[0]
        answer += (
            f'<figure><img src="{figure_to_data_uri(fig)}" alt="{_e(cap)}">'
            f"<figcaption>{_e(cap)}</figcaption></figure>"
        )
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    versions = sorted({str(v) for v in runs["package_version"].dropna()})
    commits = sorted({str(v) for v in runs["git_commit"].dropna()})
    unfinished = runs[~runs["status"].isin(DONE_STATUSES)]
    warn = (
        f'<p class="status-running">{len(unfinished)} of {len(runs)} runs are not finished '
        f"({_e(_status_summary(unfinished['status']))}); their partial records are plotted, "
        "but the tables average finished runs only.</p>"
        if len(unfinished)
        else ""
    )
    page_title = title or f"decent report: {study}"
    meta_rows = [
        ("study", study),
        ("store", str(store.path)),
        ("runs", f"{len(runs)} ({_status_summary(runs['status'])})"),
        ("varying config", ", ".join(shown) or "none"),
        (
            "ranked by",
            "—"
            if judged is None
            else f"{judged.label} ({judged.metric}, "
            f"{'lower' if judged.lower_is_better else 'higher'} is better)",
        ),
        ("generated", f"{now} by decent {package_version() or 'unknown'}"),
        ("runs written by decent", ", ".join(versions) or "unknown"),
        ("git commits", ", ".join(commits) or "unknown"),
    ]
    meta = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta_rows)
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{_e(page_title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(page_title)}</h1>
{warn}
<h2 id="answer">The answer</h2>
{answer}
<h2>Figures</h2>
{fig_html or ("<p>No records.</p>" if figures else "<p>The study's own figures are under The answer.</p>")}
<h2>Final metrics per configuration</h2>
{_final_table(wide, runs, group_cols)}
<h2>Runs</h2>
{_status_table(runs, shown)}
<h2>Configurations</h2>
{_configs_section(store, study, seed_col)}
<h2>About this report</h2>
<table class="meta">{meta}</table>
<script>{story.SORT_JS}</script>
</body></html>
"""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "report.html"
    out.write_text(body, encoding="utf-8")
    return out
