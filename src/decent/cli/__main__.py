"""``python -m decent.cli``: the same as the ``decent`` command."""

from decent.cli import app

app(prog_name="decent")
