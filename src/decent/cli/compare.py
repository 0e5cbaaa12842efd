"""``decent compare``: every method at one network size, tuned (:mod:`decent.studies.compare`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from decent.cli._common import console, study_run


def compare(
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    rounds: int = typer.Option(2000, min=10, help="Rounds T per run."),
    num_nodes: int = typer.Option(64, min=2, help="Nodes per topology."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
) -> None:
    """Compare DAT-SGD, D-SGD, gradient tracking and minibatch SGD at one network size.

    Example: decent compare --out results
    """
    from decent.studies import _kit as kit
    from decent.studies import compare as fs

    spec = fs.CompareSpec(
        rounds=rounds, num_nodes=num_nodes, eval_every=max(1, rounds // 40), workers=workers
    )
    console.print(
        f"[bold]decent compare[/]: {', '.join(kit.label(m, role='centralized') for m in spec.methods)} on "
        f"{' and '.join(spec.topologies)} of {spec.num_nodes} nodes, streaming logistic regression "
        f"(d={spec.dim}, heterogeneity={spec.heterogeneity}, batch {spec.batch_size}), "
        f"T={spec.rounds}, seeds {list(spec.seeds)}; step sizes tuned on seed {spec.tune_seed}."
    )
    with study_run(out):  # a failed run or Ctrl-C: one line, nothing lost
        table = fs.run(out, spec, progress=progress)
    # at least 112 columns, so the table does not wrap in logs (rich assumes 80 off a TTY)
    Console(width=max(console.width, 112), highlight=False).print(
        render_summary(table, rounds=spec.rounds)
    )
    console.print(f"store: {out / 'decent.sqlite'}")
    console.print(f"figure: {out / 'compare' / 'convergence.png'}")
    console.print(f"[bold]report: {out / 'compare' / 'report.html'}[/]")


def render_summary(  # type: ignore[no-untyped-def]
    table, labels: dict[str, str] | None = None, rounds: int | None = None
) -> Table:
    """A rich table of final metrics (mean ± std over seeds); method names (unless
    ``labels`` names them) and whether a step is shown as ``gamma = lr * T`` come from the
    algorithm classes."""
    from decent.studies import _kit as kit

    out = Table(
        title="final metrics, mean ± std over seeds",
        caption="(C) = centralized reference (exact all-reduce). Anytime methods: gamma = lr * T.",
    )
    for col in ("topology", "method", "step", "f(x̄) - f*", "worst node", "consensus", "KiB/node"):
        out.add_column(col, justify="left" if col in ("topology", "method") else "right")
    for _, r in table.iterrows():
        method = str(r["method"])
        step = f"{r['lr']:.3g}"
        if rounds and kit.horizon_scaled(method):
            step = f"gamma={r['lr'] * rounds:.3g}"
        out.add_row(
            str(r["topology"]),
            (labels or {}).get(method) or kit.label(method, role="short"),
            step,
            f"{r['subopt']:.3e} ± {r['subopt_std']:.0e}",
            f"{r.get('subopt_worst_node', float('nan')):.2e}",
            f"{r['consensus_dist2']:.1e}",
            f"{r['bytes_per_node'] / 1024:.0f}",
        )
    return out


def register(app: typer.Typer) -> None:
    """Add ``decent compare`` to ``app``."""
    app.command()(compare)
