"""``decent robustness``: compressed gossip, differential privacy and Byzantine nodes
(:mod:`decent.studies.robustness`)."""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import console, fail, os_error_text


def robustness(
    config: Path | None = typer.Argument(
        None, help="A study spec (TOML; default configs/studies/robustness.toml's values)."
    ),
    out: Path = typer.Option(Path("results"), help="Results directory (store + figures)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    workers: int | None = typer.Option(None, min=1, help="Worker processes (default: cores)."),
) -> None:
    """Accuracy vs bytes (compressed gossip), vs epsilon (DP-SGD), vs Byzantine nodes.

    Example: decent robustness configs/studies/robustness.toml --out results
    """
    import dataclasses

    from decent.studies import robustness as rs

    try:
        spec = rs.load_spec(config) if config is not None else rs.RobustnessSpec()
    except rs.RobustnessSpecError as err:
        console.print(f"[red]invalid study spec[/]: {err}")
        raise typer.Exit(2) from None
    except OSError as err:  # a CONFIG path that is missing, a folder or unreadable
        raise fail(f"invalid study spec: {os_error_text(err)}") from None
    if workers is not None:
        spec = dataclasses.replace(spec, workers=workers)
    console.print(
        f"[bold]decent robustness[/]: {', '.join(rs.LABELS[m] for m in spec.methods)} on "
        f"{spec.topology}({spec.nodes}) with {', '.join(spec.compressors)}; DP-SGD with noise "
        f"multipliers {list(spec.noise_multipliers)}; Byzantine fractions "
        f"{list(spec.byzantine_fractions)} on {spec.byzantine_topology}({spec.nodes}) under "
        f"{', '.join(spec.attacks)}; tasks {', '.join(spec.tasks)}; {len(spec.seeds)} seeds."
    )
    result = rs.run(spec, out, progress=progress)
    folder = out / rs.STUDY
    console.print(f"wall time {result.wall_s:.0f} s; store: {out / 'decent.sqlite'}")
    console.print(f"[bold]tables and figures: {folder} (tables.md)[/]")


def register(app: typer.Typer) -> None:
    """Add ``decent robustness`` to ``app``."""
    app.command()(robustness)
