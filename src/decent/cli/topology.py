"""``decent topology KIND --n N``: describe a topology and draw it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from decent.cli._common import console, fail, set_option, user_errors
from decent.config._models import Section, TopologyConfig

TOPOLOGY_HELP = """Print a topology's spectral gap, degrees and diameter, and draw it to PNG.

\b
Examples:
  decent topology ring --n 16
  decent topology torus --n 64 --png torus.png
  decent topology erdos_renyi --n 32 --set p=0.2 --set seed=1
  decent topology exponential --n 16 --set weights=uniform --set lazy=0.5
  decent topology edge_dropout --n 16 --set p=0.3 --set base=ring

KIND and the --set fields are those of the [topology] section (docs/config.md).
"""


def topology(
    kind: str = typer.Argument(..., help="Topology kind: ring, torus, exponential, ..."),
    n: int = typer.Option(..., "--n", "-n", help="Number of nodes."),
    set_: list[str] = set_option(),
    png: Path | None = typer.Option(None, "--png", help="Drawing (default: KIND-nN.png)."),
    draw: bool = typer.Option(True, help="Draw the graph to PNG."),
) -> None:
    from pydantic import ValidationError

    from decent.config import ConfigError, apply_overrides, build_topology
    from decent.config._errors import issues_from_validation

    if n > MAX_NODES:
        raise fail(
            f"error: --n {n} is more nodes than decent topology handles (at most "
            f"{MAX_NODES:,}: W is held in memory); pick a smaller --n"
        )
    with user_errors():
        raw = apply_overrides(
            {"topology": {"kind": kind, "num_nodes": n}}, [f"topology.{item}" for item in set_]
        )
        try:
            section = TopologyOnly.model_validate(raw).topology
        except ValidationError as err:
            issues = issues_from_validation(err, TopologyOnly, raw)
            raise ConfigError([_retarget(i) for i in issues]) from None
        topo = build_topology(section)
        large = n > DIAMETER_LIMIT and "diameter" in type(topo).__dict__
        if large:  # all-pairs BFS is O(n^2): a million-node ring would never finish
            topo.__dict__["diameter"] = None  # the cached property, left uncomputed
        info: dict[str, Any] = topo.describe() if hasattr(topo, "describe") else {}
        if large:
            info["diameter"] = f"not computed (n > {DIAMETER_LIMIT})"
        table = Table(title=str(getattr(topo, "name", kind)))
        table.add_column("property")
        table.add_column("value", justify="right")
        for key, value in info.items():
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            table.add_row(key, text)
        console.print(table)
        if draw:
            from decent.report import draw_topology

            target = png or Path(f"{kind}-n{n}.png")
            graph = getattr(topo, "graph", None)
            if graph is None:  # time-varying: draw W_1
                graph = topo.weights(1).dense()
                console.print("(time-varying: drawing the graph of round t = 1)")
            console.print(f"drawing: {draw_topology(graph, target)}")


MAX_NODES = 10_000_000
"""The largest ``--n`` of ``decent topology`` (a ring of 10^7 nodes takes about 1 GiB)."""

DIAMETER_LIMIT = 20_000
"""Above this many nodes ``decent topology`` does not compute the hop diameter."""


class TopologyOnly(Section):
    """A document holding only a ``[topology]`` section."""

    topology: TopologyConfig


def _retarget(issue: Any) -> Any:
    from decent.config import Issue

    path = issue.path.removeprefix("topology").lstrip(".")
    if path == "num_nodes":
        path = "--n"
    elif path == "kind":
        path = "KIND"
    else:
        path = f"--set {path}" if path else "topology"
    return Issue(path, issue.value, issue.rule)


def register(app: typer.Typer) -> None:
    """Add ``decent topology`` to ``app``."""
    app.command("topology", help=TOPOLOGY_HELP)(topology)
