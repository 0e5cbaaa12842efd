"""``decent deep``: the deep-learning study of issue 29 (:mod:`decent.studies.deep`)."""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import console, study_run, study_spec


def deep(
    config: Path | None = typer.Argument(
        None, help="A study spec (TOML; default configs/studies/deep.toml's values)."
    ),
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
    folder: Path | None = typer.Option(
        None, help="Tables and figures (default OUT/<the spec file's name>, or OUT/deep)."
    ),
) -> None:
    """Neural networks on graphs: test accuracy per method, graph, M and Dirichlet alpha.

    Example: decent deep configs/studies/deep_quick.toml --out results
    """
    from decent.studies import _kit as kit
    from decent.studies import deep as ds

    spec = study_spec(ds.DeepSpec, config, workers)
    with study_run(out):
        console.print(
            f"[bold]decent deep[/]: {', '.join(kit.label(m, role='centralized') for m in spec.methods)} "
            f"on {', '.join(spec.tasks)}; graphs {', '.join(spec.topologies)} and complete; "
            f"M in {list(spec.num_nodes)}; Dirichlet alpha in {list(spec.alphas)}; "
            f"{len(spec.cells())} cells, step tuned on seed {spec.tune_seed}, seeds {list(spec.seeds)}."
        )
        # one folder per spec: two specs sharing a store do not overwrite each other's tables
        where = folder or out / (config.stem if config is not None else ds.STUDY)
        ds.run(spec, out, folder=where, progress=progress)
    console.print(f"store: {out / 'decent.sqlite'}")
    console.print(f"[bold]table and figures: {where}[/]")


def register(app: typer.Typer) -> None:
    """Add ``decent deep`` to ``app``."""
    app.command()(deep)
