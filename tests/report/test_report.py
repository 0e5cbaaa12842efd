"""Tests of decent.report against a store written through the real Store API."""

from __future__ import annotations

import base64
import math
import re
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from decent.report import (
    ReportError,
    aggregate,
    draw_topology,
    plot_consensus,
    plot_metric,
    plot_node_spread,
    topology_figure,
    write_report,
)
from decent.results import Store, load
from decent.tasks import Objective
from decent.tasks.base import SUBOPTIMALITY

ALGOS = {"dat_sgd": 1.0, "dsgd": 2.0}
TOPOS = {"ring": 1.0, "torus": 0.5}
SEEDS = (0, 1, 2)
ROUNDS = tuple(range(0, 60, 10))
STUDY = "synthetic"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def subopt(a: str, topo: str, seed: int, r: int) -> float:
    return ALGOS[a] * TOPOS[topo] * math.exp(-r / 20) * (1 + 0.1 * seed)


def metrics_at(a: str, topo: str, seed: int, r: int) -> dict[str, float]:
    s = subopt(a, topo, seed, r)
    loss = s + 0.3
    return {
        "eval/subopt@mean": s,
        "eval/loss@mean": loss,
        "eval/loss@node_min": 0.9 * loss,
        "eval/loss@node_mean": 1.05 * loss,
        "eval/loss@node_max": 1.2 * loss,
        "consensus/dist2": TOPOS[topo] * 0.1 * math.exp(-r / 10) * (1 + seed),
        "grad_evals": 8.0 * r,
        "comm/bytes": 100.0 * r * (2 if topo == "torus" else 1),
        "time/wall_s": 0.01 * r * (1 + 0.1 * seed),
    }


LABELS = {
    "dat_sgd": ("DAT-SGD", False),
    "dsgd": ("D-SGD", False),
    "minibatch_sgd": ("Minibatch SGD", True),
    "anytime_sgd": ("Anytime SGD", True),
}
"""What the recorder stores of each method (``info.method``), as a run would."""


def method_info(a: str) -> dict[str, object]:
    label, central = LABELS[a]
    return {"method": {"label": label, "centralized": central}}


def config(a: str, topo: str, seed: int) -> dict[str, object]:
    return {
        "algorithm": {"kind": a, "lr": 0.1},
        "topology": {"kind": topo, "num_nodes": 16},
        "task": {"kind": "quadratic", "dim": 5},
        "seed": seed,
        "rounds": ROUNDS[-1],
    }


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("results")
    with Store(path) as store:
        for a in ALGOS:
            for topo in TOPOS:
                for seed in SEEDS:
                    info = {"objective": SUBOPTIMALITY.to_json()} | method_info(a)
                    with store.start_run(
                        STUDY, config(a, topo, seed), flush_every=4, info=info
                    ) as run:
                        for r in ROUNDS:
                            run.log(r, metrics_at(a, topo, seed, r))
                        last = metrics_at(a, topo, seed, ROUNDS[-1])
                        run.finish(final={"eval/subopt@mean": last["eval/subopt@mean"]})
        # An unfinished run: a fourth seed still "running" (e.g. killed).
        run = store.start_run(STUDY, config("dsgd", "ring", 3), flush_every=1)
        for r in ROUNDS[:2]:
            run.log(r, metrics_at("dsgd", "ring", 3, r))
    return path


@pytest.fixture(scope="module")
def finished(store_dir: Path) -> pd.DataFrame:
    df = load(store_dir, STUDY)
    return df[df["status"] == "finished"]


def _seed_values(a: str, topo: str, r: int, metric: str) -> np.ndarray:
    return np.array([metrics_at(a, topo, s, r)[metric] for s in SEEDS])


def test_plot_metric_facets_lines_and_values(finished: pd.DataFrame) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lines differ only in the seed: no warning
        fig = plot_metric(finished, "eval/subopt@mean")
    assert len(fig.axes) == 2
    for ax, topo in zip(fig.axes, sorted(TOPOS), strict=True):
        assert topo in ax.get_title()
        assert ax.get_yscale() == "log"  # automatic for subopt
        lines = ax.get_lines()
        assert sorted(str(line.get_label()) for line in lines) == sorted(ALGOS)
        assert len(ax.collections) == 2  # one band per line
        for line, band in zip(lines, ax.collections, strict=True):
            a = str(line.get_label())
            ref = np.array([_seed_values(a, topo, r, "eval/subopt@mean") for r in ROUNDS])
            # matplotlib types line data and path vertices as ArrayLike: index them as arrays
            np.testing.assert_allclose(np.asarray(line.get_xdata()), ROUNDS)
            np.testing.assert_allclose(np.asarray(line.get_ydata()), ref.mean(axis=1), rtol=1e-12)
            ys = np.asarray(band.get_paths()[0].vertices)[:, 1]
            mean, std = ref.mean(axis=1), ref.std(axis=1, ddof=1)
            assert np.isclose(ys.max(), (mean + std).max())
            assert np.isclose(ys.min(), (mean - std).min())


def test_ci95_band_is_student_t(finished: pd.DataFrame) -> None:
    agg = aggregate(finished, "eval/loss@mean", band="ci95")
    row = agg[(agg["facet"] == "torus") & (agg["hue"] == "dsgd") & (agg["round"] == 20)].iloc[0]
    vals = _seed_values("dsgd", "torus", 20, "eval/loss@mean")
    half = student_t.ppf(0.975, 2) * vals.std(ddof=1) / math.sqrt(3)
    assert row["n"] == 3
    assert np.isclose(row["mean"], vals.mean())
    assert np.isclose(row["hi"] - row["mean"], half)
    assert np.isclose(row["mean"] - row["lo"], half)
    no_band = aggregate(finished, "eval/loss@mean", band=None)
    assert no_band["lo"].isna().all()


def test_plot_metric_against_bytes_and_hue_options(finished: pd.DataFrame) -> None:
    fig = plot_metric(finished, "eval/loss@mean", x="comm/bytes")
    torus = fig.axes[1]
    assert torus.get_yscale() == "linear"
    np.testing.assert_allclose(
        np.asarray(torus.get_lines()[0].get_xdata()), [200.0 * r for r in ROUNDS]
    )
    fig = plot_metric(
        finished, "eval/loss@mean", hue=["algorithm.kind", "topology.kind"], facet=None
    )
    assert len(fig.axes) == 1
    assert len(fig.axes[0].get_lines()) == 4
    with pytest.warns(UserWarning, match="topology.kind"):
        plot_metric(finished, "eval/loss@mean", facet=None)  # topologies averaged together


def test_plot_errors_name_the_problem(finished: pd.DataFrame) -> None:
    with pytest.raises(ReportError, match="eval/nope"):
        plot_metric(finished, "eval/nope")
    with pytest.raises(ReportError, match=r"hue='optimizer\.kind'"):
        plot_metric(finished, "eval/loss@mean", hue="optimizer.kind")
    with pytest.raises(ReportError, match="x='time/none'"):
        plot_metric(finished, "eval/loss@mean", x="time/none")
    with pytest.raises(ReportError, match="band"):
        plot_metric(finished, "eval/loss@mean", band="iqr")


def test_consensus_and_node_spread(finished: pd.DataFrame) -> None:
    fig = plot_consensus(finished)
    assert len(fig.axes) == 2
    assert all(ax.get_yscale() == "log" for ax in fig.axes)
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    fig = plot_node_spread(finished)
    assert len(fig.axes) == 2
    ax = fig.axes[0]  # ring
    lines = {str(line.get_label()): line for line in ax.get_lines()}
    assert len(lines) == 4
    worst = np.asarray(lines["dat_sgd (worst node)"].get_ydata())
    best = np.asarray(lines["dat_sgd (best)"].get_ydata())
    ref = np.array([_seed_values("dat_sgd", "ring", r, "eval/loss@mean") for r in ROUNDS])
    np.testing.assert_allclose(worst, 1.2 * ref.mean(axis=1))
    np.testing.assert_allclose(best, 0.9 * ref.mean(axis=1))


def test_draw_topology(tmp_path: Path) -> None:
    out = draw_topology(nx.cycle_graph(8), tmp_path / "ring.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    small = topology_figure(nx.cycle_graph(8))
    assert len(small.axes[0].texts) == 8  # labelled
    big = topology_figure(nx.cycle_graph(100), layout="spring")
    assert len(big.axes[0].texts) == 0  # no labels when n > 64
    w = np.full((4, 4), 0.25)
    assert "edges=6" in topology_figure(w).axes[0].get_title()
    with pytest.raises(ReportError, match="square"):
        topology_figure(np.ones((2, 3)))
    with pytest.raises(ReportError, match="layout"):
        topology_figure(nx.cycle_graph(4), layout="kamada")


def test_write_report(store_dir: Path, tmp_path: Path) -> None:
    out = write_report(store_dir, STUDY, tmp_path / "rep")
    assert out == tmp_path / "rep" / "report.html"
    text = out.read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    # subopt per round (beside the answer), loss per round; subopt vs grad_evals, bytes,
    # wall time; consensus; node spread
    assert len(images) == 7
    assert all(base64.b64decode(img)[:8] == PNG_MAGIC for img in images)
    # self-contained: one inline script (table sorting), no external resources
    assert text.count("<script") == 1 and "<script>" in text
    assert not re.search(r'(src|href)="https?://', text)
    # human labels, not record keys, on the table headers
    assert '<th title="eval/subopt@mean">f(x̄) − f*</th>' in text

    assert text.count('class="final-row"') == 4  # 2 algorithms x 2 topologies
    row = re.search(r'<tr class="final-row"><td>dat_sgd</td><td>torus</td>(.*?)</tr>', text)
    assert row is not None
    finals = _seed_values("dat_sgd", "torus", ROUNDS[-1], "eval/subopt@mean")
    expected = f"{finals.mean():.3g} ± {finals.std(ddof=1):.3g}"  # 3 significant digits
    assert expected in row.group(1)
    assert "3 finished" in row.group(1)
    dsgd_ring = re.search(r'<tr class="final-row"><td>dsgd</td><td>ring</td>(.*?)</tr>', text)
    assert dsgd_ring is not None
    assert "3 finished" in dsgd_ring.group(1) and "1 running" in dsgd_ring.group(1)

    assert text.count('class="run-row"') == 13
    assert text.count('class="status status-running">running</td>') == 1
    assert "1 of 13 runs are not finished" in text
    assert "&quot;kind&quot;: &quot;quadratic&quot;" in text  # configs as pretty JSON
    assert "configuration 4" in text and "configuration 5" not in text
    assert "generated" in text


def test_write_report_errors(store_dir: Path, tmp_path: Path) -> None:
    with Store(store_dir) as store, pytest.raises(ReportError, match=r"no runs.*synthetic"):
        write_report(store, "missing", tmp_path)
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "nothing", STUDY, tmp_path)


def test_legend_labels_round_floats():
    from decent.report._plots import _label

    assert _label([1.4999999999999999e-05], ["algorithm.lr"]) == "1.5e-05"
    assert _label(["dsgd", 0.03, 64], ["algorithm.kind", "algorithm.lr", "topology.num_nodes"]) == (
        "kind=dsgd, lr=0.03, num_nodes=64"
    )


def _headline_rows(text: str) -> list[list[str]]:
    rows = re.findall(r'<tr class="headline-row[^"]*">(.*?)</tr>', text, flags=re.S)
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows
    ]


def test_the_answer_ranks_methods_by_the_recorded_objective(
    store_dir: Path, tmp_path: Path
) -> None:
    text = write_report(store_dir, STUDY, tmp_path / "rep").read_text(encoding="utf-8")
    rows = _headline_rows(text)
    assert len(rows) == 4  # per graph, each method
    # graph, rank, method, mean ± CI, seeds, x best, runs (the rest recorded by no run)
    by = {(r[0], r[2]): r for r in rows}
    for topo in TOPOS:
        assert by[(topo, "DAT-SGD")][1] == "1" and by[(topo, "D-SGD")][1] == "2"
        for a, label in (("dat_sgd", "DAT-SGD"), ("dsgd", "D-SGD")):
            v = _seed_values(a, topo, ROUNDS[-1], "eval/subopt@mean")
            half = student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
            assert by[(topo, label)][3] == f"{v.mean():.3g} ± {half:.3g}"
            assert by[(topo, label)][4] == "3"  # the running fourth seed is not averaged
        assert by[(topo, "D-SGD")][5] == f"{ALGOS['dsgd'] / ALGOS['dat_sgd']:.3g}×"
    # no centralized method in the study: no "x centralized" column
    assert "<th>× centralized</th>" not in text
    assert by[("ring", "D-SGD")][-1] == "3 of 4 finished"  # no worst node, no bytes recorded
    assert "Best f(x̄) − f* per setting (graph): DAT-SGD in 2 of 2." in text
    assert (
        "What was run: Varies method: D-SGD, DAT-SGD; graph: ring, torus; "
        "seeds 0, 1, 2, 3 (averaged over)" in text
    )
    assert "Held fixed: task = quadratic, task.dim = 5, M = 16" in text


def test_a_higher_is_better_objective_ranks_the_largest_first(tmp_path: Path) -> None:
    judged = Objective("eval/test_accuracy@mean", "test accuracy", lower_is_better=False)
    with Store(tmp_path) as store:
        for a, acc in (("dsgd", 0.9), ("dat_sgd", 0.8), ("minibatch_sgd", 0.95)):
            for seed in (0, 1):
                cfg = config(a, "ring", seed)
                info = {"objective": judged.to_json()} | method_info(a)
                with store.start_run("acc", cfg, info=info) as run:
                    for r in ROUNDS:
                        run.log(r, {"eval/test_accuracy@mean": acc * (r + 1) / 51 + seed * 1e-3})
    text = write_report(tmp_path, "acc", tmp_path / "rep").read_text(encoding="utf-8")
    rows = {r[1].removesuffix(" (centralized)"): r for r in _headline_rows(text)}
    assert "Minibatch SGD (centralized)" in [r[1] for r in _headline_rows(text)]
    assert [rows[m][0] for m in ("Minibatch SGD", "D-SGD", "DAT-SGD")] == ["1", "2", "3"]
    assert rows["D-SGD"][5] == f"{0.9 / 0.95:.3g}×"  # x centralized: to Minibatch SGD
    assert "test accuracy" in text and "higher is better" in text


def test_coinciding_lines_are_named_flat_metrics_are_not_drawn_and_decades_go_log(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        for a in ("anytime_sgd", "dat_sgd", "dsgd"):
            for seed in (0, 1):
                with store.start_run("twins", config(a, "ring", seed), info=method_info(a)) as run:
                    for r in ROUNDS:
                        scale = 2.0 if a == "dsgd" else 1.0  # dat_sgd == anytime_sgd exactly
                        run.log(
                            r,
                            {
                                "eval/subopt@mean": scale * 10.0 ** (-r / 10) * (1 + seed / 10),
                                "eval/accuracy@mean": 0.78,
                                "comm/bytes": 1.0 + r,
                            },
                        )
    df = load(tmp_path, "twins").assign(method=lambda d: d["algorithm.kind"])
    fig = plot_metric(df, "eval/subopt@mean", hue="method", facet=None)
    labels = [str(t.get_text()) for t in fig.legends[0].get_texts()]
    assert "dat_sgd (identical to anytime_sgd)" in labels and "dsgd" in labels
    assert fig.axes[0].get_yscale() == "log"  # 5 decades, and an error
    spread = plot_metric(df, "comm/bytes", hue="method", facet=None)
    assert spread.axes[0].get_yscale() == "linear"  # 1 .. 51: under two decades
    text = write_report(tmp_path, "twins", tmp_path / "rep").read_text(encoding="utf-8")
    assert "training accuracy stays at 0.78 in every run (not drawn)" in text
    assert "Anytime SGD" in text  # the algorithm's own label in the ranking


def test_a_store_without_method_labels_shows_the_kinds(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        for a in ("dsgd", "minibatch_sgd"):
            with store.start_run("old", config(a, "ring", 0)) as run:  # no info.method
                for r in ROUNDS:
                    run.log(r, {"eval/subopt@mean": ALGOS.get(a, 0.5) * math.exp(-r / 20)})
    text = write_report(tmp_path, "old", tmp_path / "rep").read_text(encoding="utf-8")
    methods = [r[1] for r in _headline_rows(text)]
    assert sorted(methods) == ["dsgd", "minibatch_sgd"]  # no registry lookup, no guess


def test_numbers_are_written_to_three_digits_and_sizes_in_binary_units() -> None:
    from decent.report._format import cell, number, ratio, size

    assert number(0.00035912) == "0.000359" and number(2.5e-07) == "2.5e-7"
    assert number(4096.0) == "4096" and number(np.int64(7)) == "7" and number(None) == "—"
    assert size(98_304_000) == f"{98_304_000 / 2**20:.3g} MiB" == "93.8 MiB"
    assert size(1023) == "1023 B" and size(1536) == "1.5 KiB" and size(3 * 2**30) == "3 GiB"
    assert ratio(1.2345) == "1.23×" and cell("× reference", 2.0) == "2×"
    assert cell("bytes / node", 9.83e7) == "93.7 MiB" and cell("graph", "torus") == "torus"
