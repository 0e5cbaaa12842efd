"""Helpers for driving the ``decent`` CLI in-process and as a real subprocess."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from decent.cli import app


@pytest.fixture
def cli():
    """Invoke ``decent ARGS...`` in-process; returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


SMALL = """
rounds = {rounds}
eval_every = {eval_every}
per_node_eval = false

[topology]
kind = "ring"
num_nodes = 6

[algorithm]
kind = "dsgd"
lr = 0.05

[task]
kind = "least_squares"
dim = 3
"""


@pytest.fixture
def small_config(tmp_path):
    """Write a small config (optionally with extra TOML) and return its path."""

    def make(name: str = "small", extra: str = "", rounds: int = 20, eval_every: int = 5):
        path = tmp_path / f"{name}.toml"
        path.write_text(SMALL.format(rounds=rounds, eval_every=eval_every) + extra)
        return path

    return make
