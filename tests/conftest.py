"""Shared fixtures and helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from decent._threads import affinity_cores
from decent.cli import app

# The DDP drop-in's tests (tests/parallel) spawn gloo ranks with the project's harness
# (tests/run/distributed) and their own cases module; both directories go on sys.path once.
for _dir in ("run/distributed", "parallel"):
    _path = str(Path(__file__).resolve().parent / _dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)

torch.set_default_dtype(torch.float64)
# Keep the suite predictable on 2 cores; spawned dist tests set their own. Under xdist the
# workers share the cores (as decent._threads shares them among a sweep's workers): two
# workers of two threads each on 2 cores spin at every OpenMP barrier while the other
# worker holds the core, which made torch-heavy fixtures 3x slower.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, affinity_cores() // _workers)))

# CI runs the same hypothesis examples every time (reproducible verdicts); local runs keep
# exploring new ones. Any failure hypothesis finds is pinned as an explicit regression test.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hyp_settings.load_profile("ci")


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


@pytest.fixture
def spawn():
    """``subprocess.Popen`` that kills what it started when the test ends, pass or fail.

    Tests that hold a run mid-flight (decent.run.faults) would otherwise leave the held
    processes behind when an assertion fails before the release.
    """
    import signal
    import subprocess

    import psutil

    started: list[tuple[subprocess.Popen, bool]] = []

    def popen(*args, **kwargs) -> subprocess.Popen:
        # a shell without job control starts background jobs with SIGINT ignored, and an
        # ignored signal survives exec: the child would never see the Ctrl-C a test sends
        kwargs.setdefault("preexec_fn", lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        proc = subprocess.Popen(*args, **kwargs)
        started.append((proc, bool(kwargs.get("start_new_session"))))
        return proc

    yield popen
    for proc, own_group in started:
        if own_group:  # reaches workers orphaned by a killed parent, too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for p in family:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        try:
            proc.communicate(timeout=30)
        except (subprocess.TimeoutExpired, ValueError):
            pass
