"""``decent run CONFIG``: one run with a progress bar and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from decent.cli._common import (
    INTERRUPTED_RUN,
    console,
    err_console,
    fail,
    interrupted_as,
    mlflow_option,
    out_option,
    set_option,
    sigterm_as_interrupt,
    summary_table,
    tensorboard_option,
    user_errors,
)

RUN_HELP = """Run one experiment from a TOML config and record it in the results store.

\b
Examples:
  decent run configs/dat_sgd.toml
  decent run configs/dsgd.toml --set algorithm.lr=0.05 --set topology.num_nodes=64
  decent run configs/digits_dirichlet.toml --set task.partition.alpha=1.0 --out my-results
  decent run configs/flagship.toml --set rounds=200     # the base point of a sweep config
  decent run configs/dsgd.toml --tensorboard runs/tb --mlflow mlruns   # also log to these

A run whose resolved config is already finished in the store is not repeated (its stored
result is shown); pass --force to run it again.
"""


def describe(config: Any) -> str:
    """One start-up line summarizing the resolved config."""
    t, a, k = config.topology, config.algorithm, config.task
    lr = a.lr if isinstance(a.lr, float) else a.lr.model_dump(exclude_defaults=True)
    line = (
        f"[bold]{config.study}[/]: {a.method} (lr={lr}) on {t.kind} with n={t.num_nodes}, "
        f"task {k.kind}, T={config.rounds}, seed={config.seed}, {config.dtype}"
    )
    p = getattr(config, "privacy", None)
    if p is not None:
        line += (
            f", DP-SGD (clip={p.clip:g}, noise_multiplier={p.noise_multiplier:g}, "
            f"delta={p.delta:g}, {p.accountant})"
        )
    return line


def run(
    config: Path = typer.Argument(..., help="Experiment config (TOML).", show_default=False),
    set_: list[str] = set_option(),
    out: Path = out_option(),
    study: str | None = typer.Option(None, "--study", help="Study name (default: config's)."),
    force: bool = typer.Option(False, "--force", help="Run again even if already finished."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    tensorboard: Path | None = tensorboard_option(),
    mlflow: str | None = mlflow_option(),
) -> None:
    from decent.config import build, load_config
    from decent.engine import ProgressBar
    from decent.results import Store, StoreError, run_id_for
    from decent.results._errors import os_error_text
    from decent.run import faults, run_config, run_label
    from decent.run.resources import check as check_resources
    from decent.run.resources import check_config as check_config_resources

    with user_errors():
        cfg = load_config(config, set_, study=study)
        if cfg.sweep is not None:
            console.print(
                "(this config has a \\[sweep] section: running its base point; "
                "`decent sweep` runs the grid)"
            )
        console.print(describe(cfg))
        sinks: list[Any] = []
        if tensorboard is not None or mlflow is not None:
            from decent.run.sinks import make_sinks

            sinks = make_sinks(  # a missing extra fails here, before the store is touched
                tensorboard,
                mlflow,
                run_name=run_label(cfg),
                config=cfg.run_dict(),
                experiment=cfg.study,
            )
        store = Store(out)
        store.mark_stale(cfg.study)  # runs left "running" by killed processes
        experiment = None
        if force or not store.is_finished(run_id_for(cfg.study, cfg.run_dict())):
            check_config_resources(cfg)
            experiment = build(cfg)  # rules the builders check fail here with exit code 2
            check_resources(
                experiment.algorithm,
                experiment.task,
                experiment.comm,
                per_node_eval=cfg.per_node_eval,
            )
    try:
        with store, interrupted_as(INTERRUPTED_RUN), sigterm_as_interrupt():
            outcome = run_config(
                cfg,
                store,
                experiment=experiment,
                force=force,
                callbacks=[ProgressBar(disable=not progress), *sinks, *faults.from_env()],
            )
    except (StoreError, OSError) as err:  # a full disk, an unwritable sink: one line
        if isinstance(err, BrokenPipeError):
            raise
        raise fail(f"error: {err if isinstance(err, StoreError) else os_error_text(err)}") from None
    if outcome.status == "skipped":
        console.print(
            f"already finished in {store.path} (run {outcome.run_id}); "
            "showing the stored result (--force to run again)"
        )
    elif outcome.status != "finished":
        message = outcome.message or ""
        if not message.startswith(f"run {outcome.status}"):
            message = f"run {outcome.status}: {message}"
        err_console.print(message, markup=False)
    console.print(summary_table(f"{outcome.label} [{outcome.status}]", outcome.final))
    console.print(f"store: {store.path}  run id: {outcome.run_id}  study: {cfg.study}")
    if outcome.status not in ("finished", "skipped"):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``decent run`` to ``app``."""
    app.command("run", help=RUN_HELP)(run)
