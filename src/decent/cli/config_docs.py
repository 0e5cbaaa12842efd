"""``decent config-docs``: regenerate docs/config.md from the pydantic models."""

from __future__ import annotations

from pathlib import Path

import typer

from decent.cli._common import console, fail, user_errors

CONFIG_DOCS_HELP = """Write the config reference generated from the pydantic models.

\b
Examples:
  decent config-docs                     # rewrite docs/config.md
  decent config-docs --check             # exit 1 if docs/config.md is out of date (CI)
"""


def config_docs(
    dest: Path = typer.Option(Path("docs/config.md"), "--dest", help="Output file."),
    check: bool = typer.Option(False, "--check", help="Only check that DEST is up to date."),
) -> None:
    from decent.config import reference_markdown

    text = reference_markdown()
    if check:
        with user_errors():  # a --dest name too long for the file system: one line
            current = dest.read_text(encoding="utf-8") if dest.is_file() else ""
        if current != text:
            raise fail(f"{dest} is out of date; run `decent config-docs`", code=1)
        console.print(f"{dest} is up to date")
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    console.print(f"wrote {dest}")


def register(app: typer.Typer) -> None:
    """Add ``decent config-docs`` to ``app``."""
    app.command("config-docs", help=CONFIG_DOCS_HELP)(config_docs)
