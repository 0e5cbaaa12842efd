"""``decent network``: time to target, faults and the gossip/all-reduce crossover
(:mod:`decent.studies.network`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from decent.cli._common import console, study_run, study_spec


def network(
    config: Path | None = typer.Argument(
        None, help="A study spec (TOML; default configs/studies/network.toml's values)."
    ),
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
) -> None:
    """Stragglers, lossy links and crashes in simulated time: gossip vs all-reduce.

    Example: decent network configs/studies/network.toml --out results
    """
    from decent.studies import network as ns

    spec = study_spec(ns.NetworkSpec, config, workers)
    console.print(
        f"[bold]decent network[/]: {', '.join(ns.label(m) for m in spec.methods)} on "
        f"{', '.join(spec.topologies)} at M = {', '.join(map(str, spec.machines))}, T = "
        f"{spec.rounds}; stragglers p = {spec.straggler_p} ({spec.slowdown:g}x), latency "
        f"{spec.latency:g}; drops {list(spec.drops)}, crashes of "
        f"{[f'{f:.0%}' for f in spec.crash_fractions]} of the nodes, churn of "
        f"{[f'{f:.0%}' for f in spec.churn_fractions]}; bounded staleness "
        f"{list(spec.max_delays)}; {len(spec.seeds)} seeds."
    )
    with study_run(out):  # a failed run or Ctrl-C: one line, nothing lost
        result = ns.run(spec, out, progress=progress)
    wide = Console(width=max(console.width, 120), highlight=False)
    table = Table(title="time to target under stragglers (simulated time; 1 = one gradient)")
    for col in ("M", "topology", "method", "final error", "reached", "time/round", "to target"):
        table.add_column(col)
    for _, row in result.time_to_target.sort_values(["M", "topology", "method"]).iterrows():
        table.add_row(
            str(row["M"]),
            row["topology"],
            ns.label(row["method"]),
            f"{row['final_error']:.3g}",
            row["reached"],
            f"{row['time_per_step']:.2f}",
            f"{row['time_to_target']:.0f}"
            if row["time_to_target"] == row["time_to_target"]
            else "—",
        )
    wide.print(table)
    console.print(f"wall time {result.wall_s:.0f} s; store: {out / 'decent.sqlite'}")
    console.print(f"[bold]tables and figures: {out / ns.STUDY} (tables.md)[/]")


def register(app: typer.Typer) -> None:
    """Add ``decent network`` to ``app``."""
    app.command()(network)
