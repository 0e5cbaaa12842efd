"""The flagship study: how close does each method get to centralized training on a sparse graph?

DAT-SGD, D-SGD, gradient tracking and minibatch SGD (the centralized reference, exact
all-reduce) on a ring and a 2-D torus of 64 nodes, streaming least squares with
heterogeneous nodes. Each method's step size is tuned on a log grid with a separate seed,
then every method runs with 3 seeds. Every run is recorded in the results store as it goes
(a rerun skips finished runs); the table and the figure are made from the store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from decent.algorithms import ALGORITHMS
from decent.comm import SimCommunicator
from decent.engine import ProgressBar, StoreRecorder, train
from decent.results import Store, load, run_id_for
from decent.tasks import LeastSquares
from decent.topology import make as make_topology

STUDY = "flagship"
TUNING_STUDY = "flagship-tuning"

METHOD_LABELS = {
    "dat_sgd": "DAT-SGD",
    "dsgd": "D-SGD",
    "gradient_tracking": "Gradient tracking",
    "minibatch_sgd": "Minibatch SGD (centralized)",
}


@dataclass(frozen=True)
class FlagshipSpec:
    """What the flagship runs; the defaults finish in a few minutes on 2 cores."""

    num_nodes: int = 64
    topologies: tuple[str, ...] = ("ring", "torus")
    methods: tuple[str, ...] = ("dat_sgd", "dsgd", "gradient_tracking", "minibatch_sgd")
    rounds: int = 2000
    eval_every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2)
    tune_seed: int = 1000
    dim: int = 20
    noise: float = 1.0
    heterogeneity: float = 2.0
    # Step-size grids. DAT-SGD's step on w is lr * alpha_t with alpha_t = t, so its grid is
    # in gamma = lr * T (the largest step), the quantity that transfers across horizons.
    lr_grid: tuple[float, ...] = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002)
    gamma_grid: tuple[float, ...] = (2.0, 1.0, 0.5, 0.2, 0.1, 0.05)
    extra: dict[str, Any] = field(default_factory=dict)

    def grid(self, method: str) -> list[float]:
        if method in ("dat_sgd", "anytime_sgd"):
            return [g / self.rounds for g in self.gamma_grid]
        return list(self.lr_grid)


def _config(spec: FlagshipSpec, method: str, topology: str, lr: float, seed: int) -> dict[str, Any]:
    return {
        "algorithm": {"kind": method, "lr": lr},
        "topology": {"kind": topology, "num_nodes": spec.num_nodes},
        "task": {
            "kind": "least_squares",
            "dim": spec.dim,
            "noise": spec.noise,
            "heterogeneity": spec.heterogeneity,
            "seed": 0,
        },
        "backend": "sim",
        "rounds": spec.rounds,
        "eval_every": spec.eval_every,
        "seed": seed,
    }


def run_config(config: dict[str, Any], store: Store, study: str, *, progress: bool = True) -> None:
    """Run one flagship configuration into ``store`` unless it is already finished."""
    if store.is_finished(run_id_for(study, config)):
        return
    task_cfg = {k: v for k, v in config["task"].items() if k != "kind"}
    n = config["topology"]["num_nodes"]
    task = LeastSquares(num_nodes=n, **task_cfg)
    topo = make_topology(config["topology"]["kind"], n)
    algo_cfg = dict(config["algorithm"])
    algorithm = ALGORITHMS[algo_cfg.pop("kind")](**algo_cfg)
    label = f"{algorithm.name} lr={config['algorithm']['lr']:.3g} {topo.name} seed={config['seed']}"
    with store.start_run(study, config, name=label) as writer:
        callbacks: list[Any] = [StoreRecorder(writer)]
        if progress:
            callbacks.append(ProgressBar(desc=label, leave=False))
        train(
            algorithm,
            task,
            SimCommunicator(topo),
            rounds=config["rounds"],
            seed=config["seed"],
            eval_every=config["eval_every"],
            callbacks=callbacks,
            per_node_eval=True,
        )


def _final_subopt(df: pd.DataFrame) -> pd.DataFrame:
    last = df[df["metric"] == "eval/subopt@mean"].sort_values("round").groupby("run_id").tail(1)
    return last


def tune(
    spec: FlagshipSpec, store: Store, *, progress: bool = True
) -> dict[tuple[str, str], float]:
    """Pick each (method, topology)'s step size by final suboptimality on ``tune_seed``."""
    for topology in spec.topologies:
        for method in spec.methods:
            for lr in spec.grid(method):
                run_config(
                    _config(spec, method, topology, lr, spec.tune_seed),
                    store,
                    TUNING_STUDY,
                    progress=progress,
                )
    df = load(store.path, study=TUNING_STUDY)
    runs = store.runs(TUNING_STUDY)
    last = _final_subopt(df).merge(runs[["run_id", "status"]], on="run_id", suffixes=("", "_run"))
    best: dict[tuple[str, str], float] = {}
    for (method, topology), group in last.groupby(["algorithm.kind", "topology.kind"]):
        ok = group[(group["status_run"] == "finished") & group["value"].map(math.isfinite)]
        if ok.empty:
            raise RuntimeError(f"every step size diverged for {method} on {topology}")
        best[(str(method), str(topology))] = float(ok.loc[ok["value"].idxmin(), "algorithm.lr"])
    return best


def run(
    out_dir: str | Path = "results",
    spec: FlagshipSpec | None = None,
    *,
    progress: bool = True,
) -> pd.DataFrame:
    """Tune, run every method with every seed, and return the summary table.

    Writes ``<out_dir>/decent.sqlite`` (all runs and records) and
    ``<out_dir>/flagship/convergence.png``.
    """
    spec = spec or FlagshipSpec()
    out = Path(out_dir)
    with Store(out) as store:
        best = tune(spec, store, progress=progress)
        configs = [
            _config(spec, method, topology, best[(method, topology)], seed)
            for topology in spec.topologies
            for method in spec.methods
            for seed in spec.seeds
        ]
        for config in configs:
            run_config(config, store, STUDY, progress=progress)
        wanted = {run_id_for(STUDY, c) for c in configs}
        df = load(store.path, study=STUDY)
    df = df[df["run_id"].isin(wanted)]
    table = summarize(df)
    plot(df, out / "flagship" / "convergence.png")
    (out / "flagship").mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "flagship" / "summary.csv", index=False)
    (out / "flagship" / "spec.json").write_text(pd.Series(asdict(spec)).to_json(indent=2))
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
    return table.sort_values(
        ["topology", "method"], key=lambda s: s.map(order) if s.name == "method" else s
    ).reset_index(drop=True)


def plot(df: pd.DataFrame, path: Path) -> Path:
    """Suboptimality and consensus distance against rounds, one panel per topology."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    topologies = sorted(df["topology.kind"].unique())
    fig, axes = plt.subplots(
        2, len(topologies), figsize=(5.5 * len(topologies), 7.5), squeeze=False, sharex=True
    )
    for col, topology in enumerate(topologies):
        sub = df[df["topology.kind"] == topology]
        for row, (metric, ylabel) in enumerate(
            [("eval/subopt@mean", r"$f(\bar x) - f^*$"), ("consensus/dist2", "consensus distance")]
        ):
            ax = axes[row][col]
            for method, label in METHOD_LABELS.items():
                m = sub[(sub["algorithm.kind"] == method) & (sub["metric"] == metric)]
                if m.empty:
                    continue
                stats = m.groupby("round")["value"].agg(["mean", "std", "count"]).reset_index()
                stats = stats[stats["round"] > 0]
                line = ax.plot(stats["round"], stats["mean"], label=label)[0]
                band = stats["std"].fillna(0.0)
                ax.fill_between(
                    stats["round"],
                    (stats["mean"] - band).clip(lower=1e-12),
                    stats["mean"] + band,
                    color=line.get_color(),
                    alpha=0.2,
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
    fig.suptitle("Streaming least squares: mean over seeds, band = ±1 std")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
