"""Shared pieces of the CLI: consoles, options, and turning user mistakes into exit code 2."""

from __future__ import annotations

import contextlib
import math
import signal
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decent._names import shown

if TYPE_CHECKING:
    from decent.studies._kit import Spec

S = TypeVar("S", bound="Spec")


class _Terminal(Console):
    """A console that never passes a control character of user text to the terminal.

    Every string printed goes through :func:`decent._names.shown` (newlines kept); table
    cells are made with :func:`shown` by the commands that build them.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().print(
            *(shown(o, keep_newlines=True) if isinstance(o, str) else o for o in objects),
            **kwargs,
        )

    def on_broken_pipe(self) -> None:
        """The reader closed the pipe (``| head``): end quietly (see ``decent.cli``)."""
        self.quiet = True
        raise BrokenPipeError


console = _Terminal(highlight=False, soft_wrap=True)
err_console = _Terminal(stderr=True, highlight=False, soft_wrap=True)


def refuse_control_characters(args: Sequence[str]) -> None:
    """Refuse command-line arguments holding control characters (ESC, newlines, ...).

    None has a use there, and echoed in a message they would reach the terminal raw.

    Raises:
        typer.Exit: code 2 after one line naming the argument.
    """
    for arg in args:
        if any(not ch.isprintable() for ch in arg):
            raise fail(
                f"error: the argument '{shown(arg)}' holds a control character; arguments "
                "are plain text: remove it"
            )


EPILOG = "Docs: docs/concepts.md, docs/config.md (every config field), docs/results.md."

USER_ERROR = 2
INTERRUPTED = 130
INTERRUPTED_RUN = "interrupted: the run is marked 'interrupted' in the store"

SET_HELP = (
    "Override a config field, e.g. --set algorithm.lr=0.05 --set topology.num_nodes=64 "
    "(value read as TOML; repeatable)."
)
OUT_HELP = "Results directory (holds decent.sqlite)."


def set_option() -> list[str]:
    """The repeatable ``--set KEY=VALUE`` option."""
    return typer.Option([], "--set", "-s", help=SET_HELP, metavar="KEY=VALUE")


def out_option() -> Path:
    """The ``--out`` results directory option."""
    return typer.Option(Path("results"), "--out", "-o", help=OUT_HELP)


TENSORBOARD_HELP = "Also write TensorBoard event files under DIR (needs decent[tensorboard])."
MLFLOW_HELP = (
    "Also log to MLflow at URI: a directory (file store, no server) or a server/database URI "
    "(needs decent[mlflow]); the study is the MLflow experiment."
)


def tensorboard_option() -> Path | None:
    """The ``--tensorboard DIR`` sink option."""
    return typer.Option(None, "--tensorboard", metavar="DIR", help=TENSORBOARD_HELP)


def mlflow_option() -> str | None:
    """The ``--mlflow URI`` sink option."""
    return typer.Option(None, "--mlflow", metavar="URI", help=MLFLOW_HELP)


def show_warnings_as_lines() -> None:
    """Print Python warnings as one ``warning: ...`` line on stderr (no file and line number)."""

    def show(message: Warning | str, category: type[Warning], *args: object, **kw: object) -> None:
        err_console.print(f"warning: {message}", markup=False, highlight=False)

    warnings.showwarning = show  # type: ignore[assignment]
    from decent.engine import DivergenceWarning

    # the commands print a diverged run's message themselves: once is enough
    warnings.filterwarnings("ignore", category=DivergenceWarning)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block: runs are marked interrupted, not left running."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail(message: str, code: int = USER_ERROR) -> typer.Exit:
    """Print ``message`` to stderr and return the exit to raise."""
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn user mistakes (bad configs, unknown studies, missing extras) into exit code 2."""
    from decent.config import ConfigError
    from decent.results import MissingDependencyError, ResultsError
    from decent.results._errors import os_error_text
    from decent.run import SweepFailedError

    try:
        yield
    except ConfigError as err:
        raise fail(str(err)) from None
    except SweepFailedError as err:  # a run failed: not the user's input, exit 1
        raise fail(f"error: {err}", code=1) from None
    except (ResultsError, MissingDependencyError) as err:
        raise fail(f"error: {err}") from None
    except ValueError as err:  # ReportError, TopologyError, ...: messages name the fix
        raise fail(f"error: {err}") from None
    except BrokenPipeError:  # the reader went away (| head): the command group ends quietly
        raise
    except MemoryError as err:
        raise fail(f"error: out of memory ({err}); use fewer nodes or a smaller task") from None
    except OSError as err:  # a path that cannot be written or read: name it and the reason
        raise fail(f"error: {os_error_text(err)}") from None


@contextlib.contextmanager
def interrupted_as(message: str) -> Iterator[None]:
    """Ctrl-C inside the block ends the command with ``message`` on stderr and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        raise fail(message, INTERRUPTED) from None


def resume_hint(out: Path) -> str:
    """The line that ends an interrupted sweep or study."""
    where = shown(str(out))
    return f"interrupted: finished runs are kept in {where}; rerun the same command to resume"


@contextlib.contextmanager
def study_run(out: Path) -> Iterator[None]:
    """A study command's runs: user errors and failed runs as one line (:func:`user_errors`),
    and Ctrl-C or SIGTERM as one line and exit 130, the runs marked interrupted."""
    with interrupted_as(resume_hint(out)), user_errors(), sigterm_as_interrupt():
        yield


def study_spec(
    cls: type[S], config: Path | None, workers: int | None, default: Callable[[], S] | None = None
) -> S:
    """A study spec: CONFIG read into ``cls`` (:func:`decent.studies._kit.load_spec`), else
    ``default()`` (or ``cls()``), ``workers`` set if given.

    Raises:
        typer.Exit: code 2 after one line per problem for a CONFIG file with an unknown field
            or a value out of range, or one line for a CONFIG path that is missing, a folder
            or unreadable.
    """
    from decent.studies import _kit as kit

    with user_errors():
        spec = kit.load_spec(cls, config) if config is not None else (default or cls)()
    return spec if workers is None else spec.replace(workers=workers)


def summary_table(title: str, final: dict[str, float]) -> Table:
    """A two-column table of final metrics, headline metrics first."""
    table = Table(title=escape(shown(title)))  # user text: "[diverged]" is not rich markup
    table.add_column("metric")
    table.add_column("final value", justify="right")
    first = ("eval/subopt@mean", "eval/loss@mean", "eval/test_accuracy@mean", "consensus/dist2")
    keys = [k for k in first if k in final] + sorted(k for k in final if k not in first)
    for key in keys:
        value = final[key]
        text = (
            f"{value:.4e}"
            if isinstance(value, float)
            and math.isfinite(value)
            and (abs(value) < 1e-2 or abs(value) >= 1e5)
            else f"{value:.6g}"
        )
        table.add_row(shown(key), text)
    return table
