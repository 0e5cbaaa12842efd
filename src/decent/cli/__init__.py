"""The ``decent`` command line (typer).

Each command lives in its own module of this package with a ``register(app)`` function;
:data:`COMMAND_MODULES` lists them in help order. To add a command, write
``src/decent/cli/<name>.py`` with ``def register(app: typer.Typer) -> None`` (decorate your
function with ``app.command(...)`` there) and add ``"<name>"`` to the tuple. A listed module
that does not exist yet is skipped, so ``launch`` can land independently.
"""

from __future__ import annotations

import importlib
import importlib.util

import typer

from decent.cli._common import EPILOG, console, show_warnings_as_lines

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
    "config_docs",
)
"""Command modules under ``decent.cli``, registered in this order."""

app = typer.Typer(
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


def _register_all() -> None:
    for name in COMMAND_MODULES:
        full = f"{__name__}.{name}"
        if importlib.util.find_spec(full) is None:
            continue
        importlib.import_module(full).register(app)


_register_all()

from decent.cli.compare import render_summary  # noqa: E402  (kept for compatibility)

__all__ = ["COMMAND_MODULES", "app", "console", "render_summary"]

if __name__ == "__main__":  # pragma: no cover
    app()
