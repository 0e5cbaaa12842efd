"""The comparison study: what does decentralization cost each method at one network size?

DAT-SGD and D-SGD and gradient tracking on a ring and a 2-D torus of 64 nodes, each next to
its centralized counterpart (Anytime SGD for DAT-SGD, minibatch SGD for D-SGD and gradient
tracking; both use an exact all-reduce), on streaming logistic regression whose nodes see
shifted feature distributions. Logistic, not least squares: with a shared feature
covariance, the network average of every linear method on least squares evolves exactly
like the centralized method, so the topology would not show (see ``docs/design.md``).

Protocol: each (method, topology) gets its step size from a log grid on a separate tuning
seed, then runs with 3 seeds. Both stages are sweeps (:func:`decent.run.run_sweep`):
parallel workers, every finished run committed to the results store at once, a rerun skips
finished runs. The table, the figure and the HTML report are made from the store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from decent.config import validate
from decent.results import Store, load
from decent.run import run_sweep

STUDY = "compare"
TUNING_STUDY = "compare-tuning"

METHOD_LABELS = {
    "dat_sgd": "DAT-SGD",
    "anytime_sgd": "Anytime SGD (centralized)",
    "dsgd": "D-SGD",
    "gradient_tracking": "Gradient tracking",
    "minibatch_sgd": "Minibatch SGD (centralized)",
}
ANYTIME = ("dat_sgd", "anytime_sgd")


@dataclass(frozen=True)
class CompareSpec:
    """What the comparison runs; the defaults finish in a few minutes on 2 cores."""

    num_nodes: int = 64
    topologies: tuple[str, ...] = ("ring", "torus")
    methods: tuple[str, ...] = tuple(METHOD_LABELS)
    rounds: int = 2000
    eval_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seed: int = 1000
    dim: int = 20
    heterogeneity: float = 2.0
    batch_size: int = 1
    l2: float = 0.0
    eval_samples: int = 2**13
    # Step-size grids. The anytime methods step w by lr * alpha_t with alpha_t = t, so
    # their grid is in gamma = lr * T (the largest step), which transfers across horizons.
    lr_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    gamma_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    workers: int | None = None

    def grid(self, method: str) -> list[float]:
        if method in ANYTIME:
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


def _final(store_path: Path, study: str, metric: str) -> pd.DataFrame:
    df = load(store_path, study=study)
    df = df[df["metric"] == metric]
    return df.sort_values("round").groupby("run_id").tail(1)


def tune(spec: CompareSpec, out: Path, *, progress: bool = True) -> dict[tuple[str, str], float]:
    """Pick each (method, topology)'s step size by final f(x_bar) - f* on ``tune_seed``."""
    raw = spec.base(TUNING_STUDY, spec.tune_seed)
    raw["per_node_eval"] = False
    raw["eval_every"] = max(1, spec.rounds // 4)
    raw["sweep"] = {
        "grid": {
            "topology": [spec.topology(k) for k in spec.topologies],
            "algorithm": [{"kind": m, "lr": lr} for m in spec.methods for lr in spec.grid(m)],
        }
    }
    run_sweep(validate(raw, "compare tuning"), out, workers=spec.workers, progress=progress)
    last = _final(out, TUNING_STUDY, "eval/subopt@mean")
    with Store(out) as store:
        runs = store.runs(TUNING_STUDY)[["run_id", "status"]]
    last = last.merge(runs, on="run_id", suffixes=("", "_run"))
    best: dict[tuple[str, str], float] = {}
    for method in spec.methods:
        for topology in spec.topologies:
            rows = last[(last["algorithm.kind"] == method) & (last["topology.kind"] == topology)]
            rows = rows[rows["algorithm.lr"].isin(spec.grid(method))]
            ok = rows[(rows["status_run"] == "finished") & rows["value"].map(math.isfinite)]
            if ok.empty:
                raise RuntimeError(f"every step size diverged for {method} on {topology}")
            best[(method, topology)] = float(ok.loc[ok["value"].idxmin(), "algorithm.lr"])
    return best


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
        )
    df = load(out, study=STUDY)
    keys = list(zip(df["algorithm.kind"], df["topology.kind"], df["algorithm.lr"], strict=True))
    df = df[[k in wanted for k in keys]]
    df = df[df["seed"].isin(spec.seeds) & (df["topology.num_nodes"] == spec.num_nodes)]
    df = df[df["rounds"] == spec.rounds]
    table = summarize(df)
    folder = out / "compare"
    folder.mkdir(parents=True, exist_ok=True)
    plot(df, folder / "convergence.png")
    table.to_csv(folder / "summary.csv", index=False)
    (folder / "spec.json").write_text(pd.Series(asdict(spec)).to_json(indent=2))
    write_report(out, STUDY, folder)
    return table


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Final metrics per (topology, method): mean and std over seeds."""
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
    order = {m: i for i, m in enumerate(METHOD_LABELS)}
    table = pd.DataFrame(rows)
    table["_order"] = table["method"].map(order)
    return table.sort_values(["topology", "_order"]).drop(columns="_order").reset_index(drop=True)


def plot(df: pd.DataFrame, path: Path) -> Path:
    """Suboptimality and consensus distance against rounds, one column per topology."""
    from matplotlib.figure import Figure

    topologies = sorted(df["topology.kind"].unique())
    fig = Figure(figsize=(5.5 * len(topologies), 7.5))
    axes = fig.subplots(2, len(topologies), squeeze=False, sharex=True)
    styles = {
        "dat_sgd": "-",
        "anytime_sgd": ":",
        "dsgd": "-",
        "gradient_tracking": "-",
        "minibatch_sgd": ":",
    }
    colors = {
        "dat_sgd": "C3",
        "anytime_sgd": "C3",
        "dsgd": "C0",
        "gradient_tracking": "C2",
        "minibatch_sgd": "C0",
    }
    for col, topology in enumerate(topologies):
        sub = df[df["topology.kind"] == topology]
        panels = [
            ("eval/subopt@mean", r"$f(\bar x) - f^*$"),
            ("consensus/dist2", r"consensus distance $\frac{1}{n}\sum_i\|x_i-\bar x\|^2$"),
        ]
        for row, (metric, ylabel) in enumerate(panels):
            ax = axes[row][col]
            for method, label in METHOD_LABELS.items():
                m = sub[(sub["algorithm.kind"] == method) & (sub["metric"] == metric)]
                m = m[m["round"] > 0]
                if m.empty or (row == 1 and method in ("anytime_sgd", "minibatch_sgd")):
                    continue
                stats = m.groupby("round")["value"].agg(["mean", "std"]).reset_index()
                band = stats["std"].fillna(0.0)
                ax.plot(
                    stats["round"], stats["mean"], styles[method], color=colors[method], label=label
                )
                ax.fill_between(
                    stats["round"],
                    (stats["mean"] - band).clip(lower=1e-300),
                    stats["mean"] + band,
                    color=colors[method],
                    alpha=0.15,
                )
            ax.set_yscale("log")
            ax.set_xscale("log")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                n = int(sub["topology.num_nodes"].iloc[0])
                ax.set_title(f"{topology}, n = {n}")
            else:
                ax.set_xlabel("round")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Streaming logistic regression, heterogeneous nodes: mean over seeds ± 1 std")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
