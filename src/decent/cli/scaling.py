"""``decent scaling``: the scaling study (see :mod:`decent.studies.scaling`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from decent.cli._common import console, study_run, study_spec

if TYPE_CHECKING:
    from decent.studies.scaling import ScalingResult, ScalingSpec


def scaling(
    config: Path = typer.Argument(
        Path("configs/studies/scaling.toml"), help="The study spec (TOML)."
    ),
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    folder: Path | None = typer.Option(None, help="Tables and figures (default OUT/<study>)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
) -> None:
    """Run a scaling study: M* per method and graph at fixed sample budgets.

    Example: decent scaling configs/studies/scaling.toml --out results
    """
    from decent.studies import scaling as sc

    spec = study_spec(sc.ScalingSpec, config, workers)
    labels = spec.labels()
    console.print(
        f"[bold]decent scaling[/] {config}: {', '.join(labels[m.name] for m in spec.methods)} "
        f"on {', '.join(spec.topologies)}; N in {spec.budgets}, M up to {spec.max_machines}, "
        f"{len(sc.cells(spec))} cells x {len(spec.seeds)} seeds, step sizes tuned on seeds "
        f"{', '.join(map(str, spec.tune_seeds))}."
    )
    where = folder or out / spec.study
    run_and_show(spec, out, where, progress)
    console.print(f"[bold]tables and figures: {where}[/]")


def run_and_show(spec: ScalingSpec, out: Path, folder: Path, progress: bool) -> None:
    """Run a scaling study into ``out`` and ``folder``, print its headline and M* tables,
    and write its HTML report (``decent scaling`` and ``decent flagship``)."""
    from decent.studies import scaling as sc

    with study_run(out):  # a failed run or Ctrl-C: one line, nothing lost
        result = sc.run(spec, out, folder=folder, progress=progress)
    wide = Console(width=max(console.width, 120), highlight=False)
    wide.print(render(sc.headline(spec, result), spec.labels()))
    wide.print(render_critical(spec, result))
    sc.write_report(spec, result, folder)
    console.print(f"wall time {result.wall_s:.0f} s; store: {out / 'decent.sqlite'}")


def render(table, labels: dict[str, str]) -> Table:  # type: ignore[no-untyped-def]
    """The headline table: error, vs reference, penalty vs complete, worst node, bytes."""
    n = int(table["N"].iloc[0]) if len(table) else 0
    out = Table(title=f"N = {n}: final f(x) - f*, mean ± 95% CI over seeds")
    for col in (
        "M",
        "topology",
        "method",
        "f(x) - f*",
        "/ reference",
        "/ complete",
        "worst node (last iterate)",
        "KiB/node",
    ):
        out.add_column(col, justify="left" if col in ("topology", "method") else "right")
    for _, r in table.iterrows():
        out.add_row(
            str(int(r["M"])),
            str(r["topology"]),
            labels.get(str(r["method"]), str(r["method"])),
            f"{r['error']:.3e} ± {r['ci']:.0e}",
            f"{r['vs_reference']:.2f}",
            f"{r['penalty_vs_complete']:.2f}",
            f"{r['worst_node']:.2e}",
            f"{r['bytes_per_node'] / 1024:.0f}",
        )
    return out


def render_critical(spec: ScalingSpec, result: ScalingResult) -> Table:
    """M* per (method, topology) and budget, with the fitted exponent and the theory's
    (:func:`decent.studies.scaling.m_star_table`)."""
    from decent.studies.scaling import m_star_table

    out = Table(
        title=f"M*: the largest M within (1 + {spec.delta:g}) x the best single-machine error"
    )
    table = m_star_table(spec, result.critical, result.slopes, below="none")
    for col in table.columns:
        name = {"graph": "topology"}.get(col, col.replace("N = ", "N="))
        out.add_column(name, justify="left" if col in ("method", "graph") else "right")
    for row in table.itertuples(index=False):
        out.add_row(*row)
    out.caption = "+: every M of the grid passes (M* is at least this); none: the smallest M fails."
    return out


def register(app: typer.Typer) -> None:
    """Add ``decent scaling`` to ``app``."""
    app.command()(scaling)
