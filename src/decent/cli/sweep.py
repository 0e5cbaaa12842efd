"""``decent sweep CONFIG``: run a config's grid in parallel workers, resumably."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from decent._names import shown
from decent.cli._common import (
    INTERRUPTED,
    console,
    fail,
    mlflow_option,
    out_option,
    resume_hint,
    set_option,
    sigterm_as_interrupt,
    tensorboard_option,
    user_errors,
)

SWEEP_HELP = """Run every point of a config's [sweep] grid (x seeds) into the results store.

\b
Examples:
  decent sweep configs/flagship.toml                     # workers = number of cores
  decent sweep configs/flagship.toml --workers 2 --set rounds=500
  decent sweep configs/dsgd.toml --set 'sweep.grid."algorithm.lr"=[0.1, 0.05]' --set 'sweep.seeds=[0, 1]'
  decent sweep configs/flagship.toml --tensorboard runs/tb --mlflow mlruns   # also log there
  decent sweep configs/flagship.toml --replicas 1        # one process per run, no batching

Points that differ only in seed, step size or task scalars run together as one replica
batch (one stacked tensor; each replica recorded as its own run). Each run is committed
to the store the moment it ends. Rerunning the same command skips
finished runs and redoes unfinished ones; Ctrl-C stops the workers cleanly (their runs are
marked interrupted, nothing finished is lost). Then: decent report STUDY.
"""


def sweep(
    config: Path = typer.Argument(..., help="Experiment config (TOML) with a [sweep] section."),
    set_: list[str] = set_option(),
    out: Path = out_option(),
    workers: int | None = typer.Option(
        None, "--workers", "-w", min=1, help="Worker processes (default: number of cores)."
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default: config's)."),
    replicas: int | None = typer.Option(
        None,
        "--replicas",
        "-r",
        min=1,
        help=(
            "Most runs per replica batch: points that differ only in seed, step size or "
            "task scalars run as one stacked tensor (default 64; 1: one process per run)."
        ),
    ),
    progress: bool = typer.Option(True, help="Show the overall progress bar."),
    tensorboard: Path | None = tensorboard_option(),
    mlflow: str | None = mlflow_option(),
) -> None:
    from decent.config import expand, load_config
    from decent.run import RunOutcome, default_workers, run_sweep

    with user_errors():
        cfg = load_config(config, set_, study=study)
        points = expand(cfg)
    n = workers or default_workers()
    console.print(f"[bold]sweep {cfg.study}[/]: {len(points)} runs, {n} workers, store {out}")
    if cfg.sweep is None:
        console.print("(no \\[sweep] section: one run)")

    def report(outcome: RunOutcome) -> None:
        if outcome.status == "skipped":
            return
        mark = {"finished": "done", "diverged": "DIVERGED", "failed": "FAILED"}.get(
            outcome.status, outcome.status
        )
        from tqdm.auto import tqdm

        tqdm.write(f"{mark:>8}  {shown(outcome.label)}  {outcome.headline()}")
        if outcome.status == "failed" and outcome.message:
            tqdm.write("          " + shown(outcome.message.strip().splitlines()[-1]))

    with user_errors(), sigterm_as_interrupt():
        summary = run_sweep(
            cfg,
            out,
            workers=workers,
            progress=progress,
            on_done=report,
            tensorboard=tensorboard,
            mlflow=mlflow,
            replicas=replicas,
        )
    table = Table(title=shown(f"sweep {cfg.study}"))
    columns = {"finished": "finished", "diverged": "diverged", "skipped": "skipped (already done)"}
    columns |= {"failed": "failed", "interrupted": "not run"}
    for col in columns.values():
        table.add_column(col, justify="right")
    table.add_row(*(str(summary.count(status)) for status in columns))
    console.print(table)
    if summary.interrupted:
        raise fail(resume_hint(out), INTERRUPTED)
    console.print(f"next: decent report {cfg.study} --out {out}")
    if not summary.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``decent sweep`` to ``app``."""
    app.command("sweep", help=SWEEP_HELP)(sweep)
