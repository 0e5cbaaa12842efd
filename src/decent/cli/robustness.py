"""``decent robustness``: compressed gossip, differential privacy and Byzantine nodes
(:mod:`decent.studies.robustness`)."""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import console, study_run, study_spec


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
    from decent.studies import _kit as kit
    from decent.studies import robustness as rs

    spec = study_spec(rs.RobustnessSpec, config, workers)
    console.print(
        f"[bold]decent robustness[/]: {', '.join(kit.label(m) for m in spec.methods)} on "
        f"{spec.topology}({spec.nodes}) with {', '.join(spec.compressors)}; DP-SGD with noise "
        f"multipliers {list(spec.noise_multipliers)}; Byzantine fractions "
        f"{list(spec.byzantine_fractions)} on {spec.byzantine_topology}({spec.nodes}) under "
        f"{', '.join(spec.attacks)}; tasks {', '.join(spec.tasks)}; {len(spec.seeds)} seeds."
    )
    with study_run(out):  # a failed run or Ctrl-C: one line, nothing lost
        result = rs.run(spec, out, progress=progress)
    console.print(f"wall time {result.wall_s:.0f} s; store: {out / 'decent.sqlite'}")
    console.print(f"[bold]tables and figures: {out / rs.STUDY} (tables.md)[/]")


def register(app: typer.Typer) -> None:
    """Add ``decent robustness`` to ``app``."""
    app.command()(robustness)
