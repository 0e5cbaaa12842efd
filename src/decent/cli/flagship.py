"""``decent flagship``: the tuned flagship study (see :mod:`decent.flagship`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from decent.cli._common import console


def flagship(
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    rounds: int = typer.Option(2000, min=10, help="Rounds T per run."),
    num_nodes: int = typer.Option(64, min=2, help="Nodes per topology."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run the flagship study: DAT-SGD vs D-SGD vs gradient tracking vs minibatch SGD.

    Example: decent flagship --out results
    """
    from decent import flagship as fs

    spec = fs.FlagshipSpec(rounds=rounds, num_nodes=num_nodes, eval_every=max(1, rounds // 40))
    console.print(
        f"[bold]decent flagship[/]: {', '.join(fs.METHOD_LABELS[m] for m in spec.methods)} on "
        f"{' and '.join(spec.topologies)} of {spec.num_nodes} nodes, streaming least squares "
        f"(d={spec.dim}, noise={spec.noise}, heterogeneity={spec.heterogeneity}), "
        f"T={spec.rounds}, seeds {list(spec.seeds)}; step sizes tuned on seed {spec.tune_seed}."
    )
    table = fs.run(out, spec, progress=progress)
    console.print(render_summary(table, fs.METHOD_LABELS))
    console.print(f"store: {out / 'decent.sqlite'}")
    console.print(f"figure: {out / 'flagship' / 'convergence.png'}")


def render_summary(table, labels: dict[str, str]) -> Table:  # type: ignore[no-untyped-def]
    """A rich table of final metrics (mean ± std over seeds)."""
    out = Table(title="final metrics (mean ± std over seeds)")
    for col in (
        "topology",
        "method",
        "lr",
        "f(x̄) - f*",
        "worst node f - f*",
        "consensus dist²",
        "KiB sent / node",
    ):
        out.add_column(col, justify="left" if col in ("topology", "method") else "right")
    for _, r in table.iterrows():
        out.add_row(
            str(r["topology"]),
            labels.get(str(r["method"]), str(r["method"])),
            f"{r['lr']:.3g}",
            f"{r['subopt']:.3e} ± {r['subopt_std']:.1e}",
            f"{r.get('subopt_worst_node', float('nan')):.3e}",
            f"{r['consensus_dist2']:.2e}",
            f"{r['bytes_per_node'] / 1024:.0f}",
        )
    return out


def register(app: typer.Typer) -> None:
    """Add ``decent flagship`` to ``app``."""
    app.command()(flagship)
