"""The ``decent`` command line (typer).

Each command lives in its own module of this package with a ``register(app)`` function;
:data:`COMMAND_MODULES` lists them in help order. To add a command, write
``src/decent/cli/<name>.py`` with ``def register(app: typer.Typer) -> None`` (decorate your
function with ``app.command(...)`` there) and add ``"<name>"`` to the tuple.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from decent.cli._common import (
    EPILOG,
    console,
    refuse_control_characters,
    show_warnings_as_lines,
)

COMMAND_MODULES: tuple[str, ...] = (
    "run",
    "sweep",
    "report",
    "topology",
    "launch",
    "flagship",
    "scaling",
    "compare",
    "network",
    "robustness",
    "deep",
    "config_docs",
)
"""Command modules under ``decent.cli``, registered in this order."""


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file (a test runner)
        pass


class _Commands(TyperGroup):
    """The command group; refuses control characters in the arguments before parsing."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        refuse_control_characters(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a reader that closed the pipe (``decent run ... | head -1``)
        ends it quietly with code 0: the work is done (a run is stored), only the rest of
        the output had nowhere to go."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(0) from None


app = typer.Typer(
    cls=_Commands,
    name="decent",
    help=(
        "Decentralized, distributed and asynchronous training: DAT-SGD and its peers.\n\n"
        "\b\n"
        "Examples:\n"
        "  decent run configs/dat_sgd.toml                      # one run, progress bar, summary\n"
        "  decent run configs/dsgd.toml --set algorithm.lr=0.05 --set topology.num_nodes=64\n"
        "  decent sweep configs/compare.toml --workers 2        # a grid, resumable\n"
        "  decent report compare                                # HTML report of a study\n"
        "  decent topology torus --n 64 --png torus.png         # spectral gap, degree, drawing\n"
        "  decent export compare --format csv\n"
        "  decent flagship                                      # the reduced scaling study\n"
        "  decent scaling configs/studies/scaling.toml          # the full scaling study"
    ),
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """decent: decentralized training on a simulator or torch.distributed."""
    show_warnings_as_lines()


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)

from decent.cli.compare import render_summary  # noqa: E402  (kept for compatibility)

__all__ = ["COMMAND_MODULES", "app", "console", "render_summary"]

if __name__ == "__main__":  # pragma: no cover
    app()
