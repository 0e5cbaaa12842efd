"""``decent flagship``: the reduced scaling study, the README's first command.

The spec is ``configs/studies/flagship.toml`` (:func:`decent.studies.scaling.flagship_spec`
is the same spec built in, so the command works from any directory).
"""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import console, study_spec


def flagship(
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    config: Path | None = typer.Option(None, help="A scaling spec (default: the built-in one)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
) -> None:
    """Run the flagship: D-SGD vs DAT-SGD as M grows at a fixed sample budget.

    Example: decent flagship --out results
    """
    from decent.cli.scaling import run_and_show
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
        f"{', '.join(map(str, spec.tune_seeds))}."
    )
    folder = out / spec.study
    run_and_show(spec, out, folder, progress)
    console.print(f"figures: {folder / 'error_vs_m.png'}, {folder / 'penalty_vs_m.png'}")
    console.print(f"[bold]report: {folder / 'report.html'}[/]")


def register(app: typer.Typer) -> None:
    """Add ``decent flagship`` to ``app``."""
    app.command()(flagship)
