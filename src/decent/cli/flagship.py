"""``decent flagship``: the reduced scaling study, the README's first command.

The spec is ``configs/studies/flagship.toml`` (:func:`decent.studies.scaling.flagship_spec`
is the same spec built in, so the command works from any directory).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from decent.cli._common import console, study_run, study_spec


def flagship(
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    config: Path | None = typer.Option(None, help="A scaling spec (default: the built-in one)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
) -> None:
    """Run the flagship: D-SGD vs DAT-SGD as M grows at a fixed sample budget.

    Example: decent flagship --out results
    """
    from decent.cli.scaling import render, render_critical
    from decent.studies import scaling as sc

    spec = study_spec(sc.ScalingSpec, config, workers, sc.flagship_spec)
    labels = spec.labels()
    n = spec.budgets[-1]
    console.print(
        f"[bold]decent flagship[/]: {', '.join(labels[m.name] for m in spec.methods)} on "
        f"{' and '.join(spec.topologies)} for M = 1 .. {max(spec.machines(n, spec.methods[0]))} "
        f"machines at a fixed budget of N = {n} samples (T = N / M rounds), streaming least "
        f"squares (d = {spec.task.get('dim')}, node-specific Hessians and optima), "
        f"{len(spec.seeds)} seeds; step size and output averaging tuned per cell on seed "
        f"{spec.tune_seed}."
    )
    folder = out / spec.study
    with study_run(out):  # a failed run or Ctrl-C: one line, nothing lost
        result = sc.run(spec, out, folder=folder, progress=progress)
    wide = Console(width=max(console.width, 120), highlight=False)
    wide.print(render(sc.headline(spec, result), labels))
    wide.print(render_critical(result.critical, result.slopes, labels, spec))
    sc.write_report(spec, result, folder)
    console.print(f"wall time {result.wall_s:.0f} s; store: {out / 'decent.sqlite'}")
    console.print(f"figures: {folder / 'error_vs_m.png'}, {folder / 'penalty_vs_m.png'}")
    console.print(f"[bold]report: {folder / 'report.html'}[/]")


def register(app: typer.Typer) -> None:
    """Add ``decent flagship`` to ``app``."""
    app.command()(flagship)
