"""``decent launch --nproc N CONFIG``: a local multi-process run (no torchrun agent)."""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import (
    INTERRUPTED_RUN,
    console,
    err_console,
    interrupted_as,
    out_option,
    set_option,
    summary_table,
    user_errors,
)

LAUNCH_HELP = """Run one experiment on N local processes (torch.distributed, gloo, 127.0.0.1 only).

\b
Each rank holds a block of nodes and talks only to the ranks of its graph neighbours; the
metrics are global (collectives) and rank 0 records the run in the same store as `decent
run`, with backend = "dist" and the world size in its config.

\b
Examples:
  decent launch --nproc 4 configs/dsgd.toml
  decent launch --nproc 2 configs/dat_sgd.toml --set rounds=200 --out my-results
  decent launch --nproc 4 configs/dsgd.toml --mode overlap          # one-step-stale mixing
  decent launch --nproc 4 configs/dsgd.toml --mode stale --staleness 3
  decent launch --nproc 4 configs/dsgd.toml --mode fault_tolerant  # a dead rank is dropped
  decent launch --nproc 8 train.py -- --lr 0.1     # your own script; its arguments after --
  decent launch --nproc 4 train.py --mode fault_tolerant   # its survivors of a dead rank go on

Several machines: see docs/distributed.md (torchrun --nnodes, --rdzv-endpoint).
"""


def launch(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="Experiment config (TOML).", show_default=False),
    nproc: int = typer.Option(..., "--nproc", "-n", help="Number of local processes (ranks)."),
    set_: list[str] = set_option(),
    out: Path = out_option(),
    study: str | None = typer.Option(None, "--study", help="Study name (default: config's)."),
    mode: str | None = typer.Option(
        None,
        "--mode",
        help="sync | overlap | stale | fault_tolerant (docs/distributed.md); "
        "default: [dist] mode, else sync.",
    ),
    staleness: int | None = typer.Option(
        None, "--staleness", help="Bound in rounds of --mode stale (default: [dist], else 2)."
    ),
    failure_timeout: float | None = typer.Option(
        None,
        "--failure-timeout",
        help="Seconds to declare a silent rank dead (default: [dist], else 10).",
    ),
    port: int | None = typer.Option(
        None, "--port", help="Rendezvous port on 127.0.0.1 (default: a free one)."
    ),
    force: bool = typer.Option(False, "--force", help="Run again even if already finished."),
) -> None:
    from decent.results import Store, resolve_db_path, store_timeout
    from decent.run.distributed.launch import launch as _launch

    with interrupted_as(INTERRUPTED_RUN), user_errors():
        store_timeout()  # a bad DECENT_STORE_TIMEOUT is one line here, not one per rank
        proc = _launch(
            nproc,
            config,
            script_args=ctx.args,
            overrides=set_,
            out=out,
            port=port,
            mode=mode,
            staleness=staleness,
            failure_timeout=failure_timeout,
            study=study,
            force=force,
        )
    for rank in proc.left:
        err_console.print(f"decent launch: {rank.describe()}", markup=False)
    survivors = len(proc.survivors)
    status = None
    if proc.run_id is not None and resolve_db_path(out).is_file():
        with Store(out) as store:
            final = store.final_values(proc.run_id)
            status = store.status(proc.run_id)
        if final:
            console.print(
                summary_table(f"{study or 'run'} dist x{nproc} {proc.mode} [{status}]", final)
            )
    if proc.returncode != 0:
        recorded = f"; the run is recorded '{status}'" if status else ""
        err_console.print(
            f"decent launch: the ranks exited with code {proc.returncode} "
            f"({survivors} of {nproc} ranks finished){recorded}",
            markup=False,
        )
        raise typer.Exit(2 if proc.returncode == 2 else 1)
    console.print(f"launch finished: {proc.summary()} (mode {proc.mode}), results in {out}")


def register(app: typer.Typer) -> None:
    """Add ``decent launch`` to ``app``."""
    app.command("launch", help=LAUNCH_HELP, context_settings={"allow_extra_args": True})(launch)
