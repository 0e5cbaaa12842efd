"""`decent launch --nproc N script.py` and torchrun both start a user's own script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decent.cli import app

pytestmark = pytest.mark.dist

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "ddp_quickstart.py"


def _run(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize(
    "launcher",
    [
        ["-m", "decent.cli", "launch", "--nproc", "3"],
        ["-m", "torch.distributed.run", "--nproc_per_node", "3"],
    ],
    ids=["decent-launch", "torchrun"],
)
def test_a_script_runs_on_every_rank(launcher):
    out = _run([*launcher, str(SCRIPT)])
    for rank in range(3):
        assert f"rank {rank}: " in out
    assert "'topology': 'ring(3)'" in out and "'world_size': 3" in out


def test_decent_launch_names_a_missing_script(tmp_path):
    # refused before any process starts: the CLI in this process shows all it prints
    res = CliRunner().invoke(app, ["launch", "--nproc", "2", str(tmp_path / "no.py")])
    assert res.exit_code != 0
    assert "not found; pass the path of a .py file" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.output


# The DDP examples (ddp_mnist1d.py, ddp_charlm.py) under torchrun: tests/test_doc_blocks.py
# runs the README's commands for each of their algorithms on 3 ranks for 3 steps and checks
# each result line (world size, steps, a test metric, charlm's loss near log(128)).


def test_decent_launch_passes_the_arguments_after_the_double_dash(tmp_path):
    script = tmp_path / "echo.py"
    script.write_text(
        "import json, os, sys\nprint(json.dumps([os.environ['RANK'], sys.argv[1:]]))\n"
    )
    out = _run(["-m", "decent.cli", "launch", "--nproc", "2", str(script), "--", "--lr", "0.1"])
    seen = sorted(json.loads(line) for line in out.splitlines() if line.startswith("["))
    assert seen == [["0", ["--lr", "0.1"]], ["1", ["--lr", "0.1"]]]


def test_a_config_takes_no_script_arguments():
    from decent.run.distributed.launch import LaunchError, launch

    with pytest.raises(LaunchError, match=r"only a \.py script takes arguments"):
        launch(2, ROOT / "configs" / "dsgd.toml", script_args=["--lr", "0.1"])
