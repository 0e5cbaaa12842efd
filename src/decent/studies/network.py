"""The network study: what decentralization buys in *time* when machines straggle, links are
slow and lossy, and nodes crash (issue 7; ``docs/results/async.md``).

Streaming least squares with node-specific Hessians and optima (excess risk in closed form):
all-reduce minibatch SGD against synchronous D-SGD and DAT-SGD, their bounded-staleness
variants and asynchronous AD-PSGD, on a ring, a 2-D torus and an exponential graph:

1. **Time to a target under stragglers.** A gradient takes one time unit, with probability
   ``p`` per round ``slowdown`` times that; a message takes ``latency``. All-reduce waits for
   the slowest node and pays ``2 (M - 1)`` latencies a round, gossip waits for the
   neighbours. The target at each ``M`` is ``target_factor`` times the best final error of a
   synchronous method; a run's time to target is its ``time/sim`` at the first evaluation
   at or below it.
2. **Error under message drops, crashes and churn**: a lost message's weight stays with its
   receiver (``W_t`` row- but not column-stochastic: the average drifts); crashed nodes take
   their data with them.
3. **The crossover** in latency where gossip overtakes all-reduce: the fault-free clock does
   not depend on the values, so the time to target at another latency is the clock of
   :func:`decent.comm.network.simulate_clock` at the rounds each run needed (tested equal to
   the clock inside a run).

Step sizes are tuned per (cell, topology, M) on separate seeds (:func:`tune`); every stage is
a resumable sweep into the results store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import Field

from decent.config import validate
from decent.results import load
from decent.run import run_points
from decent.studies import _kit as kit
from decent.studies import figures

METRIC = "eval/subopt@mean"
Method = Literal["minibatch_sgd", "dsgd", "dat_sgd", "ad_psgd"]
METHODS: tuple[Method, ...] = get_args(Method)
"""The methods the study can run (its clock replay knows their communication patterns)."""
Topology = Literal["ring", "torus", "exponential"]
TOPOLOGY_LABELS = {"ring": "ring", "torus": "2-D torus", "exponential": "exponential"}


def label(method: str) -> str:
    """The display name of a study cell, from the algorithm classes: ``D-SGD (gossip)``;
    ``dsgd@stale4`` is D-SGD with staleness <= 4."""
    base, _, variant = method.partition("@stale")
    if not variant:
        return kit.label(base, role="transport")
    return f"{kit.label(base)} (async, staleness <= {variant}, experimental)"


STUDY = "network"
TUNING_STUDY = "network-tuning"
GOSSIP = ("dsgd", "dat_sgd")
FAULTED = ("dsgd", "dat_sgd", "ad_psgd")
"""The methods also run under drops and crashes."""
ASYNC = tuple(m for m in METHODS if kit.needs_clock(m))
"""Methods on their own clocks: a round is half a mean step, so they run twice the rounds
(the same gradients per node), are tuned on the straggler network (their iterates depend
on the clock), and are left out of the latency sweep (their clock is not a replay of
:func:`~decent.comm.network.simulate_clock`)."""

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
"""A probability or a share of the nodes, in [0, 1)."""


class NetworkSpec(kit.Spec):
    """What the network study runs; the defaults take about 13 minutes on 2 cores."""

    machines: tuple[Annotated[int, Field(strict=True, ge=4)], ...] = Field(
        default=(64, 1024), min_length=1
    )
    topologies: tuple[Topology, ...] = Field(default=("ring", "torus", "exponential"), min_length=1)
    methods: tuple[Method, ...] = Field(default=METHODS, min_length=1)
    rounds: int = Field(default=600, ge=1)
    eval_every: int = Field(default=10, ge=1)
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1)
    tune_seeds: tuple[int, ...] = Field(default=(1000, 1001), min_length=1)
    task: dict[str, Any] = Field(
        default_factory=lambda: {
            "kind": "least_squares",
            "dim": 20,
            "heterogeneity": 1.0,
            "hessian_heterogeneity": 0.5,
            "condition": 10.0,
            "noise": 0.5,
        }
    )
    lr_grid: tuple[float, ...] = Field(default=(0.0125, 0.025, 0.05, 0.1, 0.2), min_length=1)
    gamma_grid: tuple[float, ...] = Field(
        default=(0.0125, 0.025, 0.05, 0.1, 0.2, 0.4), min_length=1
    )
    """DAT-SGD's grid in gamma = lr * T (its step on w grows like lr * t)."""
    straggler_p: float = Field(default=0.05, ge=0.0, le=1.0)
    slowdown: float = 10.0
    latency: float = 0.01
    """Seconds per message, against one second per gradient."""
    target_factor: float = Field(default=2.0, ge=1.0)
    drops: tuple[Fraction, ...] = Field(default=(0.0, 0.1, 0.2, 0.3), min_length=1)
    crash_fractions: tuple[Fraction, ...] = (0.1, 0.25)
    churn_fractions: tuple[Fraction, ...] = (0.25,)
    """Node churn: this fraction of the nodes (every ``1 / f``-th node) leaves during the
    second quarter of the run and rejoins, pulling its state from a neighbour, during the
    fourth."""
    max_delays: tuple[Annotated[int, Field(strict=True, ge=1)], ...] = (4,)
    """Bounded staleness ``D`` of the asynchronous gossip variants (``[network.delays]``,
    kind ``clock``); each adds an experimental ``<method>@stale<D>`` cell."""
    latencies: tuple[float, ...] = Field(
        default=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), min_length=1
    )
    workers: int | None = Field(default=None, ge=1)

    # -- configs ------------------------------------------------------------------------
    def rounds_of(self, cell: str) -> int:
        """Engine rounds of a study cell: twice ``rounds`` for the asynchronous ones
        (AD-PSGD: the same gradients per node; the bounded-staleness variants: about the
        same simulated time, as a stale round takes about half a synchronous one)."""
        asynchronous = cell.partition("@")[0] in ASYNC or "@stale" in cell
        return 2 * self.rounds if asynchronous else self.rounds

    def cells(self) -> list[str]:
        """The study's cells: the methods, and ``<method>@stale<D>`` per gossip method and
        bound ``D``."""
        stale = [f"{g}@stale{d}" for d in self.max_delays for g in GOSSIP if g in self.methods]
        return [*self.methods, *stale]

    def grid(self, cell: str) -> list[float]:
        if kit.horizon_scaled(cell.partition("@")[0]):
            return [g / self.rounds_of(cell) for g in self.gamma_grid]
        return list(self.lr_grid)

    def topologies_of(self, method: str) -> tuple[str, ...]:
        """All-reduce ignores the graph: minibatch SGD runs on the first topology only."""
        return self.topologies[:1] if method == "minibatch_sgd" else self.topologies

    def base(
        self, study: str, seed: int, cell: str, kind: str, m: int, lr: float
    ) -> dict[str, Any]:
        """The config of one run of ``cell`` on the graph ``kind`` of ``m`` nodes at step
        ``lr``, without a network (rounds and evaluations scaled by :meth:`rounds_of`)."""
        scale = self.rounds_of(cell) // self.rounds
        return {
            "study": study,
            "seed": seed,
            "rounds": self.rounds * scale,
            "eval_every": self.eval_every * scale,
            "per_node_eval": "final",
            "topology": {"kind": kind, "num_nodes": m},
            "algorithm": {"kind": cell.partition("@")[0], "lr": lr},
            "task": dict(self.task),
        }

    def network(
        self, latency: float | None = None, delay: int = 0, **faults: Any
    ) -> dict[str, Any]:
        return {
            "latency": self.latency if latency is None else latency,
            "compute": {"kind": "straggler", "p": self.straggler_p, "slowdown": self.slowdown},
            "faults": faults,
            "delays": {"max_delay": delay, "kind": "clock"},
        }

    def crashes(self, m: int, fraction: float, scale: int = 1) -> dict[str, int]:
        """Which nodes crash and when: ``round(fraction * M)`` nodes, at rounds spread over
        the middle half of the run, fixed by ``(M, fraction)`` (``scale``: rounds per
        synchronous round, 2 for the asynchronous methods)."""
        rng = np.random.default_rng([m, round(fraction * 1000)])
        count = round(fraction * m)
        nodes = rng.choice(m, size=count, replace=False)
        rounds = rng.integers(self.rounds // 4, 3 * self.rounds // 4, size=count, endpoint=True)
        return {str(int(i)): int(max(1, r * scale)) for i, r in zip(nodes, rounds, strict=True)}

    def churn(self, m: int, fraction: float, scale: int = 1) -> dict[str, dict[str, int]]:
        """``{"leaves": ..., "joins": ...}``: every ``round(1 / fraction)``-th node leaves
        at a round in the second quarter of the run and rejoins at one in the fourth. Nodes
        that far apart never take all of a ring's, torus's or exponential graph's
        neighbours of one node away, so every joiner has someone to pull from."""
        step = max(2, round(1 / fraction))
        nodes = range(0, m, step)
        rng = np.random.default_rng([m, round(fraction * 1000), 1])
        q = self.rounds // 4
        leave = rng.integers(q, 2 * q, size=len(nodes), endpoint=True)
        join = rng.integers(3 * q, 4 * q - 1, size=len(nodes), endpoint=True)
        return {
            "leaves": {str(i): int(max(1, r * scale)) for i, r in zip(nodes, leave, strict=True)},
            "joins": {str(i): int(r * scale) for i, r in zip(nodes, join, strict=True)},
        }


# -------------------------------------------------------------------------------- stages


def cell_of(df: pd.DataFrame) -> pd.Series:
    """Each row's study cell: ``algorithm.kind``, or ``<kind>@stale<D>`` for a run with
    ``network.delays.max_delay = D > 0``."""
    kind = df["algorithm.kind"].astype(str)
    if "network.delays.max_delay" not in df:
        return kind
    delay = df["network.delays.max_delay"].fillna(0).astype(int)
    return kind.where(delay == 0, kind + "@stale" + delay.astype(str))


POLICY = kit.GridPolicy(
    factor=2.0, max_extensions=4, lower_if_diverged=False, once_per_round=True,
    extend_after_last=True,
)  # fmt: skip
"""A (cell, M)'s grid, shared by its topologies, extends by a factor 2 at one edge per
round (the first topology at an edge decides), at most 4 times."""


def tune(
    spec: NetworkSpec, out: Path, *, progress: bool = True
) -> tuple[dict[tuple[str, str, int], float], list[str]]:
    """Each (cell, topology, M)'s step size by the mean final error over the tuning seeds (a
    step counts only if it finished on all), and notes on the cells still at a grid edge
    (:data:`POLICY`). Synchronous methods are tuned without a network (a fault-free clock
    does not change their iterates); AD-PSGD and the stale variants on the straggler
    network, with their delays, for their own number of rounds."""
    cells = [
        (cell, kind, m)
        for cell in spec.cells()
        for m in spec.machines
        for kind in spec.topologies_of(cell)
    ]

    def configs(key: tuple[str, str, int], lr: float) -> list[Any]:
        cell, kind, m = key
        method, _, stale = cell.partition("@stale")
        out = []
        for seed in spec.tune_seeds:
            raw = spec.base(TUNING_STUDY, seed, cell, kind, m, lr)
            raw["eval_every"] = raw["rounds"]
            raw["per_node_eval"] = "none"
            if stale:  # its iterates follow the clock: tune on it
                raw["network"] = spec.network(delay=int(stale))
            elif method in ASYNC:
                raw["network"] = spec.network()
            out.append(validate(raw, "network tuning"))
        return out

    choices = kit.tune_runs(
        out,
        cells,
        lambda key: spec.grid(key[0]),
        configs,
        {"last": METRIC},
        POLICY,
        group=lambda key: (key[0], key[2]),
        workers=spec.workers,
        progress=progress,
        desc="network tuning",
    )
    return kit.chosen(choices, lambda key: f"{label(key[0])} on {key[1]}({key[2]})")


def evaluate(
    spec: NetworkSpec, out: Path, best: dict[tuple[str, str, int], float], *, progress: bool = True
) -> None:
    """The straggler runs of every cell and the fault runs of the methods in
    :data:`FAULTED`, as one list of configs (:func:`decent.run.run_points`: the points are
    not a cross product)."""
    configs = []
    for m in spec.machines:
        for cell in spec.cells():
            method, _, stale = cell.partition("@stale")
            for kind in spec.topologies_of(method):
                scale = spec.rounds_of(cell) // spec.rounds
                if stale:
                    networks = [spec.network(delay=int(stale))]
                else:
                    networks = [spec.network()]
                    if method in FAULTED:
                        networks += [spec.network(drop=p) for p in spec.drops if p > 0]
                        networks += [
                            spec.network(crashes=spec.crashes(m, f, scale))
                            for f in spec.crash_fractions
                        ]
                        for f in spec.churn_fractions:
                            churn = spec.churn(m, f, scale)
                            networks.append(
                                spec.network(leaves=churn["leaves"], joins=churn["joins"])
                            )
                for network in networks:
                    for seed in spec.seeds:
                        raw = spec.base(STUDY, seed, cell, kind, m, best[(cell, kind, m)])
                        raw["network"] = network
                        configs.append(validate(raw, "network study"))
    # the largest networks first, so that two workers finish together
    run_points(
        configs, out, workers=spec.workers, progress=progress, desc="network", longest_first=True
    ).raise_if_not_ok(out)


# -------------------------------------------------------------------------------- results


@dataclass
class NetworkResult:
    """What :func:`run` measured (every table is also written as CSV)."""

    time_to_target: pd.DataFrame
    faults: pd.DataFrame
    crossover: pd.DataFrame
    curves: pd.DataFrame
    targets: dict[int, float]
    wall_s: float
    step_sizes: dict[tuple[str, str, int], float] = field(default_factory=dict)
    tuning_notes: list[str] = field(default_factory=list)


def _fault_label(row: pd.Series) -> str:
    drop = row.get("network.faults.drop")
    crashes = row.get("crashes", 0)
    if crashes:
        return f"crash {crashes} nodes"
    left = row.get("churn", 0)
    if left:
        return f"{left} nodes leave and rejoin"
    if isinstance(drop, float) and drop > 0:
        return f"drop {drop:.0%}"
    return "none"


def collect(spec: NetworkSpec, out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, curves)``: one row per evaluation run with its setting, and the long records."""
    df = load(out, study=STUDY)
    df = df.assign(**{"algorithm.kind": cell_of(df)})  # dsgd@stale4: its own cell
    df = df[
        (df["rounds"] == df["algorithm.kind"].map(spec.rounds_of)) & df["seed"].isin(spec.seeds)
    ]
    df = df[df["topology.num_nodes"].isin(spec.machines)]
    crash_cols = [c for c in df.columns if c.startswith("network.faults.crashes.")]
    runs = df.drop_duplicates("run_id").copy()
    runs["crashes"] = runs[crash_cols].notna().sum(axis=1) if crash_cols else 0
    leave_cols = [c for c in df.columns if c.startswith("network.faults.leaves.")]
    runs["churn"] = runs[leave_cols].notna().sum(axis=1) if leave_cols else 0
    if "network.faults.drop" not in runs:
        runs["network.faults.drop"] = 0.0
    runs["network.faults.drop"] = runs["network.faults.drop"].fillna(0.0).astype(float)
    runs["fault"] = runs.apply(_fault_label, axis=1)
    keep = ["run_id", "algorithm.kind", "topology.kind", "topology.num_nodes", "seed"]
    runs = runs[[*keep, "network.latency", "fault", "crashes", "network.faults.drop", "status"]]
    return runs, kit.curves(df, [METRIC, "time/sim", "grad_evals"], runs)


def time_to_target(
    spec: NetworkSpec, curves: pd.DataFrame
) -> tuple[pd.DataFrame, dict[int, float], pd.DataFrame]:
    """Per (M, method, topology): rounds and simulated time to the target, over seeds;
    also the targets per M and the per-run hits (``seed``, ``round``, ``time``)."""
    clean = curves[curves["fault"] == "none"]
    final = kit.final_rows(clean)
    # the target comes from the synchronous methods, which share one budget (T rounds):
    # the asynchronous cells run longer (in rounds or in gradients) and are measured
    # against it, not allowed to move it
    kinds = final["algorithm.kind"]
    final = final[~kinds.str.contains("@") & ~kinds.isin(ASYNC)]
    means = final.groupby(["topology.num_nodes", "algorithm.kind", "topology.kind"])[METRIC].mean()
    targets = {
        int(m): float(spec.target_factor * means.loc[m].min()) for m in spec.machines if m in means
    }
    rows, hits = [], []
    for (m, method, kind), g in clean.groupby(
        ["topology.num_nodes", "algorithm.kind", "topology.kind"]
    ):
        target = targets[int(m)]
        for _, one in g.groupby("run_id"):
            one = one.sort_values("round")
            below = one[(one["round"] > 0) & (one[METRIC] <= target)]
            if not below.empty:
                hits.append(
                    {
                        "M": int(m),
                        "method": method,
                        "topology": kind,
                        "seed": int(one["seed"].iloc[0]),
                        "round": int(below["round"].iloc[0]),
                        "steps": float(below["grad_evals"].iloc[0]) / float(m),
                        "time": float(below["time/sim"].iloc[0]),
                    }
                )
        mine = [h for h in hits if (h["M"], h["method"], h["topology"]) == (m, method, kind)]
        last = kit.final_rows(g)
        rows.append(
            {
                "M": int(m),
                "method": method,
                "topology": kind,
                "final_error": float(last[METRIC].mean()),
                "target": target,
                "reached": f"{len(mine)}/{g['run_id'].nunique()}",
                # steps: gradients per node (a round of the synchronous methods)
                "steps_to_target": float(np.median([h["steps"] for h in mine]))
                if mine
                else math.nan,
                "time_to_target": float(np.median([h["time"] for h in mine])) if mine else math.nan,
                "time_per_step": float((last["time/sim"] / (last["grad_evals"] / m)).mean()),
            }
        )
    columns = ["M", "method", "topology", "seed", "round", "steps", "time"]
    return pd.DataFrame(rows), targets, pd.DataFrame(hits, columns=columns)


def fault_table(spec: NetworkSpec, curves: pd.DataFrame) -> pd.DataFrame:
    """Final error of the gossip methods per fault setting, and its ratio to no faults."""
    final = kit.final_rows(curves)
    final = final[final["algorithm.kind"].isin(FAULTED)]
    keys = ["topology.num_nodes", "algorithm.kind", "topology.kind", "fault"]
    table = final.groupby(keys)[METRIC].agg(["mean", "std", "count"]).reset_index()
    clean = table[table["fault"] == "none"].set_index(keys[:3])["mean"]
    table["vs_no_faults"] = [
        row["mean"] / clean.get(tuple(row[k] for k in keys[:3]), math.nan)
        for _, row in table.iterrows()
    ]
    return table.rename(
        columns={"topology.num_nodes": "M", "algorithm.kind": "method", "topology.kind": "topology"}
    )


def crossover(spec: NetworkSpec, hits: pd.DataFrame) -> pd.DataFrame:
    """Time to target against latency: for every run that reached the target, the clock
    alone (same seed) at the rounds it needed; the median over those runs."""
    from decent.comm.network import ComputeModel, LinkModel, simulate_clock
    from decent.topology import make

    scenarios = {
        "stragglers": ComputeModel("straggler", p=spec.straggler_p, slowdown=spec.slowdown),
        "no stragglers": ComputeModel(),
    }
    dim = int(spec.task.get("dim", 20))
    rows = []
    synchronous = hits[~hits["method"].str.contains("@") & ~hits["method"].isin(ASYNC)]
    for (m, method, kind), g in synchronous.groupby(["M", "method", "topology"]):
        topology = make(kind, int(m))
        message = dim * 8 * (2 if method == "dat_sgd" else 1)
        pattern: Literal["gossip", "all_reduce"] = (
            "all_reduce" if method == "minibatch_sgd" else "gossip"
        )
        longest = int(g["round"].max())
        for scenario, compute in scenarios.items():
            for latency in spec.latencies:
                times = []
                for seed, rounds in zip(g["seed"], g["round"], strict=True):
                    clock = simulate_clock(
                        topology,
                        longest,
                        message,
                        pattern=pattern,
                        compute=compute,
                        link=LinkModel(latency=latency),
                        seed=int(seed),
                    )
                    times.append(clock[int(rounds) - 1])
                rows.append(
                    {
                        "compute": scenario,
                        "M": int(m),
                        "method": method,
                        "topology": kind,
                        "latency": latency,
                        "time_to_target": float(np.median(times)),
                    }
                )
    columns = ["compute", "M", "method", "topology", "latency", "time_to_target"]
    return pd.DataFrame(rows, columns=columns)


def run(
    spec: NetworkSpec | None = None, out: str | Path = "results", *, progress: bool = True
) -> NetworkResult:
    """Tune, evaluate, measure; write CSVs and figures to ``<out>/network/``."""
    spec = spec or NetworkSpec()
    out = Path(out)
    start = time.perf_counter()
    best, notes = tune(spec, out, progress=progress)
    evaluate(spec, out, best, progress=progress)
    _, curves = collect(spec, out)
    ttt, targets, hits = time_to_target(spec, curves)
    faults = fault_table(spec, curves)
    cross = crossover(spec, hits)
    result = NetworkResult(
        ttt, faults, cross, curves, targets, time.perf_counter() - start, best, notes
    )
    folder = out / STUDY
    tables = {"time_to_target": ttt, "faults": faults, "crossover": cross}
    kit.write_tables(folder, spec, tables, tables_markdown(spec, result))
    plot_all(spec, result, folder)
    return result


def crossover_latency(spec: NetworkSpec, cross: pd.DataFrame) -> pd.DataFrame:
    """Per (M, gossip method, topology): the smallest latency of the grid from which gossip
    reaches the target sooner than all-reduce, and the speed-up at the smallest and
    largest latency."""
    rows = []
    for (scenario, m, method, kind), g in cross[cross["method"].isin(GOSSIP)].groupby(
        ["compute", "M", "method", "topology"]
    ):
        ref = cross[
            (cross["compute"] == scenario)
            & (cross["M"] == m)
            & (cross["method"] == "minibatch_sgd")
        ]
        if ref.empty:
            continue
        joined = g.merge(ref[["latency", "time_to_target"]], on="latency", suffixes=("", "_ar"))
        joined = joined.sort_values("latency")
        speedup = joined["time_to_target_ar"] / joined["time_to_target"]
        wins = joined["latency"][speedup > 1.0]
        rows.append(
            {
                "compute": scenario,
                "M": int(m),
                "method": method,
                "topology": kind,
                "gossip faster from latency": float(wins.min()) if not wins.empty else math.nan,
                "speed-up at smallest latency": float(speedup.iloc[0]),
                "speed-up at largest latency": float(speedup.iloc[-1]),
            }
        )
    return pd.DataFrame(rows)


def _md(frame: pd.DataFrame, formats: dict[str, str]) -> list[str]:
    return kit.markdown_table(frame, formats).split("\n")


def _short(cell: str) -> str:
    """``D-SGD``, ``D-SGD stale<=4``: a cell's name in a list."""
    method, _, stale = cell.partition("@stale")
    return kit.label(method) + (f" stale<={stale}" if stale else "")


def tables_markdown(spec: NetworkSpec, result: NetworkResult) -> str:
    """Every table of the study as Markdown (``tables.md``; the docs quote it)."""
    ttt = result.time_to_target.copy()
    ar = ttt[ttt["method"] == "minibatch_sgd"].set_index("M")["time_to_target"]
    ttt["speed-up vs all-reduce"] = [
        ar.get(m, math.nan) / t if t and math.isfinite(t) else math.nan
        for m, t in zip(ttt["M"], ttt["time_to_target"], strict=True)
    ]
    ttt["method"] = ttt["method"].map(label)
    columns = "M topology method final_error target reached steps_to_target time_per_step"
    ttt = ttt[[*columns.split(), "time_to_target", "speed-up vs all-reduce"]]
    ttt = ttt.sort_values(["M", "topology", "method"])
    faults = result.faults.copy()
    faults["method"] = faults["method"].map(label)
    cross = crossover_latency(spec, result.crossover)
    if not cross.empty:
        cross["method"] = cross["method"].map(label)
    lines = [
        "# Network study: tables",
        "",
        f"Generated by `decent network` ({result.wall_s:.0f} s in the last invocation; a "
        f"resumed one skips finished runs). Task: {spec.task}; "
        f"T = {spec.rounds} rounds, seeds {list(spec.seeds)} (step sizes tuned on seeds "
        f"{list(spec.tune_seeds)}); stragglers: p = {spec.straggler_p}, {spec.slowdown:g}x slower; "
        f"latency {spec.latency:g} per message (time unit: one gradient).",
        "",
        "## Time to target under stragglers",
        "",
        f"Target at each M: {spec.target_factor:g} x the best final error of the synchronous "
        "methods there, after T rounds "
        "(" + ", ".join(f"M = {m}: {t:.3g}" for m, t in result.targets.items()) + "). "
        "Steps (gradients per node: a round of the synchronous methods, two rounds of "
        "AD-PSGD's) and time to target: median over the seeds that reached it; time per "
        "step: simulated time over gradients per node.",
        "",
        *_md(
            ttt,
            {
                "final_error": ".3g",
                "target": ".3g",
                "steps_to_target": ".0f",
                "time_per_step": ".2f",
                "time_to_target": ".0f",
                "speed-up vs all-reduce": ".2f",
            },
        ),
        "",
        "Step sizes (tuned without faults, AD-PSGD and the stale variants on the straggler "
        "network; DAT-SGD's as gamma = lr * T, T its rounds): "
        + "; ".join(
            f"{_short(cell)} {kind}({m}) "
            f"{lr * (spec.rounds_of(cell) if kit.horizon_scaled(cell.partition('@')[0]) else 1):g}"
            for (cell, kind, m), lr in sorted(result.step_sizes.items())
        )
        + ".",
        "",
        *(
            ["Tuning at a grid edge: " + "; ".join(result.tuning_notes) + ".", ""]
            if result.tuning_notes
            else ["No tuned step size is at the edge of its grid.", ""]
        ),
        "## Final error under message drops and node churn",
        "",
        "`vs_no_faults` = mean final error / the same method and graph without faults.",
        "",
        *_md(faults, {"mean": ".3g", "std": ".2g", "vs_no_faults": ".2f"}),
        "",
        "## Crossover: gossip against all-reduce as the latency grows",
        "",
        "Time to target = the clock of the rounds each run needed, at each latency "
        f"({', '.join(format(x, 'g') for x in spec.latencies)}). `—`: gossip never faster "
        "on this grid.",
        "",
        *_md(
            cross,
            {
                "gossip faster from latency": "g",
                "speed-up at smallest latency": ".2f",
                "speed-up at largest latency": ".2f",
            },
        ),
        "",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- figures

_DASHES = {"ring": "-", "torus": "--", "exponential": ":"}
_MARKERS = {"ring": "o", "torus": "s", "exponential": "^"}


COLORS = {m: style["color"] for m, style in kit.method_styles(METHODS).items()}


def plot_error_vs_time(spec: NetworkSpec, result: NetworkResult, path: Path) -> Path:
    """The network study's excess risk against simulated time, one panel per (M, topology),
    stragglers on, no faults; mean over seeds."""
    curves = result.curves[(result.curves["fault"] == "none") & (result.curves["round"] > 0)]
    stale = sorted(k for k in curves["algorithm.kind"].unique() if "@" in k)
    rows = len(spec.machines)
    fig, axes = figures.figure(rows, len(spec.topologies), 4.2, 3.3, 3.6, sharey="row")
    for i, m in enumerate(spec.machines):
        for j, kind in enumerate(spec.topologies):
            ax = axes[i][j]
            for method in [*spec.methods, *stale]:
                on = kind if method != "minibatch_sgd" else spec.topologies[0]
                g = curves[
                    (curves["topology.num_nodes"] == m)
                    & (curves["algorithm.kind"] == method)
                    & (curves["topology.kind"] == on)
                ]
                if g.empty:
                    continue
                mean = g.groupby("round")[[METRIC, "time/sim"]].mean()
                ax.plot(
                    mean["time/sim"],
                    mean[METRIC],
                    ":" if "@" in method else "-",
                    color=COLORS[method.partition("@")[0]],
                    label=label(method),
                )
            if m in result.targets:
                ax.axhline(result.targets[m], color="k", lw=0.8, ls="--", label="target")
            figures.panel(
                ax,
                f"{TOPOLOGY_LABELS[kind]}, M = {m}",
                "simulated time (1 = one gradient)" if i == rows - 1 else None,
                "excess risk f(x̄) − f*" if j == 0 else None,
            )
    title = (
        f"Stragglers (p = {spec.straggler_p}, {spec.slowdown:g}x slower), latency "
        f"{spec.latency:g} per message; mean over {len(spec.seeds)} seeds"
    )
    return figures.save(fig, axes, path, title, "right")


def plot_faults(spec: NetworkSpec, result: NetworkResult, path: Path) -> Path:
    """The network study's final excess risk against the drop rate, one panel per M (mean
    ± 1 std over seeds)."""
    table = result.faults
    fig, axes = figures.figure(1, len(spec.machines), 4.6, 3.0, 2.4)
    for ax, m in zip(axes[0], spec.machines, strict=True):
        for method in [x for x in spec.methods if x != "minibatch_sgd"]:
            for kind in spec.topologies:
                g = table[
                    (table["M"] == m) & (table["method"] == method) & (table["topology"] == kind)
                ]
                g = g[(g["fault"] == "none") | g["fault"].str.startswith("drop")]
                if g.empty:
                    continue
                rate = g["fault"].str.extract(r"drop (\d+)%", expand=False).astype(float) / 100
                frame = pd.DataFrame(
                    {"drop": rate.fillna(0.0), "error": g["mean"], "std": g["std"].fillna(0.0)}
                ).sort_values("drop")
                shift = 0.004 * (spec.topologies.index(kind) - 1)  # keep the bars apart
                name = f"{kit.label(method)}, {TOPOLOGY_LABELS[kind]}"
                ax.errorbar(
                    frame["drop"] + shift,
                    frame["error"],
                    yerr=frame["std"],
                    fmt=_DASHES[kind],
                    marker=_MARKERS[kind],
                    color=COLORS[method],
                    capsize=2,
                    elinewidth=0.7,
                    label=name,
                )
        title = (
            f"M = {m}, {spec.rounds} gradients per node: mean ± 1 std over {len(spec.seeds)} seeds"
        )
        figures.panel(ax, title, "probability a message is lost", "final excess risk", logx=False)
    return figures.save(fig, axes, path, where="right")


def plot_crossover(spec: NetworkSpec, result: NetworkResult, path: Path) -> Path:
    """The network study's time to target against the latency per message: one panel per
    (compute model, M)."""
    cross = result.crossover
    scenarios = [c for c in ("stragglers", "no stragglers") if c in set(cross["compute"])]
    fig, axes = figures.figure(len(scenarios), len(spec.machines), 4.6, 3.5, 2.6)
    for i, scenario in enumerate(scenarios):
        for j, m in enumerate(spec.machines):
            ax = axes[i][j]
            for method in spec.methods:
                central = method == "minibatch_sgd"
                for kind in spec.topologies_of(method):
                    g = cross[
                        (cross["compute"] == scenario)
                        & (cross["M"] == m)
                        & (cross["method"] == method)
                        & (cross["topology"] == kind)
                    ]
                    if g.empty:
                        continue
                    name = label(method)
                    if not central:
                        name = f"{kit.label(method)}, {TOPOLOGY_LABELS[kind]}"
                    ax.plot(
                        g["latency"],
                        g["time_to_target"],
                        "-" if central else _DASHES[kind],
                        color=COLORS[method],
                        lw=2.0 if central else 1.2,
                        label=name,
                    )
            what = f"stragglers p = {spec.straggler_p}" if scenario == "stragglers" else scenario
            xlabel = "latency per message (1 = one gradient)" if i == len(scenarios) - 1 else None
            figures.panel(ax, f"M = {m}, {what}", xlabel, "time to target")
    return figures.save(fig, axes, path, where="right")


def plot_all(spec: NetworkSpec, result: NetworkResult, folder: Path) -> list[Path]:
    """Every figure of the study into ``folder``."""
    draw = (plot_error_vs_time, plot_faults, plot_crossover)
    return [f(spec, result, folder / f"{f.__name__[5:]}.png") for f in draw]
