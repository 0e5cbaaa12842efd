"""A self-contained HTML report of one study, built from the results store only."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from decent.metrics import metric_label
from decent.report import _format as fmt
from decent.report import _story as story
from decent.report._format import esc as _e
from decent.report._format import num_td, td
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
from decent.results._store import opened, package_version

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


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_to_data_uri(fig: Figure, dpi: int = 100) -> str:
    """Return ``data:image/png;base64,...`` for ``fig``, cropped to what it draws (a long
    title or a legend outside the axes is never cut off)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return _png_uri(buf.getvalue())


def points(fig: Figure) -> int:
    """The most data points any one line (or scatter) of ``fig`` holds: finite points of a
    line, offsets of a scatter collection. Two methods of one point each give 1."""
    most = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype("float64")
            most = max(most, int(np.isfinite(xy).all(axis=1).sum()))
        for coll in ax.collections:
            if type(coll).__name__ != "PathCollection":  # a band is an area, not points
                continue
            offsets = np.asarray(coll.get_offsets(), dtype="float64").reshape(-1, 2)
            most = max(most, int(np.isfinite(offsets).all(axis=1).sum()))
    return most


MIN_POINTS = 3
"""A figure whose every line holds fewer points is not drawn: a table says it better."""


def _too_few(caption: str) -> str:
    return f"{caption}: fewer than {MIN_POINTS} points (not drawn; see the tables)"


def _mean_std(values: pd.Series, metric: str = "") -> str:
    v = values.dropna() if values.notna().any() else values
    show = fmt.size if fmt.is_size(metric) else fmt.number
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return show(float(v.iloc[0]))
    return f"{show(float(v.mean()))} ± {show(float(v.std(ddof=1)))}"


def _status_summary(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{int(n)} {s}" for s, n in counts.sort_index().items())


def _final_table(wide: pd.DataFrame, runs: pd.DataFrame, group_cols: list[str]) -> str:
    metrics = [m for m in TABLE_ORDER if m in wide.columns]
    metrics += sorted(m for m in wide.columns if m not in TABLE_ORDER)
    runs = runs.set_index("run_id").join(wide, how="left")
    # a column a method lacks (topology.lazy of a ring, algorithm.variant of DAT-SGD) is
    # missing, not a reason to drop the row: group on text with an explicit placeholder
    raw = runs[group_cols].astype(object)
    keys = raw.where(raw.notna(), "—").astype(str) if group_cols else pd.DataFrame(index=runs.index)
    shown = [c for c in group_cols if keys[c].nunique() > 1] or group_cols[:3]
    groups = (
        keys.groupby(group_cols, sort=True, dropna=False).groups if group_cols else {"": runs.index}
    )
    rows: list[list[str]] = []
    for idx in groups.values():
        grp = runs.loc[list(idx)]
        done = grp[grp["status"].isin(DONE_STATUSES)]
        seeds = sorted(grp["seed"].dropna().tolist()) if "seed" in grp.columns else []
        cells = [td(keys.loc[grp.index[0], c]) for c in shown]
        cells += [td(", ".join(str(s) for s in seeds)), td(_status_summary(grp["status"]))]
        for m in metrics:
            mean = done[m].mean() if len(done) and done[m].notna().any() else math.nan
            cells.append(num_td(mean, _mean_std(done[m], m) if len(done) else "—"))
        rows.append(cells)
    note = (
        "<p>Mean ± sample std over the finished or diverged runs (seeds) of each "
        "configuration; a run's value is its <code>final</code> metric, else its last record. "
        "Unfinished runs are counted in the status column but not averaged. Hover a "
        "header for the record's name; click it to sort.</p>"
    )
    header = [*shown, "seeds", "runs (status)", *(metric_label(m) for m in metrics)]
    return note + fmt.table(header, rows, "final-row", titles=[*shown, "", "", *metrics])


def _status_table(runs: pd.DataFrame, shown: list[str]) -> str:
    rows = []
    for _, r in runs.iterrows():
        err = str(r["error"]).strip().splitlines()[-1] if r["error"] else ""
        rows.append(
            [
                f"<td><code>{_e(r['run_id'])}</code></td>",
                td(r["name"]),
                *(td(r[c]) for c in shown),
                td(r["seed"] if "seed" in r else ""),
                td(r["status"], f"status status-{_e(r['status'])}"),
                td(r["started_at"]),
                td(r["finished_at"]),
                td("" if pd.isna(r["wall_s"]) else f"{r['wall_s']:.1f}", "num"),
                td(err[:200]),
            ]
        )
    header = ["run id", "name", *shown, "seed", "status", "started", "finished", "wall (s)"]
    return fmt.table([*header, "error"], rows, "run-row")


def _configs_section(configs: dict[str, dict[str, Any]], seed_col: str) -> str:
    groups: dict[str, list[tuple[str, Any]]] = {}
    for rid, cfg in configs.items():
        rest = {k: v for k, v in cfg.items() if k != seed_col}
        text = json.dumps(rest, indent=2, sort_keys=True)
        groups.setdefault(text, []).append((rid, cfg.get(seed_col)))
    return "\n".join(
        _details(
            f"configuration {i + 1}: {seed_col} = {', '.join(str(s) for _, s in members)} "
            f"({len(members)} runs)",
            f"<p>run ids: <code>{_e(', '.join(r for r, _ in members))}</code></p>"
            f"<pre>{_e(text)}</pre>",
            i == 0,
        )
        for i, (text, members) in enumerate(groups.items())
    )


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
    A figure with fewer than :data:`MIN_POINTS` points on every line is named in ``notes``
    instead of drawn.
    """
    present = set(df["metric"].unique())
    notes = notes if notes is not None else []
    main = judged.metric if judged is not None and judged.metric in present else None
    if metrics is None:
        averaged = ("mean", "tail", "weighted")  # the network's model, not one node's
        metrics = ([main] if main else []) + sorted(
            m
            for m in present
            if m != main
            and (m == "train/loss" or (m.startswith("eval/") and m.rsplit("@", 1)[-1] in averaged))
        )
    over = {"std": "mean ± std", "ci95": "mean with 95% t-interval", None: "mean"}[band]
    over += " over seeds"
    log = judged.log_scale if judged is not None else None
    figs: list[tuple[str, Figure]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for m in [m for m in metrics if m in present]:
            name = metric_label(m)
            if not _varies(df, m):
                v = df.loc[df["metric"] == m, "value"]
                notes.append(f"{name} stays at {v.iloc[0]:.4g} in every run (not drawn)")
                continue
            logy = log if m == main else None
            for x in ("round", *(X_AXES if m == main else ())):
                if x == "round" or (x in present and _varies(df, x)):
                    cap = (
                        f"{name} per round" if x == "round" else f"{name} against {metric_label(x)}"
                    )
                    fig = plot_metric(df, m, x, hue, facet, logy=logy, band=band, styles=styles)
                    figs.append((f"{cap} ({over})", fig))
            if m == main and "topology.num_nodes" in df and df["topology.num_nodes"].nunique() > 1:
                cap = f"{name} at the last round against the number of nodes M ({over})"
                figs.append((cap, plot_against_nodes(df, m, hue, facet, judged, styles)))
        if "consensus/dist2" in present and _varies(df, "consensus/dist2"):
            fig = plot_consensus(df, "round", hue, facet, band=band, styles=styles)
            figs.append(("consensus distance per round", fig))
        spread = {"eval/loss@node_min", "eval/loss@node_max"}
        if spread <= present and _varies(df, "eval/loss@node_max"):
            fig = plot_node_spread(df, "eval/loss", "round", hue, facet, styles=styles)
            figs.append(("best (dashed) and worst (solid) node, mean over seeds", fig))
    notes += [_too_few(cap) for cap, fig in figs if points(fig) < MIN_POINTS]
    return [(cap, fig) for cap, fig in figs if points(fig) >= MIN_POINTS]


def plot_against_nodes(
    df: pd.DataFrame,
    metric: str,
    hue: str | list[str] | None,
    facet: str | None,
    judged: Judged | None = None,
    styles: dict[str, dict[str, Any]] | None = None,
) -> Figure:
    """The last round's ``metric`` against ``M`` (``topology.num_nodes``), log-log."""
    last = df[df["metric"] == metric]
    last = last[last["round"] == last.groupby("run_id")["round"].transform("max")]
    hues = [c for c in ([hue] if isinstance(hue, str) else hue or []) if c != "topology.num_nodes"]
    fig = plot_metric(
        last.assign(round=last["topology.num_nodes"].astype("int64")),
        metric,
        "round",
        hues or None,
        facet if facet != "topology.num_nodes" else None,
        logy=judged.log_scale if judged is not None and metric == judged.metric else None,
        logx=True,
        band="ci95",
        styles=styles,
        title=f"{metric_label(metric)} against the number of nodes",
    )
    for ax in fig.axes:
        ax.set_xlabel("number of nodes M")
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", ""):
                line.set_marker("o")
    return fig


Lead = tuple[str, "str | os.PathLike[str] | Figure"]
"""A study's own figure: ``(caption, PNG path or matplotlib Figure)``."""


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
    answer: str | None = None,
    lead_table: pd.DataFrame | None = None,
    lead_caption: str | None = None,
    full_table: pd.DataFrame | None = None,
    lead: Sequence[Lead] = (),
    figures: bool = True,
) -> Path:
    """Write ``out_dir/report.html``: a self-contained report of ``study``.

    Reads the store only. The first screen answers the question: one sentence and a compact
    table (a study's own ``answer`` and ``lead_table``, else the methods ranked per setting
    by the task's objective), numbers to three significant digits and bytes in KiB/MiB;
    then what was run (the axes, searched grids and settings that follow from them, what was
    held fixed), the figures, and folded below the full tables: final metrics per
    configuration (mean ± std over seeds), every run's status, the configs as JSON, and when
    and with which version it was generated. No external CSS/JS: it opens from disk.

    Lines are coloured by every config column that varies across the study except the seed
    and the ``facet`` column (one subplot per ``facet`` value when it varies). A figure
    whose every line holds fewer than three points is named in a note instead of drawn.

    Args:
        store_or_path: A :class:`~decent.results.Store` or a results directory.
        study: The study to report.
        out_dir: Output directory (created).
        metrics: Metrics plotted against rounds (default: the primary ones present).
        facet: Config column for subplots (ignored when absent or constant).
        band: ``"std"``, ``"ci95"`` or ``None``.
        seed_col: The config column averaged over.
        title: Page title.
        answer: The study's answer in one sentence, shown first (e.g. "D-SGD stays within
            1.5x of one machine up to M* = 256 on the torus").
        lead_table: The study's compact headline table, shown under ``answer`` (numbers
            in three significant digits; a column named with "bytes" in KiB/MiB).
        lead_caption: What ``lead_table``'s columns mean, shown under it.
        full_table: The study's full table, folded under the headline.
        lead: ``(caption, PNG path or Figure)`` figures shown after the headline (a study's
            own figures, e.g. error and penalty against ``M``); a Figure with fewer than
            three points is named in a note instead.
        figures: draw the generic figures (a study whose own ``lead`` figures tell its
            story, e.g. a scaling grid of thousands of runs, passes ``False``).

    Returns:
        The path of ``report.html``.

    Raises:
        ReportError: If the study has no runs.
        FileNotFoundError: If there is no results database at the path.
    """
    with opened(store_or_path) as store:
        runs = store.runs(study)
        if runs.empty:
            raise ReportError(
                f"study {study!r} has no runs in {store.path}; studies present: {store.studies()}"
            )
        df = store.records(study)
        final = store.final(study)
        configs = store.configs(study)
        where = store.path
    wide = (
        final.pivot_table(index="run_id", columns="metric", values="value", dropna=False)
        if len(final)
        else pd.DataFrame(index=pd.Index([], name="run_id"))
    )
    cfg_cols = config_columns(runs)
    varying = [c for c in cfg_cols if runs[c].astype(str).nunique() > 1]
    use_facet = facet if facet in varying else None
    group_cols = [c for c in cfg_cols if c != seed_col]
    shown = [c for c in varying if c != seed_col]
    judged = story.objective(runs, set(df["metric"].unique()) if len(df) else set())
    methods = story.Methods.of(runs)

    # lines are named by the algorithm's own label ("D-SGD"), coloured per method and
    # dashed per variant, the same in every figure
    hue_cols = [c for c in varying if c not in (seed_col, use_facet, "algorithm.kind")]
    if "algorithm.kind" in runs.columns:
        hue_cols = ["method", *hue_cols]
    styles: dict[str, dict[str, Any]] = {}
    if len(df) and "algorithm.kind" in df.columns:
        df = df.assign(method=df["algorithm.kind"].map(methods.label))
        per_run = df.drop_duplicates("run_id")
        order = sorted(per_run["method"].unique(), key=str)
        for cols in (hue_cols, [c for c in hue_cols if c != "topology.num_nodes"]):
            if not cols:
                continue
            names = per_run[cols].apply(lambda r, c=cols: _label(list(r), c), axis=1)
            pairs = sorted(set(zip(names, per_run["method"], strict=True)), key=str)
            styles |= line_styles([n for n, _ in pairs], [g for _, g in pairs], order)
    hue = None if not hue_cols else hue_cols[0] if len(hue_cols) == 1 else hue_cols
    notes: list[str] = []
    figs = (
        report_figures(df, hue, use_facet, metrics, band, judged=judged, styles=styles, notes=notes)
        if len(df) and figures
        else []
    )

    own = lead_table is not None or answer is not None or bool(lead)
    in_answer = bool(figs) and not own  # the objective's figure beside the ranking
    ran = f"<p class='ran'>What was run: {_e(story.sentence(runs, cfg_cols, methods))}</p>"
    if own:  # a study's own answer (e.g. M* per method and graph)
        top = f"<p class='sentence'>{_e(answer)}</p>" if answer else ""
        if lead_table is not None:
            top += fmt.table_html(lead_table, classes="sortable headline")
        if lead_caption:
            top += f"<p class='caption'>{_e(lead_caption)}</p>"
        top += ran
        if full_table is not None:
            top += _details(f"Full table ({len(full_table)} rows)", fmt.table_html(full_table))
        for cap, image in lead:
            if isinstance(image, Figure) and points(image) < MIN_POINTS:
                notes.append(_too_few(cap))
            else:
                top += _figure_html(cap, image)
    elif judged is not None:
        table = story.headline(runs, wide, judged, cfg_cols, methods)
        context_cols = story.axes_of(runs, cfg_cols)[1]
        verdict = story.verdict(table, judged, context_cols)
        top = f"<p class='sentence'>{_e(verdict)}</p>" if verdict else ""
        top += story.headline_html(table, judged, context_cols) + ran
    else:
        top = ran
    if in_answer:  # the objective's own figure beside the ranking, not again below
        top += _figure_html(*figs[0])
    fig_html = "\n".join(_figure_html(cap, fig) for cap, fig in figs[1 if in_answer else 0 :])
    if notes:
        fig_html += "<ul class='notes'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    if not fig_html:
        fig_html = (
            "<p>No records.</p>"
            if figures
            else "<p>The study's own figures are under The answer.</p>"
        )

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    unfinished = runs[~runs["status"].isin(DONE_STATUSES)]
    warn = (
        f'<p class="status-running">{len(unfinished)} of {len(runs)} runs are not finished '
        f"({_e(_status_summary(unfinished['status']))}); their partial records are plotted, "
        "but the tables average finished runs only.</p>"
        if len(unfinished)
        else ""
    )
    page_title = title or f"decent report: {study}"
    ranked = "—"
    if judged is not None:
        way = "lower" if judged.lower_is_better else "higher"
        ranked = f"{judged.label} ({judged.metric}, {way} is better)"

    def listed(col: str) -> str:
        return ", ".join(sorted({str(v) for v in runs[col].dropna()})) or "unknown"

    meta_rows = [
        ("study", study),
        ("store", str(where)),
        ("runs", f"{len(runs)} ({_status_summary(runs['status'])})"),
        ("varying config", ", ".join(shown) or "none"),
        ("ranked by", ranked),
        ("generated", f"{now} by decent {package_version() or 'unknown'}"),
        ("runs written by decent", listed("package_version")),
        ("git commits", listed("git_commit")),
    ]
    meta = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta_rows)
    n_groups = len(runs[group_cols].astype(str).drop_duplicates()) if group_cols else 1
    final_table = _final_table(wide, runs, group_cols)
    page = Template((files("decent.report") / "page.html").read_text(encoding="utf-8"))
    body = page.substitute(
        title=_e(page_title),
        warn=warn,
        answer=top,
        figures=fig_html,
        final=_details(f"{n_groups} configurations", final_table, n_groups <= 12),
        runs=_details(f"{len(runs)} runs", _status_table(runs, shown), len(runs) <= 12),
        configs=_configs_section(configs, seed_col),
        meta=meta,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(body, encoding="utf-8")
    return out / "report.html"


def _figure_html(caption: str, image: str | os.PathLike[str] | Figure) -> str:
    src = (
        figure_to_data_uri(image)
        if isinstance(image, Figure)
        else _png_uri(Path(image).read_bytes())
    )
    return (
        f'<figure><img src="{src}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _details(summary: str, content: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{_e(summary)}</summary>{content}</details>"
