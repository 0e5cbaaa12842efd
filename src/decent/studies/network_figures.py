"""Figures of the network study (:mod:`decent.studies.network`), and the names and colours
it uses (the study imports them from here; nothing here imports the study)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from decent.studies import _kit as kit

METRIC = "eval/subopt@mean"
METHODS = ("minibatch_sgd", "dsgd", "dat_sgd", "ad_psgd")
"""The methods the study can run (its clock replay knows their communication patterns)."""
LABELS = {m: kit.label(m, role="transport") for m in METHODS}
"""Names in tables and figures, from the algorithm classes: ``D-SGD (gossip)``, ..."""
COLORS = {m: style["color"] for m, style in kit.method_styles(METHODS).items()}
TOPOLOGY_LABELS = {"ring": "ring", "torus": "2-D torus", "exponential": "exponential"}


def label(method: str) -> str:
    """The display name of a study cell: ``dsgd@stale4`` is D-SGD with staleness <= 4."""
    base, _, variant = method.partition("@stale")
    if not variant:
        return kit.label(base, role="transport")
    return f"{kit.label(base)} (async, staleness <= {variant}, experimental)"


NetworkSpec = Any  # decent.studies.network.NetworkSpec (not imported: it imports this module)
NetworkResult = Any

DASHES = {"ring": "-", "torus": "--", "exponential": ":"}
MARKERS = {"ring": "o", "torus": "s", "exponential": "^"}


def _names() -> tuple[dict[str, str], dict[str, str], dict[str, str], str]:
    return LABELS, COLORS, TOPOLOGY_LABELS, METRIC


def plot_error_vs_time(spec: NetworkSpec, result: NetworkResult, path: Path) -> Path:
    """Excess risk against simulated time, one panel per (M, topology), stragglers on."""
    from matplotlib.figure import Figure

    _, colors, topo_labels, metric = _names()
    curves = result.curves[(result.curves["fault"] == "none") & (result.curves["round"] > 0)]
    rows, cols = len(spec.machines), len(spec.topologies)
    fig = Figure(figsize=(4.2 * cols + 3.6, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharey="row")
    for i, m in enumerate(spec.machines):
        for j, kind in enumerate(spec.topologies):
            ax = axes[i][j]
            stale = sorted(k for k in curves["algorithm.kind"].unique() if "@" in k)
            for method in [*spec.methods, *stale]:
                base = method.partition("@")[0]
                on = kind if method != "minibatch_sgd" else spec.topologies[0]
                g = curves[
                    (curves["topology.num_nodes"] == m)
                    & (curves["algorithm.kind"] == method)
                    & (curves["topology.kind"] == on)
                ]
                if g.empty:
                    continue
                mean = g.groupby("round")[[metric, "time/sim"]].mean()
                ax.plot(
                    mean["time/sim"],
                    mean[metric],
                    ":" if "@" in method else "-",
                    color=colors[base],
                    label=label(method),
                )
            target = result.targets.get(m)
            if target is not None:
                ax.axhline(target, color="k", lw=0.8, ls="--", label="target")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{topo_labels[kind]}, M = {m}", fontsize=10)
            if i == rows - 1:
                ax.set_xlabel("simulated time (1 = one gradient)")
            if j == 0:
                ax.set_ylabel("excess risk f(x̄) − f*")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(
        f"Stragglers (p = {spec.straggler_p}, {spec.slowdown:g}x slower), latency "
        f"{spec.latency:g} per message; mean over {len(spec.seeds)} seeds",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 3.6 / (4.2 * cols + 3.6), 0.95))
    fig.savefig(path, dpi=120)
    return path


def plot_faults(spec: NetworkSpec, result: NetworkResult, path: Path) -> Path:
    """Final excess risk against the drop rate, one panel per M."""
    from matplotlib.figure import Figure

    labels, colors, topo_labels, _ = _names()
    table = result.faults
    fig = Figure(figsize=(4.6 * len(spec.machines) + 2.4, 3.6))
    axes = fig.subplots(1, len(spec.machines), squeeze=False)[0]
    for ax, m in zip(axes, spec.machines, strict=True):
        for method in [m for m in spec.methods if m != "minibatch_sgd"]:
            for kind in spec.topologies:
                g = table[
                    (table["M"] == m) & (table["method"] == method) & (table["topology"] == kind)
                ]
                drops = []
                for _, row in g.iterrows():
                    fault = row["fault"]
                    std = row["std"] if row["std"] == row["std"] else 0.0
                    if fault == "none":
                        drops.append((0.0, row["mean"], std))
                    elif fault.startswith("drop"):
                        rate = float(fault.split()[1].rstrip("%")) / 100
                        drops.append((rate, row["mean"], std))
                if not drops:
                    continue
                frame = pd.DataFrame(drops, columns=["drop", "error", "std"]).sort_values("drop")
                shift = 0.004 * (spec.topologies.index(kind) - 1)  # keep the bars apart
                ax.errorbar(
                    frame["drop"] + shift,
                    frame["error"],
                    yerr=frame["std"],
                    fmt=DASHES[kind],
                    marker=MARKERS[kind],
                    color=colors[method],
                    capsize=2,
                    elinewidth=0.7,
                    label=f"{labels[method].split(' (')[0]}, {topo_labels[kind]}",
                )
        ax.set_yscale("log")
        ax.set_xlabel("probability a message is lost")
        ax.set_ylabel("final excess risk")
        ax.set_title(
            f"M = {m}, {spec.rounds} gradients per node: mean ± 1 std over {len(spec.seeds)} seeds",
            fontsize=10,
        )
        ax.grid(True, which="both", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (4.6 * len(spec.machines) + 2.4), 1))
    fig.savefig(path, dpi=120)
    return path


def plot_crossover(spec: NetworkSpec, result: NetworkResult, path: Path) -> Path:
    """Time to target against latency per message: one panel per (compute model, M)."""
    from matplotlib.figure import Figure

    labels, colors, topo_labels, _ = _names()
    cross = result.crossover
    scenarios = [c for c in ("stragglers", "no stragglers") if c in set(cross["compute"])]
    cols = len(spec.machines)
    fig = Figure(figsize=(4.6 * cols + 2.6, 3.5 * len(scenarios)))
    axes = fig.subplots(len(scenarios), cols, squeeze=False)
    for i, scenario in enumerate(scenarios):
        for j, m in enumerate(spec.machines):
            ax = axes[i][j]
            for method in spec.methods:
                for kind in spec.topologies_of(method):
                    g = cross[
                        (cross["compute"] == scenario)
                        & (cross["M"] == m)
                        & (cross["method"] == method)
                        & (cross["topology"] == kind)
                    ]
                    if g.empty:
                        continue
                    name = (
                        labels[method]
                        if method == "minibatch_sgd"
                        else f"{labels[method].split(' (')[0]}, {topo_labels[kind]}"
                    )
                    ax.plot(
                        g["latency"],
                        g["time_to_target"],
                        "-" if method == "minibatch_sgd" else DASHES[kind],
                        color=colors[method],
                        lw=2.0 if method == "minibatch_sgd" else 1.2,
                        label=name,
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            if i == len(scenarios) - 1:
                ax.set_xlabel("latency per message (1 = one gradient)")
            ax.set_ylabel("time to target")
            what = f"stragglers p = {spec.straggler_p}" if scenario == "stragglers" else scenario
            ax.set_title(f"M = {m}, {what}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2.6 / (4.6 * cols + 2.6), 1))
    fig.savefig(path, dpi=120)
    return path


def plot_all(spec: NetworkSpec, result: NetworkResult, folder: Path) -> list[Path]:
    """Every figure of the study into ``folder``."""
    return [
        plot_error_vs_time(spec, result, folder / "error_vs_time.png"),
        plot_faults(spec, result, folder / "faults.png"),
        plot_crossover(spec, result, folder / "crossover.png"),
    ]
