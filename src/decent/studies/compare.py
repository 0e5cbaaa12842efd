"""The comparison study: what does decentralization cost each method at one network size?

DAT-SGD, D-SGD and gradient tracking on a ring and a 2-D torus of 64 nodes, each next to its
centralized counterpart (Anytime SGD, minibatch SGD: exact all-reduce), on streaming logistic
regression with shifted feature distributions per node (on least squares with a shared
feature covariance the network average of a linear method is the centralized method, so the
topology would not show; see ``docs/design.md``).

Protocol: each (method, topology)'s step size from a fixed log grid on a separate tuning seed,
then 3 seeds; both stages are resumable sweeps (:func:`decent.run.run_sweep`) into the
results store, from which the table, the figure and the HTML report are made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from decent.config import validate
from decent.results import load
from decent.run import run_sweep
from decent.studies import _kit as kit

STUDY = "compare"
TUNING_STUDY = "compare-tuning"

METHODS = ("dat_sgd", "anytime_sgd", "dsgd", "gradient_tracking", "minibatch_sgd")
"""The default methods, in the order of the table (each next to its centralized reference)."""


class CompareSpec(kit.Spec):
    """What the comparison runs; the defaults finish in a few minutes on 2 cores."""

    num_nodes: int = Field(default=64, ge=2)
    topologies: tuple[str, ...] = Field(default=("ring", "torus"), min_length=1)
    methods: tuple[kit.MethodName, ...] = Field(default=METHODS, min_length=1)
    rounds: int = Field(default=2000, ge=1)
    eval_every: int = Field(default=50, ge=1)
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1)
    tune_seed: int = 1000
    dim: int = Field(default=20, ge=1)
    heterogeneity: float = Field(default=2.0, ge=0.0)
    batch_size: int = Field(default=1, ge=1)
    l2: float = Field(default=0.0, ge=0.0)
    eval_samples: int = Field(default=2**13, ge=1)
    lr_grid: tuple[float, ...] = Field(default=(0.01, 0.03, 0.1, 0.3, 1.0), min_length=1)
    gamma_grid: tuple[float, ...] = Field(default=(0.01, 0.03, 0.1, 0.3, 1.0), min_length=1)
    """The anytime methods step w by lr * alpha_t with alpha_t = t, so their grid is in
    gamma = lr * T (the largest step), which transfers across horizons."""
    workers: int | None = Field(default=None, ge=1)

    def grid(self, method: str) -> list[float]:
        if kit.horizon_scaled(method):
            return [g / self.rounds for g in self.gamma_grid]
        return list(self.lr_grid)

    def topology(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "num_nodes": self.num_nodes}

    def base(self, study: str, seed: int) -> dict[str, Any]:
        """The config shared by every run (the grid varies topology and algorithm)."""
        return {
            "study": study,
            "seed": seed,
            "rounds": self.rounds,
            "eval_every": self.eval_every,
            "topology": self.topology(self.topologies[0]),
            "algorithm": {"kind": self.methods[0], "lr": self.grid(self.methods[0])[0]},
            "task": {
                "kind": "logistic_stream",
                "dim": self.dim,
                "heterogeneity": self.heterogeneity,
                "batch_size": self.batch_size,
                "l2": self.l2,
                "eval_samples": self.eval_samples,
                "seed": 0,
            },
        }


def tune(spec: CompareSpec, out: Path, *, progress: bool = True) -> dict[tuple[str, str], float]:
    """Pick each (method, topology)'s step size by final f(x_bar) - f* on ``tune_seed``
    (the grid is fixed: no extension, no refinement)."""

    def configs(cell: tuple[str, str], lr: float) -> list[Any]:
        raw = spec.base(TUNING_STUDY, spec.tune_seed)
        raw["per_node_eval"] = False
        raw["eval_every"] = max(1, spec.rounds // 4)
        raw["topology"] = spec.topology(cell[1])
        raw["algorithm"] = {"kind": cell[0], "lr": lr}
        return [validate(raw, "compare tuning")]

    choices = kit.tune_runs(
        out,
        [(m, t) for t in spec.topologies for m in spec.methods],
        lambda c: spec.grid(c[0]),
        configs,
        {"last": "eval/subopt@mean"},
        kit.GridPolicy(max_extensions=0),
        workers=spec.workers,
        progress=progress,
        desc="compare tuning",
    )
    return kit.chosen(choices, lambda c: f"{c[0]} on {c[1]}")[0]


def run(
    out_dir: str | Path = "results",
    spec: CompareSpec | None = None,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Tune, run every method with every seed, write figure and report; return the table.

    Writes ``<out_dir>/decent.sqlite`` (every run and record),
    ``<out_dir>/compare/convergence.png``, ``summary.csv``, ``spec.json`` and the HTML
    report ``<out_dir>/compare/report.html``.
    """
    from decent.report import write_report

    spec = spec or CompareSpec()
    out = Path(out_dir)
    best = tune(spec, out, progress=progress)
    wanted: set[tuple[str, str, float]] = set()
    for topology in spec.topologies:
        raw = spec.base(STUDY, spec.seeds[0])
        raw["topology"] = spec.topology(topology)
        raw["sweep"] = {
            "seeds": list(spec.seeds),
            "grid": {"algorithm": [{"kind": m, "lr": best[(m, topology)]} for m in spec.methods]},
        }
        wanted |= {(m, topology, best[(m, topology)]) for m in spec.methods}
        run_sweep(
            validate(raw, f"compare {topology}"), out, workers=spec.workers, progress=progress
        ).raise_if_not_ok(out)
    df = load(out, study=STUDY)
    keys = list(zip(df["algorithm.kind"], df["topology.kind"], df["algorithm.lr"], strict=True))
    df = df[[k in wanted for k in keys]]
    df = df[df["seed"].isin(spec.seeds) & (df["topology.num_nodes"] == spec.num_nodes)]
    df = df[df["rounds"] == spec.rounds]
    table = summarize(df, spec.methods)
    folder = out / "compare"
    kit.write_tables(folder, spec, {"summary": table})
    plot(df, folder / "convergence.png")
    write_report(out, STUDY, folder)
    return table


def summarize(df: pd.DataFrame, methods: tuple[str, ...] = METHODS) -> pd.DataFrame:
    """Final metrics per (topology, method): mean and std over seeds; methods in the order
    of ``methods``."""
    metrics = {
        "eval/subopt@mean": "subopt",
        "eval/subopt@node_max": "subopt_worst_node",
        "consensus/dist2": "consensus_dist2",
        "comm/bytes_per_node_mean": "bytes_per_node",
    }
    last_round = df.groupby("run_id")["round"].transform("max")
    final = df[(df["round"] == last_round) & df["metric"].isin(list(metrics))]
    wide = final.pivot_table(
        index=["run_id", "topology.kind", "algorithm.kind", "algorithm.lr", "seed"],
        columns="metric",
        values="value",
    ).reset_index()
    rows = []
    for (topology, method, lr), g in wide.groupby(
        ["topology.kind", "algorithm.kind", "algorithm.lr"]
    ):
        row: dict[str, Any] = {"topology": topology, "method": method, "lr": lr, "seeds": len(g)}
        for metric, name in metrics.items():
            if metric in g:
                row[name] = float(g[metric].mean())
                row[f"{name}_std"] = float(g[metric].std(ddof=1)) if len(g) > 1 else 0.0
        rows.append(row)
    order = {m: i for i, m in enumerate(methods)}
    table = pd.DataFrame(rows)
    table["_order"] = table["method"].map(lambda m: order.get(m, len(order)))
    return table.sort_values(["topology", "_order"]).drop(columns="_order").reset_index(drop=True)


def plot(df: pd.DataFrame, path: Path) -> Path:
    """Suboptimality and consensus distance against rounds, one column per topology: the
    mean over seeds with a band of one standard deviation
    (:func:`decent.report._plots.band_plot`)."""
    from decent.report._plots import band_plot

    methods = [m for m in METHODS if m in set(df["algorithm.kind"])]
    methods += sorted(set(df["algorithm.kind"]) - set(methods))
    styles = kit.method_styles(methods)
    panels = [
        ("eval/subopt@mean", r"$f(\bar x) - f^*$"),
        ("consensus/dist2", r"consensus distance $\frac{1}{n}\sum_i\|x_i-\bar x\|^2$"),
    ]
    curves = []
    for metric, ylabel in panels:
        rows = df[(df["metric"] == metric) & (df["round"] > 0)]
        if metric == "consensus/dist2":  # the centralized references have no disagreement
            rows = rows[~rows["algorithm.kind"].map(kit.centralized)]
        curves.append((metric, ylabel, rows))
    return band_plot(
        curves,
        path,
        column="topology.kind",
        hue="algorithm.kind",
        hues=methods,
        labels={m: kit.label(m, role="centralized") for m in methods},
        styles=styles,
        titles={
            t: f"{t}, n = {int(g['topology.num_nodes'].iloc[0])}"
            for t, g in df.groupby("topology.kind")
        },
        suptitle="Streaming logistic regression, heterogeneous nodes: mean over seeds ± 1 std",
    )
