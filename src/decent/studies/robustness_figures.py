"""Figures and tables of the robustness study (:mod:`decent.studies.robustness`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from decent.studies import _kit as kit

LABELS = {m: kit.label(m) for m in ("dsgd", "dat_sgd", "gradient_tracking")}
"""Names of the study's methods, from the algorithm classes."""
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


def compressor_label(text: str) -> str:
    kind, _, arg = text.partition(":")
    name = COMPRESSOR_LABELS.get(kind, kind)
    if kind in ("top_k", "random_k"):
        return f"{name} {float(arg):.0%}"
    if kind == "qsgd":
        return f"{name} {arg} bit"
    return name


RobustnessSpec = Any  # decent.studies.robustness.RobustnessSpec (it imports this module)
RobustnessResult = Any

TASK_LABELS = {
    "digits": "digits, softmax regression, Dirichlet(0.5) label skew",
    "stream": "streaming least squares, node-specific Hessians and optima",
}
Y_LABELS = {"digits": "test accuracy at the mean", "stream": "excess risk f(x̄) − f*"}
RULE_LABELS = {
    "mean": "plain gossip (mean)",
    "trimmed_mean": "trimmed mean (b = 1)",
    "median": "coordinate-wise median",
    "clipping": "self-centered clipping",
}


def rule_label(rule: str) -> str:
    """``"clipping:0.1"`` -> ``"self-centered clipping, tau = 0.1"``."""
    name, _, tau = rule.partition(":")
    text = RULE_LABELS.get(name, name)
    return f"{text}, τ = {tau}" if tau else text


def _labels() -> tuple[dict[str, str], dict[str, str], Any]:
    return LABELS, METRICS, compressor_label


def plot_compression(spec: RobustnessSpec, result: RobustnessResult, path: Path) -> Path:
    """Metric against bytes sent per node, one panel per (task, method), one line per
    compressor (mean over seeds, every evaluation round)."""
    from matplotlib.figure import Figure

    labels, metrics, comp_label = _labels()
    curves = result.compression_curves
    rows, cols = len(spec.tasks), len(spec.methods)
    fig = Figure(figsize=(4.2 * cols + 2.6, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    compressors = ["none", *spec.compressors]
    for i, task in enumerate(spec.tasks):
        metric = metrics[task]
        for j, method in enumerate(spec.methods):
            ax = axes[i][j]
            for k, comp in enumerate(compressors):
                g = curves[
                    (curves["task"] == task)
                    & (curves["method"] == method)
                    & (curves["compressor"] == comp)
                    & (curves["round"] > 0)
                ]
                if g.empty:
                    continue
                mean = g.groupby("round")[[metric, "comm/bytes_per_node_mean"]].mean()
                name = "uncompressed" if comp == "none" else comp_label(comp)
                ax.plot(
                    mean["comm/bytes_per_node_mean"],
                    mean[metric],
                    "-",
                    color="k" if comp == "none" else f"C{k}",
                    lw=2.0 if comp == "none" else 1.2,
                    label=name,
                )
            ax.set_xscale("log")
            if task == "stream":
                ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{labels[method]}, {task}", fontsize=10)
            if i == rows - 1:
                ax.set_xlabel("bytes sent per node")
            if j == 0:
                ax.set_ylabel(Y_LABELS[task])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(
        f"Compressed gossip (CHOCO) on a {spec.topology} of {spec.nodes} nodes: each curve "
        f"runs {'/'.join(str(spec.rounds[t]) for t in spec.tasks)} rounds; "
        f"mean over {len(spec.seeds)} seeds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / (4.2 * cols + 2.6), 0.95))
    fig.savefig(path, dpi=120)
    return path


def plot_privacy(spec: RobustnessSpec, result: RobustnessResult, path: Path) -> Path:
    """Final test accuracy against epsilon (delta fixed), one line per method, the
    non-private accuracy as a dashed line."""
    from matplotlib.figure import Figure

    labels, _, _ = _labels()
    table = result.privacy
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    for k, method in enumerate(spec.privacy_methods):
        g = table[table["method"] == method].sort_values("epsilon")
        if g.empty:
            continue
        ax.errorbar(
            g["epsilon"],
            g["accuracy"],
            yerr=g["accuracy_sd"].fillna(0.0),
            marker="o",
            color=f"C{k}",
            label=f"{labels[method]} (DP-SGD)",
            capsize=3,
        )
        ax.axhline(
            float(g["non_private_accuracy"].iloc[0]),
            color=f"C{k}",
            ls="--",
            lw=0.9,
            label=f"{labels[method]}, no privacy",
        )
        for _, row in g.iterrows():
            ax.annotate(
                f"σ={row['privacy.noise_multiplier']:g}",
                (row["epsilon"], row["accuracy"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
    ax.set_xscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel(f"ε per node (δ = {spec.delta:g}, Opacus RDP accountant)")
    ax.set_ylabel("test accuracy at the mean")
    ax.set_title(
        f"DP-SGD per node, clip C = {spec.clip:g}, {spec.topology} of {spec.nodes}, digits "
        f"({spec.rounds['digits']} rounds)",
        fontsize=9,
    )
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_byzantine(spec: RobustnessSpec, result: RobustnessResult, path: Path) -> Path:
    """Final metric against the fraction of Byzantine nodes, one panel per (task, attack),
    one line per aggregation rule; fraction 0 is the attack-free run of plain gossip."""
    from matplotlib.figure import Figure

    _, _, _ = _labels()
    table = result.byzantine
    rows, cols = len(spec.tasks), len(spec.attacks)
    fig = Figure(figsize=(4.2 * cols + 2.8, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
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
                xs = [0.0, *g["fraction"]]
                ys = [float(clean["metric"].mean()) if not clean.empty else float("nan")]
                ys += list(g["metric"])
                ax.plot(xs, ys, marker="o", color=f"C{k}", label=rule_label(rule))
            if task == "stream":
                ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{attack} attack, {task}", fontsize=10)
            if i == rows - 1:
                ax.set_xlabel("fraction of Byzantine nodes")
            if j == 0:
                ax.set_ylabel(Y_LABELS[task] + " (honest nodes)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(
        f"D-SGD on a {spec.byzantine_topology} of {spec.nodes} nodes; fraction 0: no attack; "
        f"mean over {len(spec.seeds)} seeds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.8 / (4.2 * cols + 2.8), 0.95))
    fig.savefig(path, dpi=120)
    return path


def plot_all(spec: RobustnessSpec, result: RobustnessResult, folder: Path) -> list[Path]:
    paths = [plot_compression(spec, result, folder / "compression.png")]
    if not result.privacy.empty:
        paths.append(plot_privacy(spec, result, folder / "privacy.png"))
    if not result.byzantine.empty:
        paths.append(plot_byzantine(spec, result, folder / "byzantine.png"))
    return paths


def _md(df: pd.DataFrame) -> str:
    return kit.markdown_table(df, missing=None) + "\n" if not df.empty else "(no runs)\n"


def tables_markdown(spec: RobustnessSpec, result: RobustnessResult) -> str:
    """Every table of the study as markdown, with the tuned steps and the notes."""
    labels, _, comp_label = _labels()
    comp = result.compression.copy()
    if not comp.empty:
        comp["method"] = comp["method"].map(labels)
        comp["compressor"] = comp["compressor"].map(
            lambda c: "uncompressed" if c == "none" else comp_label(c)
        )
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
    parts += [f"- {labels[m]} on {t}: lr = {lr:g}" for (t, m), lr in result.step_sizes.items()]
    parts.append("\n## Tuned consensus steps\n")
    parts += [
        f"- {labels[m]} with {comp_label(c)} on {t}: gamma = {g:g}"
        for (t, m, c), g in result.consensus_steps.items()
    ]
    if result.notes:
        parts.append("\n## Tuning notes\n")
        parts += [f"- {n}" for n in result.notes]
    return "\n".join(parts) + "\n"
