"""The robustness study: fewer bytes, less leakage, no trust in peers (issue 8;
``docs/results/robustness.md``).

Softmax regression on scikit-learn's digits with Dirichlet label skew (``digits``: test
accuracy) and streaming least squares with node-specific Hessians and optima (``stream``:
excess risk in closed form):

1. **Accuracy against bytes sent** (each node's, from the real message encoding): D-SGD,
   DAT-SGD and gradient tracking against their CHOCO-compressed forms with each compressor
   (top-k, random-k, QSGD, scaled sign), on a ring.
2. **Accuracy against epsilon** of DP-SGD per node (per-sample clipping, Gaussian noise,
   Opacus's accountant), on the dataset task.
3. **Error against the fraction of Byzantine nodes**, plain gossip and each robust rule,
   under a sign-flip and an ALIE attack, on a torus.

Tuning on a separate seed (:func:`tune`): each uncompressed method's step size, then each
compressed cell's consensus step ``gamma`` at that step size. DP and Byzantine runs use the
tuned uncompressed step size (the privacy and attack settings are the study's variables, not
tuned away). Every stage is a resumable sweep into the results store.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import AfterValidator, Field, model_validator

from decent.config import validate
from decent.results import load
from decent.run import run_points
from decent.studies import _kit as kit
from decent.studies import figures

METRICS = {"digits": "eval/test_accuracy@mean", "stream": "eval/subopt@mean"}
"""What each task reports: test accuracy (higher is better) or excess risk (lower)."""
TUNE_METRICS = {"digits": "eval/loss@mean", "stream": "eval/subopt@mean"}
"""What tuning minimizes (a loss, lower is better, for both tasks)."""
COMPRESSOR_LABELS = {
    "none": "uncompressed",
    "identity": "identity",
    "top_k": "top-k",
    "random_k": "random-k",
    "qsgd": "QSGD",
    "sign": "scaled sign",
}
RULE_LABELS = {
    "mean": "plain gossip (mean)",
    "trimmed_mean": "trimmed mean (b = 1)",
    "median": "coordinate-wise median",
    "clipping": "self-centered clipping",
}


def compressor_label(text: str) -> str:
    """``"top_k:0.1"`` -> ``"top-k 10%"``, ``"qsgd:2"`` -> ``"QSGD 2 bit"``."""
    kind, _, arg = text.partition(":")
    name = COMPRESSOR_LABELS.get(kind, kind)
    if kind in ("top_k", "random_k"):
        return f"{name} {float(arg):.0%}"
    return f"{name} {arg} bit" if kind == "qsgd" else name


def rule_label(rule: str) -> str:
    """``"clipping:0.1"`` -> ``"self-centered clipping, τ = 0.1"``."""
    name, _, tau = rule.partition(":")
    text = RULE_LABELS.get(name, name)
    return f"{text}, τ = {tau}" if tau else text


STUDY = "robustness"
TUNING = "robustness-tuning"
COMPRESSED_OF = {
    "dsgd": "choco_sgd",
    "dat_sgd": "choco_dat_sgd",
    "gradient_tracking": "choco_gradient_tracking",
}


Task = Literal["digits", "stream"]
Method = Literal["dsgd", "dat_sgd", "gradient_tracking"]


def parse_compressor(text: str) -> dict[str, Any]:
    """``"top_k:0.1"`` -> ``{"compressor_kind": "top_k", "ratio": 0.1}``; ``"qsgd:2"`` sets
    ``bits``; ``"sign"`` has no parameter.

    Raises:
        ValueError: an unknown compressor or a missing or bad parameter.
    """
    kind, _, arg = text.partition(":")
    if kind in ("top_k", "random_k"):
        try:
            ratio = float(arg)
        except ValueError:
            raise ValueError(f"{text!r} needs a ratio in (0, 1], e.g. '{kind}:0.1'") from None
        if not 0 < ratio <= 1:
            raise ValueError(f"{text!r}: ratio must lie in (0, 1]")
        return {"compressor_kind": kind, "ratio": ratio}
    if kind == "qsgd":
        if not arg.isdigit() or not 1 <= int(arg) <= 16:
            raise ValueError(f"{text!r} needs bits in 1..16, e.g. 'qsgd:2'")
        return {"compressor_kind": kind, "bits": int(arg)}
    if kind in ("sign", "identity") and not arg:
        return {"compressor_kind": kind}
    raise ValueError(
        f"{text!r} is not one of top_k:<ratio>, random_k:<ratio>, qsgd:<bits>, sign, identity"
    )


def _compressor(text: str) -> str:
    parse_compressor(text)
    return text


def _rule(text: str) -> str:
    name, _, tau = text.partition(":")
    try:
        known = name in RULE_LABELS and (not tau or (name == "clipping" and float(tau) > 0))
    except ValueError:  # tau is not a number
        known = False
    if not known:
        raise ValueError("must be one of mean, trimmed_mean, median, clipping:<tau > 0>")
    return text


class RobustnessSpec(kit.Spec):
    """What the robustness study runs; the defaults take about 4.5 minutes on 2 cores."""

    tasks: tuple[Task, ...] = Field(default=("digits", "stream"), min_length=1)
    nodes: int = Field(default=16, ge=4)
    topology: str = "ring"
    byzantine_topology: str = "torus"
    rounds: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: {"digits": 300, "stream": 600}
    )
    """Rounds per task."""
    eval_every: int = Field(default=20, ge=1)
    seeds: tuple[int, ...] = Field(default=(0, 1), min_length=1)
    tune_seed: int = 100
    methods: tuple[Method, ...] = Field(
        default=("dsgd", "dat_sgd", "gradient_tracking"), min_length=1
    )
    compressors: tuple[Annotated[str, AfterValidator(_compressor)], ...] = (
        "identity", "top_k:0.1", "random_k:0.1", "qsgd:2", "sign",
    )  # fmt: skip
    """``identity`` is CHOCO without compression: its tuned consensus step is the reference
    that separates what compression costs from what the extra step gamma buys."""
    lr_grid: tuple[float, ...] = Field(default=(0.025, 0.05, 0.1, 0.2, 0.4), min_length=1)
    gamma_grid: tuple[float, ...] = Field(default=(0.4, 0.8, 1.6, 3.2, 6.4), min_length=1)
    """DAT-SGD's grid in gamma = lr * T."""
    consensus_grid: tuple[float, ...] = Field(default=(0.02, 0.05, 0.15, 0.4, 1.0), min_length=1)
    """CHOCO's consensus step; extended downwards (by 2.5x) while the best is the lowest."""
    privacy_methods: tuple[Method, ...] = ("dsgd", "dat_sgd")
    noise_multipliers: tuple[Annotated[float, Field(ge=0.0)], ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    clip: float = 1.0
    delta: float = Field(default=1e-5, gt=0.0, lt=1.0)
    byzantine_methods: tuple[Method, ...] = ("dsgd",)
    byzantine_fractions: tuple[Annotated[float, Field(gt=0.0, lt=0.5)], ...] = (0.0625, 0.125)
    """Shares of Byzantine nodes, placed at distance >= 3 from each other
    (:func:`spread_nodes`)."""
    attacks: tuple[str, ...] = ("sign_flip", "alie")
    rules: tuple[Annotated[str, AfterValidator(_rule)], ...] = (
        "mean", "trimmed_mean", "median", "clipping:0.1", "clipping:1",
    )  # fmt: skip
    """Aggregation rules; ``clipping:<tau>`` is self-centred clipping of radius ``tau``."""
    digits: dict[str, Any] = Field(
        default_factory=lambda: {
            "kind": "softmax_regression",
            "batch_size": 16,
            "l2": 1e-3,
            "dataset": {"kind": "digits", "test_fraction": 0.2},
            "partition": {"kind": "dirichlet", "alpha": 0.5},
        }
    )
    stream: dict[str, Any] = Field(
        default_factory=lambda: {
            "kind": "least_squares",
            "dim": 50,
            "heterogeneity": 1.0,
            "hessian_heterogeneity": 0.5,
            "condition": 10.0,
            "noise": 0.5,
        }
    )
    workers: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _across_fields(self) -> RobustnessSpec:
        for task in self.tasks:
            if task not in self.rounds:
                raise ValueError(f"rounds: give task {task!r} a number of rounds >= 1")
        if self.byzantine_methods:
            for f in self.byzantine_fractions:
                try:
                    spread_nodes(self.byzantine_topology, self.nodes, self.byzantine_count(f))
                except ValueError as err:
                    raise ValueError(f"byzantine_fractions: {err}") from None
        return self

    # -- configs ------------------------------------------------------------------------
    def task(self, name: str) -> dict[str, Any]:
        return dict(self.digits if name == "digits" else self.stream)

    def grid(self, task: str, method: str) -> list[float]:
        if kit.horizon_scaled(method):
            return [g / self.rounds[task] for g in self.gamma_grid]
        return list(self.lr_grid)

    def base(
        self, study: str, task: str, method: str, lr: float, seed: int, topology: str | None = None
    ) -> dict[str, Any]:
        return {
            "study": study,
            "seed": seed,
            "rounds": self.rounds[task],
            "eval_every": self.eval_every,
            "per_node_eval": "final",
            "topology": {"kind": topology or self.topology, "num_nodes": self.nodes},
            "algorithm": {"kind": method, "lr": lr},
            "task": self.task(task),
        }

    def byzantine_count(self, fraction: float) -> int:
        """Byzantine nodes at ``fraction`` of :attr:`nodes`: at least one."""
        return max(1, round(fraction * self.nodes))

    def compressed(
        self, task: str, method: str, comp: str, lr: float, gamma: float, seed: int
    ) -> dict[str, Any]:
        raw = self.base(STUDY, task, COMPRESSED_OF[method], lr, seed)
        raw["algorithm"].update(parse_compressor(comp), consensus_lr=gamma)
        return raw


# -------------------------------------------------------------------------------- stages


def _task_of(df: pd.DataFrame) -> pd.Series:
    return df["task.kind"].map(lambda k: "digits" if k == "softmax_regression" else "stream")


LR_POLICY = kit.GridPolicy(
    factor=2.0, max_extensions=4, lower_if_diverged=False, extend_after_last=True
)
"""Step sizes: a factor-2 grid extended at either edge, at most 4 times."""
CONSENSUS_POLICY = kit.GridPolicy(
    factor=2.5, edges="low", max_extensions=3, digits=6, extend_after_last=True
)
"""CHOCO's consensus step: extended downwards only (by 2.5x, also when every value
diverged), at most 3 times; the largest value, 1, is the plain method."""


def tune(
    spec: RobustnessSpec, out: Path, *, progress: bool = True
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str, str], float], list[str]]:
    """Step sizes of the uncompressed methods, then the consensus steps of the compressed
    cells, on ``tune_seed`` by the final loss; returns ``(lr[(task, method)],
    gamma[(task, method, compressor)], notes)``."""

    def metric(cell: Any) -> dict[str, str]:
        return {"last": TUNE_METRICS[cell[0]]}

    run: dict[str, Any] = {"workers": spec.workers, "progress": progress}

    def lr_configs(cell: tuple[str, str], x: float) -> list[Any]:
        t, m = cell
        return [validate(spec.base(TUNING, t, m, x, spec.tune_seed), "robustness tuning")]

    plain: list[tuple[str, str]] = [(t, m) for t in spec.tasks for m in spec.methods]
    found = kit.tune_runs(
        out,
        plain,
        lambda c: spec.grid(*c),
        lr_configs,
        metric,
        LR_POLICY,
        desc="tune step sizes",
        **run,
    )
    lr, notes = kit.chosen(found, lambda cell: f"{kit.label(cell[1])} on {cell[0]}")

    def gamma_configs(cell: tuple[str, str, str], g: float) -> list[Any]:
        t, m, comp = cell
        raw = spec.compressed(t, m, comp, lr[(t, m)], g, spec.tune_seed)
        raw["study"] = TUNING
        return [validate(raw, "robustness tuning")]

    compressed = [(t, m, c) for t in spec.tasks for m in spec.methods for c in spec.compressors]
    steps = kit.tune_runs(
        out,
        compressed,
        lambda c: spec.consensus_grid,
        gamma_configs,
        metric,
        CONSENSUS_POLICY,
        desc="tune consensus",
        **run,
    )
    gamma: dict[tuple[str, str, str], float] = {}
    for (t, m, comp), choice in steps.items():
        name = f"{kit.label(m)} with {compressor_label(comp)} on {t}"
        if not math.isfinite(choice.error):
            notes.append(f"{name}: every consensus step down to {min(choice.tried):g} diverged")
            continue
        gamma[(t, m, comp)] = choice.step
        if choice.step == min(choice.tried):
            notes.append(f"{name}: consensus step {min(choice.tried):g} is at the edge of its grid")
    return lr, gamma, notes


def compression_configs(
    spec: RobustnessSpec, lr: dict[tuple[str, str], float], gamma: dict[tuple[str, str, str], float]
) -> list[Any]:
    configs = []
    for t in spec.tasks:
        for m in spec.methods:
            for seed in spec.seeds:
                configs.append(validate(spec.base(STUDY, t, m, lr[(t, m)], seed), "robustness"))
                for comp in spec.compressors:
                    if (t, m, comp) not in gamma:  # every consensus step diverged (a note)
                        continue
                    raw = spec.compressed(t, m, comp, lr[(t, m)], gamma[(t, m, comp)], seed)
                    configs.append(validate(raw, "robustness"))
    return configs


def privacy_configs(spec: RobustnessSpec, lr: dict[tuple[str, str], float]) -> list[Any]:
    """DP-SGD runs on the dataset task (its sampling rate is what the accountant needs)."""
    configs: list[Any] = []
    if "digits" not in spec.tasks:
        return configs
    for m in spec.privacy_methods:
        if ("digits", m) not in lr:
            continue
        for sigma in spec.noise_multipliers:
            for seed in spec.seeds:
                raw = spec.base(STUDY, "digits", m, lr[("digits", m)], seed)
                raw["task"]["sampling"] = "without_replacement"
                raw["privacy"] = {"clip": spec.clip, "noise_multiplier": sigma, "delta": spec.delta}
                configs.append(validate(raw, "robustness"))
    return configs


def spread_nodes(kind: str, n: int, count: int, seed: int = 0) -> list[int]:
    """``count`` nodes of the graph ``kind(n)``, no two within distance 2 of each other.

    Then no honest node has two Byzantine neighbours, and no Byzantine node is adjacent to
    another: the placement every robust rule of the study (trimmed mean with ``b = 1``,
    median, clipping) tolerates on a graph of degree >= 2. Greedy over a seeded order.

    Raises:
        ValueError: the graph has no such set of ``count`` nodes.
    """
    import networkx as nx
    import numpy as np

    from decent.topology import make

    w = make(kind, n).weights(1).csr
    graph = nx.from_scipy_sparse_array(w)
    graph.remove_edges_from(nx.selfloop_edges(graph))
    order = np.random.default_rng(seed).permutation(n)
    chosen: list[int] = []
    blocked: set[int] = set()
    for node in (int(i) for i in order):
        if node in blocked:
            continue
        chosen.append(node)
        blocked |= set(nx.single_source_shortest_path_length(graph, node, cutoff=2))
        if len(chosen) == count:
            return sorted(chosen)
    raise ValueError(
        f"{count} of the {n} nodes of {kind} cannot be placed at distance "
        f">= 3 from each other (at most {len(chosen)} found); use a smaller fraction or more nodes"
    )


def byzantine_configs(spec: RobustnessSpec, lr: dict[tuple[str, str], float]) -> list[Any]:
    configs = []
    for t in spec.tasks:
        for m in spec.byzantine_methods:
            if (t, m) not in lr:
                continue
            for seed in spec.seeds:
                clean = spec.base(STUDY, t, m, lr[(t, m)], seed, spec.byzantine_topology)
                configs.append(validate(clean, "robustness"))
                for f in spec.byzantine_fractions:
                    for attack in spec.attacks:
                        for text in spec.rules:
                            rule, _, tau = text.partition(":")
                            raw = spec.base(STUDY, t, m, lr[(t, m)], seed, spec.byzantine_topology)
                            count = spec.byzantine_count(f)
                            nodes = spread_nodes(spec.byzantine_topology, spec.nodes, count)
                            raw["byzantine"] = {
                                "nodes": nodes,
                                "attack": attack,
                                "aggregation": rule,
                                "trim": 1,
                                "tau": float(tau) if tau else 1.0,
                            }
                            configs.append(validate(raw, "robustness"))
    return configs


# -------------------------------------------------------------------------------- results


@dataclass
class RobustnessResult:
    """What :func:`run` measured (every table is also written as CSV)."""

    compression: pd.DataFrame
    compression_curves: pd.DataFrame
    privacy: pd.DataFrame
    byzantine: pd.DataFrame
    wall_s: float
    step_sizes: dict[tuple[str, str], float] = field(default_factory=dict)
    consensus_steps: dict[tuple[str, str, str], float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _compressor_of(row: pd.Series) -> str:
    kind = row.get("algorithm.compressor_kind")
    if not isinstance(kind, str):
        return "none"
    if kind in ("top_k", "random_k"):
        return f"{kind}:{row['algorithm.ratio']:g}"
    if kind == "qsgd":
        return f"qsgd:{int(row['algorithm.bits'])}"
    return kind


def _base_method(kind: str) -> str:
    for plain, comp in COMPRESSED_OF.items():
        if kind in (plain, comp):
            return plain
    return kind


def collect(spec: RobustnessSpec, out: Path) -> dict[str, pd.DataFrame]:
    """The study's runs split by experiment: ``compression``, ``privacy``, ``byzantine``;
    each one row per (run, evaluation round) with the metrics as columns."""
    df = load(out, study=STUDY)
    df = df[df["seed"].isin(spec.seeds)].assign(task=_task_of(df))
    for col in ("privacy.noise_multiplier", "byzantine.attack", "algorithm.compressor_kind"):
        if col not in df:
            df[col] = math.nan
    runs = df.drop_duplicates("run_id").copy()
    runs["method"] = runs["algorithm.kind"].map(_base_method)
    runs["compressor"] = runs.apply(_compressor_of, axis=1)
    runs["experiment"] = "compression"
    runs.loc[runs["privacy.noise_multiplier"].notna(), "experiment"] = "privacy"
    runs.loc[runs["topology.kind"] == spec.byzantine_topology, "experiment"] = "byzantine"
    keep = ["run_id", "task", "method", "compressor", "experiment", "seed", "status"]
    for col in runs.columns:
        if col.startswith(("privacy.", "byzantine.")) or col == "algorithm.consensus_lr":
            keep.append(col)
    wanted = [*METRICS.values(), "comm/bytes_per_node_mean", "privacy/epsilon"]
    wanted += [c for c in df["metric"].unique() if str(c).startswith("byzantine/")]
    curves = kit.curves(df, wanted, runs[keep])
    return {e: curves[curves["experiment"] == e] for e in ("compression", "privacy", "byzantine")}


def _finals(curves: pd.DataFrame) -> pd.DataFrame:
    """The last record of each run, with its task's metric (:data:`METRICS`) as ``metric``."""
    last = kit.final_rows(curves).copy()
    if not last.empty:
        last["metric"] = last.apply(lambda row: float(row[METRICS[row["task"]]]), axis=1)
    return last


def compression_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Final metric and bytes per node per (task, method, compressor), mean over seeds, and
    the bytes and the metric relative to the uncompressed method."""
    last = _finals(curves)
    if last.empty:
        return pd.DataFrame()
    keys = ["task", "method", "compressor"]
    table = (
        last.groupby(keys)
        .agg(
            metric=("metric", "mean"),
            metric_sd=("metric", "std"),
            bytes_per_node=("comm/bytes_per_node_mean", "mean"),
            runs=("run_id", "count"),
        )
        .reset_index()
    )
    plain = table[table["compressor"] == "none"].set_index(["task", "method"])
    table["bytes_ratio"] = [
        r["bytes_per_node"] / plain.loc[(r["task"], r["method"]), "bytes_per_node"]
        for _, r in table.iterrows()
    ]
    table["metric_vs_uncompressed"] = [
        r["metric"] / plain.loc[(r["task"], r["method"]), "metric"] for _, r in table.iterrows()
    ]
    return table


def privacy_table(curves: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Final test accuracy and epsilon per (method, noise multiplier); the non-private
    accuracy of the same method beside it."""
    last = _finals(curves)
    if last.empty:
        return pd.DataFrame()
    table = (
        last.groupby(["method", "privacy.noise_multiplier"])
        .agg(
            accuracy=(METRICS["digits"], "mean"),
            accuracy_sd=(METRICS["digits"], "std"),
            epsilon=("privacy/epsilon", "max"),
            runs=("run_id", "count"),
        )
        .reset_index()
    )
    ref = _finals(reference)
    ref = ref[(ref["task"] == "digits") & (ref["compressor"] == "none")]
    plain = ref.groupby("method")[METRICS["digits"]].mean()
    table["non_private_accuracy"] = table["method"].map(plain)
    return table


def byzantine_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Final metric per (task, attack, rule, fraction); the attack-free run is fraction 0."""
    last = _finals(curves)
    if last.empty:
        return pd.DataFrame()
    if "byzantine/fraction" in last:
        last["fraction"] = last["byzantine/fraction"].fillna(0.0)
    else:
        last["fraction"] = 0.0
    last["attack"] = last["byzantine.attack"].fillna("none")
    rule = last.get("byzantine.aggregation", pd.Series("mean", index=last.index)).fillna("mean")
    tau = last.get("byzantine.tau", pd.Series(1.0, index=last.index)).fillna(1.0)
    last["rule"] = [f"{r}:{t:g}" if r == "clipping" else r for r, t in zip(rule, tau, strict=True)]
    keys = ["task", "method", "attack", "rule", "fraction"]
    table = (
        last.groupby(keys)
        .agg(metric=("metric", "mean"), metric_sd=("metric", "std"), runs=("run_id", "count"))
        .reset_index()
    )
    return table


def run(
    spec: RobustnessSpec | None = None, out: str | Path = "results", *, progress: bool = True
) -> RobustnessResult:
    """Tune, evaluate, measure; write CSVs, tables and figures to ``<out>/robustness/``."""
    spec = spec or RobustnessSpec()
    out = Path(out)
    start = time.perf_counter()
    lr, gamma, notes = tune(spec, out, progress=progress)
    configs = compression_configs(spec, lr, gamma)
    configs += privacy_configs(spec, lr)
    configs += byzantine_configs(spec, lr)
    run_points(
        configs, out, workers=spec.workers, progress=progress, desc="robustness"
    ).raise_if_not_ok(out)
    parts = collect(spec, out)
    result = RobustnessResult(
        compression=compression_table(parts["compression"]),
        compression_curves=parts["compression"],
        privacy=privacy_table(parts["privacy"], parts["compression"]),
        byzantine=byzantine_table(parts["byzantine"]),
        wall_s=time.perf_counter() - start,
        step_sizes=lr,
        consensus_steps=gamma,
        notes=notes,
    )
    folder = out / STUDY
    tables = {name: getattr(result, name) for name in ("compression", "privacy", "byzantine")}
    kit.write_tables(folder, spec, tables, tables_markdown(spec, result))
    plot_all(spec, result, folder)
    return result


def _md(df: pd.DataFrame) -> str:
    return kit.markdown_table(df, missing=None) + "\n" if not df.empty else "(no runs)\n"


def tables_markdown(spec: RobustnessSpec, result: RobustnessResult) -> str:
    """Every table of the study as markdown, with the tuned steps and the notes."""
    comp = result.compression.copy()
    if not comp.empty:
        comp["method"] = comp["method"].map(kit.label)
        comp["compressor"] = comp["compressor"].map(compressor_label)
    parts = [
        "# Robustness study tables\n",
        f"Wall time {result.wall_s:.0f} s.\n",
        "## Compression: final metric (digits: test accuracy; stream: excess risk) and bytes "
        "per node\n",
        _md(comp),
        "## Privacy: DP-SGD per node on digits\n",
        _md(result.privacy),
        "## Byzantine nodes: final metric of the honest nodes\n",
        _md(result.byzantine),
        "## Tuned step sizes\n",
    ]
    parts += [f"- {kit.label(m)} on {t}: lr = {lr:g}" for (t, m), lr in result.step_sizes.items()]
    parts.append("\n## Tuned consensus steps\n")
    parts += [
        f"- {kit.label(m)} with {compressor_label(c)} on {t}: gamma = {g:g}"
        for (t, m, c), g in result.consensus_steps.items()
    ]
    if result.notes:
        parts.append("\n## Tuning notes\n")
        parts += [f"- {n}" for n in result.notes]
    return "\n".join(parts) + "\n"


# -------------------------------------------------------------------------------- figures

_Y_LABELS = {"digits": "test accuracy at the mean", "stream": "excess risk f(x̄) − f*"}


def plot_compression(spec: RobustnessSpec, result: RobustnessResult, path: Path) -> Path:
    """The robustness study's metric against bytes sent per node, one panel per (task,
    method), one line per compressor (mean over seeds, every evaluation round)."""
    curves = result.compression_curves
    rows = len(spec.tasks)
    fig, axes = figures.figure(rows, len(spec.methods), 4.2, 3.3, 2.6)
    for i, task in enumerate(spec.tasks):
        metric = METRICS[task]
        for j, method in enumerate(spec.methods):
            ax = axes[i][j]
            for k, comp in enumerate(["none", *spec.compressors]):
                g = curves[
                    (curves["task"] == task)
                    & (curves["method"] == method)
                    & (curves["compressor"] == comp)
                    & (curves["round"] > 0)
                ]
                if g.empty:
                    continue
                mean = g.groupby("round")[[metric, "comm/bytes_per_node_mean"]].mean()
                plain = comp == "none"
                ax.plot(
                    mean["comm/bytes_per_node_mean"],
                    mean[metric],
                    "-",
                    color="k" if plain else f"C{k}",
                    lw=2.0 if plain else 1.2,
                    label=compressor_label(comp),
                )
            figures.panel(
                ax,
                f"{kit.label(method)}, {task}",
                "bytes sent per node" if i == rows - 1 else None,
                _Y_LABELS[task] if j == 0 else None,
                logy=task == "stream",
            )
    title = (
        f"Compressed gossip (CHOCO) on a {spec.topology} of {spec.nodes} nodes: each curve "
        f"runs {'/'.join(str(spec.rounds[t]) for t in spec.tasks)} rounds; "
        f"mean over {len(spec.seeds)} seeds"
    )
    return figures.save(fig, axes, path, title, "right")


def plot_privacy(spec: RobustnessSpec, result: RobustnessResult, path: Path) -> Path:
    """The robustness study's final test accuracy against epsilon (delta fixed), one line
    per method, its non-private accuracy dashed."""
    table = result.privacy
    fig, axes = figures.figure(1, 1, 6.0, 3.1)
    ax = axes[0][0]
    for k, method in enumerate(spec.privacy_methods):
        g = table[table["method"] == method].sort_values("epsilon")
        if g.empty:
            continue
        name = kit.label(method)
        ax.errorbar(
            g["epsilon"],
            g["accuracy"],
            yerr=g["accuracy_sd"].fillna(0.0),
            marker="o",
            color=f"C{k}",
            label=f"{name} (DP-SGD)",
            capsize=3,
        )
        ax.axhline(
            float(g["non_private_accuracy"].iloc[0]),
            color=f"C{k}",
            ls="--",
            lw=0.9,
            label=f"{name}, no privacy",
        )
        for _, row in g.iterrows():
            ax.annotate(
                f"σ={row['privacy.noise_multiplier']:g}",
                (row["epsilon"], row["accuracy"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    title = (
        f"DP-SGD per node, clip C = {spec.clip:g}, {spec.topology} of {spec.nodes}, digits "
        f"({spec.rounds['digits']} rounds)"
    )
    xlabel = f"ε per node (δ = {spec.delta:g}, Opacus RDP accountant)"
    figures.panel(ax, title, xlabel, "test accuracy at the mean", logy=False)
    return figures.save(fig, axes, path)


def plot_byzantine(spec: RobustnessSpec, result: RobustnessResult, path: Path) -> Path:
    """The robustness study's final metric against the fraction of Byzantine nodes, one
    panel per (task, attack), one line per aggregation rule; fraction 0 is the attack-free
    run of plain gossip."""
    table = result.byzantine
    rows = len(spec.tasks)
    fig, axes = figures.figure(rows, len(spec.attacks), 4.2, 3.3, 2.8)
    for i, task in enumerate(spec.tasks):
        clean = table[(table["task"] == task) & (table["attack"] == "none")]
        for j, attack in enumerate(spec.attacks):
            ax = axes[i][j]
            for k, rule in enumerate(spec.rules):
                g = table[
                    (table["task"] == task) & (table["attack"] == attack) & (table["rule"] == rule)
                ].sort_values("fraction")
                if g.empty:
                    continue
                ys = [float(clean["metric"].mean()) if not clean.empty else math.nan]
                ax.plot(
                    [0.0, *g["fraction"]],
                    [*ys, *g["metric"]],
                    marker="o",
                    color=f"C{k}",
                    label=rule_label(rule),
                )
            figures.panel(
                ax,
                f"{attack} attack, {task}",
                "fraction of Byzantine nodes" if i == rows - 1 else None,
                _Y_LABELS[task] + " (honest nodes)" if j == 0 else None,
                logx=False,
                logy=task == "stream",
            )
    title = (
        f"D-SGD on a {spec.byzantine_topology} of {spec.nodes} nodes; fraction 0: no attack; "
        f"mean over {len(spec.seeds)} seeds"
    )
    return figures.save(fig, axes, path, title, "right")


def plot_all(spec: RobustnessSpec, result: RobustnessResult, folder: Path) -> list[Path]:
    """Every figure of the study into ``folder`` (an experiment with no table has none)."""
    paths = [plot_compression(spec, result, folder / "compression.png")]
    for name, draw in (("privacy", plot_privacy), ("byzantine", plot_byzantine)):
        if not getattr(result, name).empty:
            paths.append(draw(spec, result, folder / f"{name}.png"))
    return paths
